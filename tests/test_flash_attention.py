"""The tiled PyTorch FlashAttention and the chunked memory-efficient attention: many tiles (small
blocks, lengths not multiples of them), the log-sum-exp, gradcheck of the custom backward, no
O(Tq * Tk) tensor saved for backward, the modules, and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import t5edu
from t5edu.attention import scaled_dot_product_attention
from t5edu.flash_attention import flash_attention
from t5edu.memory_efficient import memory_efficient_attention
from t5edu.multi_head_attention import MultiHeadAttention

ATOL = 1e-5


def make(b, h, tq, tk, d, bias_shape=None, masked=False, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=dtype) for t in (tq, tk, tk))
    bias = None if bias_shape is None else torch.randn(*bias_shape, generator=g, dtype=dtype)
    am = None
    if masked:
        am = torch.ones(b, tk, dtype=torch.bool)
        am[0] = False  # fully masked rows
        am[-1, : tk // 3] = False  # left padding on the last sequence
    return q, k, v, bias, am


def out_and_grads(fn, q, k, v, bias, am, causal, **kw):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    b = None if bias is None else bias.clone().requires_grad_()
    out = fn(*leaves, bias=b, attention_mask=am, causal=causal, **kw)
    w = torch.sin(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
    (out * w).sum().backward()
    return [out] + [t.grad for t in leaves] + ([] if b is None else [b.grad])


def check(fn, case, causal, **kw):
    want = out_and_grads(scaled_dot_product_attention, *case, causal)
    got = out_and_grads(fn, *case, causal, **kw)
    for name, g, w in zip(["out", "dq", "dk", "dv", "dbias"], got, want, strict=False):
        assert not torch.isnan(g).any(), name
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


BIASES = [None, "full", "batch", "head", "3d", "2d", "query_only"]


def bias_shape(kind, b, h, tq, tk):
    return {
        None: None,
        "full": (b, h, tq, tk),
        "batch": (1, h, tq, tk),
        "head": (b, 1, tq, tk),
        "3d": (h, tq, tk),
        "2d": (tq, tk),
        "query_only": (1, h, tq, 1),
    }[kind]


@pytest.mark.parametrize("fn,blocks", [
    (flash_attention, dict(block_q=4, block_k=5)),
    (flash_attention, dict(block_q=16, block_k=3)),
    (memory_efficient_attention, dict(query_chunk_size=4, key_chunk_size=5)),
], ids=["flash-4x5", "flash-16x3", "memeff-4x5"])  # fmt: skip
@pytest.mark.parametrize("kind", BIASES)
@pytest.mark.parametrize("tq,tk,causal", [(13, 21, True), (21, 13, True), (17, 17, False)])
def test_many_tiles_equal_naive(fn, blocks, kind, tq, tk, causal):
    b, h = 2, 3
    case = make(b, h, tq, tk, 16, bias_shape(kind, b, h, tq, tk), masked=True)
    check(fn, case, causal, **blocks)


@pytest.mark.parametrize("d", [16, 32, 64, 128])
@pytest.mark.parametrize("fn", [flash_attention, memory_efficient_attention])
def test_head_dims(fn, d):
    kw = dict(block_q=8, block_k=8) if fn is flash_attention else dict(key_chunk_size=8)
    check(fn, make(1, 2, 19, 23, d, (1, 2, 19, 23), masked=False), True, **kw)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    tq=st.integers(1, 30),
    tk=st.integers(1, 30),
    d=st.sampled_from([16, 32]),
    kind=st.sampled_from(BIASES),
    masked=st.booleans(),
    causal=st.booleans(),
    block_q=st.integers(1, 12),
    block_k=st.integers(1, 12),
)
def test_hypothesis_flash_tiles(b, h, tq, tk, d, kind, masked, causal, block_q, block_k):
    case = make(b, h, tq, tk, d, bias_shape(kind, b, h, tq, tk), masked=masked)
    check(flash_attention, case, causal, block_q=block_q, block_k=block_k)
    check(memory_efficient_attention, case, causal, query_chunk_size=block_q,
          key_chunk_size=block_k)  # fmt: skip


def test_lse_is_the_log_sum_exp_and_inf_for_empty_rows():
    q, k, v, bias, am = make(2, 2, 6, 9, 16, (1, 2, 6, 9), masked=True)
    out, lse = flash_attention(q, k, v, bias=bias, attention_mask=am, block_q=4, block_k=4,
                               return_lse=True)  # fmt: skip
    s = q @ k.transpose(-1, -2) / math.sqrt(16) + bias
    s = s.masked_fill(~am[:, None, None, :], float("-inf"))
    want = torch.logsumexp(s, dim=-1)
    torch.testing.assert_close(lse[1], want[1], atol=ATOL, rtol=0)
    assert torch.isinf(lse[0]).all() and (lse[0] > 0).all()  # batch 0 sees no key
    assert (out[0] == 0).all()


def test_gradcheck_of_the_custom_backward():
    """torch.autograd.gradcheck in float64 (the tiles then run in float64)."""
    q, k, v, bias, am = make(2, 2, 5, 7, 4, (1, 2, 5, 7), masked=True, dtype=torch.float64)
    ins = [t.requires_grad_() for t in (q, k, v, bias)]

    def f(q, k, v, bias):
        return flash_attention(q, k, v, bias=bias, attention_mask=am, causal=True, block_q=2,
                               block_k=3)  # fmt: skip

    assert torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-7)


def test_fully_masked_rows_give_zero_output_and_zero_grads():
    q, k, v, bias, am = make(2, 2, 5, 6, 16, (2, 2, 5, 6), masked=True)
    out, dq, dk, dv, dbias = out_and_grads(flash_attention, q, k, v, bias, am, False, block_q=2,
                                           block_k=4)  # fmt: skip
    assert (out[0] == 0).all() and (dq[0] == 0).all() and (dbias[0] == 0).all()
    assert (dk[0] == 0).all() and (dv[0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_fp32(dtype):
    q, k, v, bias, am = make(1, 2, 10, 12, 16, (1, 2, 10, 12), masked=False)
    want = scaled_dot_product_attention(q, k, v, bias=bias, causal=True)
    got = flash_attention(q.to(dtype), k.to(dtype), v.to(dtype), bias=bias, causal=True,
                          block_q=4, block_k=4)  # fmt: skip
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=0)


def saved_numels(fn):
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


@pytest.mark.parametrize("backend", ["flash", "memory_efficient"])
def test_no_quadratic_tensor_is_saved_for_backward(backend):
    """With N = 256 queries and keys, every saved tensor is far below one (N, N) score matrix;
    the naive reference saves several (a check that can fail)."""
    b, h, n, d = 1, 2, 256, 16
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    am = torch.ones(b, n, dtype=torch.bool)
    kw = dict(attention_mask=am, causal=True)
    quadratic = b * h * n * n
    naive = saved_numels(lambda: t5edu.attention(q, k, v, **kw, backend="naive"))
    assert max(naive) >= quadratic
    tiled = saved_numels(lambda: t5edu.attention(q, k, v, **kw, backend=backend))
    assert max(tiled) <= b * h * n * d  # O(N * Dh): q, k, v, out, chunk summaries


# --- modules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [t5edu.FlashAttention(block_q=3, block_k=4), t5edu.MemoryEfficientAttention(3, 4)],
    ids=["FlashAttention", "MemoryEfficientAttention"],
)
def test_core_modules_equal_naive(module):
    case = make(2, 2, 7, 9, 16, (1, 2, 7, 9), masked=True)
    check(module, case, True)
    assert "block" in repr(module) or "chunk" in repr(module)


def test_flash_mha_equals_multi_head_attention_with_the_same_weights():
    torch.manual_seed(0)
    ref = MultiHeadAttention(32, 4, bias=False)
    mha = t5edu.FlashMHA(32, 4, bias=False, block_q=3, block_k=5)
    mha.load_state_dict(ref.state_dict())  # same parameter names and shapes
    x, ctx = torch.randn(2, 7, 32), torch.randn(2, 9, 32)
    am = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    bias = torch.randn(1, 4, 7, 9)
    want = ref(x, ctx, attention_mask=am, bias=bias, causal=True)
    got = mha(x, ctx, attention_mask=am, bias=bias, causal=True)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    got.sum().backward()
    want.sum().backward()
    for (name, p), p_ref in zip(mha.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=ATOL, rtol=0, msg=name)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("name,value", [("block_q", 0), ("block_k", -2), ("block_q", 2.5)])
def test_block_sizes_must_be_positive_ints(name, value):
    q, k, v, *_ = make(1, 1, 4, 4, 16)
    with pytest.raises(ValueError, match=name):
        flash_attention(q, k, v, **{name: value})


@pytest.mark.parametrize("name", ["query_chunk_size", "key_chunk_size"])
def test_chunk_sizes_must_be_positive(name):
    q, k, v, *_ = make(1, 1, 4, 4, 16)
    with pytest.raises(ValueError, match=name):
        memory_efficient_attention(q, k, v, **{name: 0})


def test_unknown_kernel_name():
    with pytest.raises(ValueError, match="kernel must be one of"):
        t5edu.FlashAttention(kernel="cuda")


@pytest.mark.parametrize("fn", [flash_attention, memory_efficient_attention])
def test_bad_inputs_raise_value_error_naming_the_argument(fn):
    q, k, v, *_ = make(2, 2, 4, 5, 16)
    with pytest.raises(ValueError, match="k must be"):
        fn(q, k[..., :8], v)
    with pytest.raises(ValueError, match="bias must broadcast"):
        fn(q, k, v, bias=torch.zeros(2, 2, 5, 4))
    with pytest.raises(ValueError, match="attention_mask must be"):
        fn(q, k, v, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask must hold only 0/1"):
        fn(q, k, v, attention_mask=torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="dropout_p must be 0.0"):
        fn(q, k, v, dropout_p=0.1)
