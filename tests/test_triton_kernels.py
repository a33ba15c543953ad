"""The Triton FlashAttention kernels (forward, dK/dV and dQ/dBias passes) against the naive
reference: outputs and gradients of q, k, v and the bias (fp32, atol 1e-5).

Without CUDA the kernels run on the CPU under Triton's interpreter. Triton decides interpreted
vs compiled when a function is decorated with `@triton.jit`: our kernels when their module is
imported, Triton's own jit'd helpers (`tl.max`, `tl.sum`, `tl.zeros`) when `triton` is first
imported, which may already have happened in this pytest process. So the `kernels` fixture, with
a MonkeyPatch undone at teardown, sets TRITON_INTERPRET=1, swaps interpreted twins in for those
helpers when needed, and imports the kernel modules fresh; at teardown it drops the modules from
sys.modules again. No other test file inherits the variable, the swapped helpers or interpreted
kernels. The interpreter is slow: tiny shapes, few cases.
"""

import importlib
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from t5edu.attention import scaled_dot_product_attention
from t5edu.backends import attention
from t5edu.relative_position import RelativePositionBias

pytest.importorskip("triton", reason="the Triton kernels need the triton package")

ATOL = 1e-5
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
KERNEL_MODULES = [
    "t5edu.kernels.triton_attention",
    "t5edu.kernels.flash_bwd",
    "t5edu.kernels.flash_fwd",
]
BF16_INTERPRETER = (
    "Triton's interpreter multiplies bfloat16 bit patterns in tl.dot (triton-lang/triton#11584, "
    "not supported upstream); bf16 kernels are checked on CUDA only"
)


def _drop_kernel_modules():
    for name in KERNEL_MODULES:
        sys.modules.pop(name, None)


def _interpret_triton_helpers(mp):
    """Interpreted twins of the Triton library helpers the kernels call, if `triton` was imported
    (and they were compiled-mode JITFunctions) before TRITON_INTERPRET was set."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for name in ("max", "sum", "zeros"):
        fn = getattr(tl, name)
        if isinstance(fn, JITFunction):
            mp.setattr(tl, name, InterpretedFunction(fn.fn))


@pytest.fixture(scope="module")
def kernels():
    """The `t5edu.kernels.triton_attention` module, interpreted on the CPU, compiled on CUDA."""
    mp = pytest.MonkeyPatch()
    if not CUDA:
        mp.setenv("TRITON_INTERPRET", "1")
        _interpret_triton_helpers(mp)
    _drop_kernel_modules()
    module = importlib.import_module("t5edu.kernels.triton_attention")
    assert module.INTERPRETED == (not CUDA)
    yield module
    mp.undo()
    _drop_kernel_modules()


def make(b, h, tq, tk, d, bias_shape=None, masked=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for t in (tq, tk, tk))
    bias = None if bias_shape is None else torch.randn(*bias_shape, generator=g)
    am = None
    if masked:
        am = torch.ones(b, tk, dtype=torch.long)
        am[0] = 0  # a sequence with no visible key: zeros and zero gradients
        am[-1, tk // 2 :] = 0
    to = (lambda t: None if t is None else t.to(DEVICE)) if CUDA else (lambda t: t)
    return to(q), to(k), to(v), to(bias), to(am)


def out_and_grads(fn, q, k, v, bias, am, causal, dtype=None, **kw):
    cast = (lambda t: t.to(dtype)) if dtype else (lambda t: t)
    leaves = [cast(t).clone().requires_grad_() for t in (q, k, v)]
    b = None if bias is None else bias.clone().requires_grad_()
    out = fn(*leaves, bias=b, attention_mask=am, causal=causal, **kw)
    w = torch.cos(torch.arange(out.numel(), device=out.device)).reshape(out.shape)
    (out.float() * w).sum().backward()
    return [out] + [t.grad for t in leaves] + ([] if b is None else [b.grad])


def check(fn, case, causal, atol=ATOL, dtype=None, **kw):
    want = out_and_grads(scaled_dot_product_attention, *case, causal)
    got = out_and_grads(fn, *case, causal, dtype=dtype, **kw)
    for name, g, w in zip(["out", "dq", "dk", "dv", "dbias"], got, want, strict=False):
        assert not torch.isnan(g).any(), f"{name} has NaN"
        torch.testing.assert_close(
            g.float(), w, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}"
        )


CASES = [
    # (b, h, tq, tk, d, bias shape, masked, causal): lengths not multiples of the 16-wide tiles
    (2, 2, 13, 21, 16, (1, 2, 13, 21), True, True),  # batch-broadcast bias: summed dBias
    (2, 2, 21, 13, 16, (2, 2, 21, 13), False, True),  # q_len > k_len: first rows see nothing
    (2, 3, 17, 17, 32, (3, 17, 17), True, False),  # per-head bias (ALiBi-like), 3-D
    (2, 2, 9, 19, 16, (2, 1, 1, 19), True, True),  # broadcast over heads and queries
    (1, 1, 5, 7, 16, None, True, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_forward_and_backward_equal_naive(kernels, case):
    b, h, tq, tk, d, shape, masked, causal = case
    check(kernels.triton_flash_attention, make(b, h, tq, tk, d, shape, masked), causal,
          block_m=16, block_n=16)  # fmt: skip


def test_default_tiles_through_the_backend_dispatcher(kernels):
    check(attention, make(2, 2, 40, 70, 16, (1, 2, 40, 70), masked=True), True, backend="triton")


def test_t5_relative_bias_gradient_reaches_the_table(kernels):
    q, k, v, _, am = make(2, 4, 12, 12, 16, masked=True)
    grads = []
    for fn in (scaled_dot_product_attention, kernels.triton_flash_attention):
        rpb = RelativePositionBias(num_buckets=8, max_distance=16, num_heads=4, bidirectional=True)
        torch.nn.init.normal_(rpb.weight, generator=torch.Generator().manual_seed(1))
        rpb.to(DEVICE)
        out = fn(q, k, v, bias=rpb(12, 12), attention_mask=am, scale=1.0)
        w = torch.cos(torch.arange(out.numel(), device=out.device)).reshape(out.shape)
        (out * w).sum().backward()
        grads.append((out, rpb.weight.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=ATOL, rtol=0)


def test_frozen_bias_and_lse(kernels):
    q, k, v, bias, am = make(2, 2, 10, 12, 16, (1, 2, 10, 12), masked=True)
    out, lse = kernels.triton_flash_attention(q, k, v, bias=bias, attention_mask=am,
                                              return_lse=True)  # fmt: skip
    s = q @ k.transpose(-1, -2) / 4.0 + bias
    want = torch.logsumexp(s.masked_fill(~am.bool()[:, None, None, :], float("-inf")), dim=-1)
    torch.testing.assert_close(lse[1], want[1], atol=ATOL, rtol=0)
    assert torch.isinf(lse[0]).all() and (out[0] == 0).all()


def test_float16(kernels):
    case = make(2, 2, 13, 21, 16, (1, 2, 13, 21), masked=True)
    check(kernels.triton_flash_attention, case, True, atol=1e-2, dtype=torch.float16,
          block_m=16, block_n=16)  # fmt: skip


def test_bfloat16_bias_with_float32_inputs(kernels):
    """A bf16 bias is loaded and widened to fp32 in the kernel (no bf16 tl.dot involved)."""
    q, k, v, bias, am = make(1, 2, 11, 14, 16, (1, 2, 11, 14), masked=False)
    bias = bias.bfloat16()
    want = scaled_dot_product_attention(q, k, v, bias=bias, causal=True)
    got = kernels.triton_flash_attention(q, k, v, bias=bias, causal=True, block_m=16, block_n=16)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.skipif(not CUDA, reason=BF16_INTERPRETER)
def test_bfloat16(kernels):
    case = make(2, 2, 13, 21, 16, (1, 2, 13, 21), masked=True)
    check(kernels.triton_flash_attention, case, True, atol=3e-2, dtype=torch.bfloat16)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    tq=st.integers(1, 24),
    tk=st.integers(1, 24),
    d=st.sampled_from([16, 32, 64, 128]),
    bias=st.sampled_from(["none", "batch", "full"]),
    masked=st.booleans(),
    causal=st.booleans(),
)
def test_hypothesis_shapes(kernels, tq, tk, d, bias, masked, causal):
    shape = {"none": None, "batch": (1, 2, tq, tk), "full": (2, 2, tq, tk)}[bias]
    check(kernels.triton_flash_attention, make(2, 2, tq, tk, d, shape, masked), causal,
          block_m=16, block_n=16)  # fmt: skip


def test_rows_with_a_minus_inf_bias_at_every_key_give_zeros_and_zero_grads(kernels):
    """The rule of every backend (tests/test_backends.py): a row with no finite score, from a
    -inf bias alone or with the padding mask, gets output 0 and zero gradients, not NaN."""
    q, k, v, bias, am = make(2, 2, 13, 21, 16, (1, 2, 13, 21), masked=False)
    am = torch.ones(2, 21, dtype=torch.long, device=DEVICE)
    am[1, 10:] = 0
    bias[..., 1, :] = float("-inf")  # sees no key
    bias[..., 2, :10] = float("-inf")  # batch 1 sees no key (its other keys are padding)
    bias[:, 0, 5, :16] = float("-inf")  # a whole 16-wide key block of -inf, then finite keys
    case = (q, k, v, bias, am)
    check(kernels.triton_flash_attention, case, True, block_m=16, block_n=16)
    out = kernels.triton_flash_attention(q, k, v, bias=bias, attention_mask=am, causal=True,
                                         block_m=16, block_n=16)  # fmt: skip
    assert (out[:, :, 1] == 0).all() and (out[1, :, 2] == 0).all()


# --- bad input --------------------------------------------------------------------------------


def test_bad_inputs(kernels):
    f = kernels.triton_flash_attention
    q, k, v, *_ = make(1, 2, 4, 5, 16)
    with pytest.raises(ValueError, match="dropout_p must be 0.0 for the 'triton' backend"):
        f(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="head_dim must be <= 128"):
        f(*(torch.zeros(1, 1, 4, 256, device=DEVICE) for _ in range(3)))
    with pytest.raises(ValueError, match="q must be float16, bfloat16 or float32"):
        f(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        f(q, k, v, block_m=24)
    with pytest.raises(ValueError, match="attention_mask must hold only 0/1"):
        f(q, k, v, attention_mask=torch.full((1, 5), 3, device=DEVICE))
    with pytest.raises(ValueError, match="bias must broadcast"):
        f(q, k, v, bias=torch.zeros(2, 2, 4, 5, device=DEVICE))


def test_cpu_tensors_without_the_interpreter_raise(kernels, monkeypatch):
    monkeypatch.setattr(kernels, "INTERPRETED", False)
    q, k, v, *_ = make(1, 1, 4, 4, 16)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.triton_flash_attention(q.cpu(), k.cpu(), v.cpu())
