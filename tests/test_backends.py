"""Every attention backend equals the naive reference (fp32, atol 1e-5) on outputs and on the
gradients of q, k, v and the bias, with the reference's arguments only.

The Triton backend runs the same cases in tests/test_triton_kernels.py (under TRITON_INTERPRET=1
on the CPU); on a CUDA machine it is also part of the sweep here.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import t5edu
from t5edu.alibi import ALiBi
from t5edu.backends import BACKENDS, attention, resolve_backend
from t5edu.relative_position import RelativePositionBias

ATOL = 1e-5
CUDA = torch.cuda.is_available()
# Backends with a backward on this machine; flex has none on the CPU (tested forward-only).
GRAD_BACKENDS = ["naive", "sdpa", "flash", "memory_efficient", "auto"] + (
    ["triton", "flex"] if CUDA else []
)
FLEX_NO_CPU_GRAD = "FlexAttention has no backward on the CPU in this torch (NotImplementedError)"


def make_case(b, h, tq, tk, d, *, bias="none", mask="none", seed=0, device="cpu"):
    """q, k, v, a bias of the named kind and a padding mask of the named kind."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, tq, d, generator=g) * d**-0.25
    k = torch.randn(b, h, tk, d, generator=g) * d**-0.25
    v = torch.randn(b, h, tk, d, generator=g)
    shapes = {
        "none": None,
        "full": (b, h, tq, tk),
        "batch_broadcast": (1, h, tq, tk),
        "head_broadcast": (b, 1, tq, tk),
        "per_head_3d": (h, tq, tk),
        "shared_2d": (tq, tk),
        "key_only": (1, h, 1, tk),
    }
    bias_t = None if shapes[bias] is None else torch.randn(*shapes[bias], generator=g)
    am = None
    if mask != "none":
        am = torch.ones(b, tk, dtype=torch.long)
        am[-1, tk // 2 :] = 0  # right padding
        if mask == "fully_masked" and b > 1:
            am[0] = 0  # a sequence with no key at all: its rows must be zeros, not NaN
    move = (lambda t: None if t is None else t.to(device)) if device != "cpu" else (lambda t: t)
    return move(q), move(k), move(v), move(bias_t), move(am)


def run(backend, q, k, v, bias=None, am=None, causal=False, scale=None, grad=True):
    """Output and gradients (q, k, v, bias) of a weighted sum of the output."""
    leaves = [t.detach().clone().requires_grad_(grad) for t in (q, k, v)]
    b = None if bias is None else bias.detach().clone().requires_grad_(grad)
    out = attention(*leaves, bias=b, attention_mask=am, causal=causal, scale=scale, backend=backend)
    if not grad:
        return [out]
    w = torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)
    (out * w).sum().backward()
    grads = [t.grad for t in leaves] + ([] if b is None else [b.grad])
    return [out] + grads


def assert_all_close(got, want, atol=ATOL):
    names = ["out", "dq", "dk", "dv", "dbias"]
    for name, g, w in zip(names, got, want, strict=False):
        assert not torch.isnan(g).any(), f"{name} has NaN"
        torch.testing.assert_close(g, w, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


SWEEP = [
    # (b, h, tq, tk, d, bias, mask, causal)
    (2, 3, 7, 11, 16, "batch_broadcast", "none", True),  # q_len < k_len, causal bottom-right
    (2, 3, 11, 7, 16, "full", "none", True),  # q_len > k_len: the first rows see nothing
    (2, 2, 9, 9, 32, "per_head_3d", "fully_masked", False),
    (3, 2, 5, 13, 64, "head_broadcast", "fully_masked", True),
    (2, 2, 6, 10, 128, "shared_2d", "padding", False),
    (2, 2, 8, 12, 16, "key_only", "padding", True),
    (1, 2, 130, 200, 16, "batch_broadcast", "padding", True),  # crosses the 128-wide tiles
    (2, 1, 3, 5, 16, "none", "none", False),
]


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: "-".join(map(str, c)))
def test_backend_equals_naive_with_grads(backend, case):
    b, h, tq, tk, d, bias, mask, causal = case
    q, k, v, bias_t, am = make_case(b, h, tq, tk, d, bias=bias, mask=mask)
    want = run("naive", q, k, v, bias_t, am, causal)
    assert_all_close(run(backend, q, k, v, bias_t, am, causal), want)


# FlexAttention's eager CPU path is slow (seconds per call): a subset of the sweep.
@pytest.mark.parametrize("case", SWEEP[1:4] + SWEEP[5:6], ids=lambda c: "-".join(map(str, c)))
def test_flex_forward_equals_naive(case):
    b, h, tq, tk, d, bias, mask, causal = case
    q, k, v, bias_t, am = make_case(b, h, tq, tk, d, bias=bias, mask=mask)
    with torch.no_grad():
        want = run("naive", q, k, v, bias_t, am, causal, grad=False)
        assert_all_close(run("flex", q, k, v, bias_t, am, causal, grad=False), want)


@pytest.mark.skipif(not CUDA, reason=FLEX_NO_CPU_GRAD)
def test_flex_backward_runs_on_cuda():
    q, k, v, bias_t, am = make_case(2, 2, 32, 32, 16, bias="batch_broadcast", device="cuda")
    assert_all_close(run("flex", q, k, v, bias_t, am), run("naive", q, k, v, bias_t, am))


@pytest.mark.skipif(CUDA, reason="checks the CPU's missing FlexAttention backward")
def test_flex_backward_on_cpu_raises_clearly():
    q, k, v, bias_t, am = make_case(1, 1, 4, 4, 16, bias="full")
    with pytest.raises(NotImplementedError, match="no backward on the CPU"):
        run("flex", q, k, v, bias_t, am)


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("tq,tk,causal", [(9, 14, False), (14, 9, True)])
def test_t5_bucketed_bias_gradient_reaches_the_table(backend, tq, tk, causal):
    """T5's bias: a learned (buckets, heads) table gathered into (1, H, Tq, Tk)."""
    torch.manual_seed(0)
    q, k, v, _, am = make_case(2, 4, tq, tk, 16, mask="fully_masked")
    grads = []
    for name in ("naive", backend):
        rpb = RelativePositionBias(num_buckets=8, max_distance=16, num_heads=4, bidirectional=True)
        torch.nn.init.normal_(rpb.weight, generator=torch.Generator().manual_seed(1))
        out = attention(q, k, v, bias=rpb(tq, tk), attention_mask=am, causal=causal, scale=1.0,
                        backend=name)  # fmt: skip
        (out * torch.cos(torch.arange(out.numel()).reshape(out.shape))).sum().backward()
        grads.append((out, rpb.weight.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=ATOL, rtol=0)
    assert grads[0][1].abs().sum() > 0  # the table does get a gradient


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_alibi_bias(backend, causal):
    q, k, v, _, am = make_case(2, 4, 10, 10, 32, mask="padding")
    alibi = ALiBi(4).bias(10, 10, causal=causal)  # (H, Tq, Tk)
    want = run("naive", q, k, v, alibi, am, causal)
    assert_all_close(run(backend, q, k, v, alibi, am, causal), want)


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int32])
def test_mask_dtypes_and_scale(backend, mask_dtype):
    q, k, v, bias_t, am = make_case(2, 2, 5, 6, 16, bias="full", mask="fully_masked")
    am = am.to(mask_dtype)
    want = run("naive", q, k, v, bias_t, am, scale=0.37)
    assert_all_close(run(backend, q, k, v, bias_t, am, scale=0.37), want)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    backend=st.sampled_from(GRAD_BACKENDS),
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    tq=st.integers(1, 24),
    tk=st.integers(1, 24),
    d=st.sampled_from([16, 32, 64, 128]),
    bias=st.sampled_from(["none", "full", "batch_broadcast", "per_head_3d", "key_only"]),
    mask=st.sampled_from(["none", "padding", "fully_masked"]),
    causal=st.booleans(),
)
def test_hypothesis_shapes(backend, b, h, tq, tk, d, bias, mask, causal):
    q, k, v, bias_t, am = make_case(b, h, tq, tk, d, bias=bias, mask=mask)
    want = run("naive", q, k, v, bias_t, am, causal)
    assert_all_close(run(backend, q, k, v, bias_t, am, causal), want)


# --- a row that sees no key: one rule for every backend ---------------------------------------
# A query row whose every key is hidden (mask, causal) or has a -inf bias gets output 0 and zero
# gradients, as torch's SDPA math kernel gives (its `_safe_softmax`). The reference here is that
# kernel itself, so the rule does not rest on t5edu's own naive code.

NEG_INF = float("-inf")


def torch_math_reference(q, k, v, bias, am, causal, scale=None):
    """Output and gradients from torch's SDPA math kernel, every hidden key at -inf in one mask."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tq, tk = q.shape[2], k.shape[2]
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    b = None if bias is None else bias.detach().clone().requires_grad_()
    mask = torch.zeros(q.shape[0], 1, tq, tk, device=q.device) if b is None else b
    hidden = torch.zeros(q.shape[0], 1, tq, tk, dtype=torch.bool, device=q.device)
    if am is not None:
        hidden |= ~am.bool()[:, None, None, :]
    if causal:
        hidden |= torch.ones(tq, tk, dtype=torch.bool, device=q.device).triu(tk - tq + 1)
    mask = mask.masked_fill(hidden, NEG_INF)
    with sdpa_kernel(SDPBackend.MATH):
        out = torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=mask, scale=scale)
    w = torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)
    (out * w).sum().backward()
    return [out] + [t.grad for t in leaves] + ([] if b is None else [b.grad])


def with_inf_rows(bias_t, tk):
    """The bias with -inf rows: row 1 at every key, row 2 at the first half of the keys, row 3 at
    the keys the padded sequence can see (so there it sees no key), and head 0 of row 4 at every
    key; a key-only bias `(1, H, 1, Tk)` gets head 0 at every key (all its rows see nothing)."""
    bias_t = bias_t.clone()
    if bias_t.shape[-2] == 1:
        bias_t[..., 0, :, :] = NEG_INF
        return bias_t
    bias_t[..., 1, :] = NEG_INF
    bias_t[..., 2, : tk // 2] = NEG_INF
    bias_t[..., 3, : tk // 2] = NEG_INF
    bias_t[..., 0, 4, :] = NEG_INF
    return bias_t


INF_CASES = [
    # (b, h, tq, tk, d, bias, mask, causal)
    (2, 3, 6, 9, 16, "batch_broadcast", "none", False),
    (2, 3, 6, 9, 16, "batch_broadcast", "padding", False),  # row 3 of batch 1: no finite key
    (2, 2, 7, 11, 16, "full", "fully_masked", True),
    (2, 2, 9, 6, 16, "full", "padding", True),  # q_len > k_len: first rows see nothing as well
    (2, 2, 5, 8, 32, "per_head_3d", "padding", False),
    (2, 3, 5, 8, 16, "key_only", "padding", True),  # head 0 of every row sees no key
    (1, 2, 130, 200, 16, "batch_broadcast", "padding", True),  # rows cross the 128-wide tiles
]


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("case", INF_CASES, ids=lambda c: "-".join(map(str, c)))
def test_rows_with_no_finite_score_give_zeros_and_zero_grads(backend, case):
    b, h, tq, tk, d, bias, mask, causal = case
    q, k, v, bias_t, am = make_case(b, h, tq, tk, d, bias=bias, mask=mask)
    bias_t = with_inf_rows(bias_t, tk)
    want = torch_math_reference(q, k, v, bias_t, am, causal)
    got = run(backend, q, k, v, bias_t, am, causal)
    for name, g in zip(["out", "dq", "dk", "dv", "dbias"], got, strict=True):
        assert torch.isfinite(g).all(), f"{backend}: {name} is not finite"
    assert_all_close(got, want)
    dead = ~torch.isfinite(bias_t).any(dim=-1)  # rows with a -inf bias at every key
    dead = dead.expand(got[0].shape[:-1])
    assert dead.any()
    assert (got[0][dead] == 0).all() and (got[1][dead] == 0).all()


@pytest.mark.parametrize("case", [INF_CASES[1], INF_CASES[3], INF_CASES[5]],
                         ids=lambda c: "-".join(map(str, c)))  # fmt: skip
def test_flex_rows_with_no_finite_score_give_zeros(case):
    b, h, tq, tk, d, bias, mask, causal = case
    q, k, v, bias_t, am = make_case(b, h, tq, tk, d, bias=bias, mask=mask)
    bias_t = with_inf_rows(bias_t, tk)
    want = torch_math_reference(q, k, v, bias_t, am, causal)[0]
    with torch.no_grad():
        got = attention(q, k, v, bias=bias_t, attention_mask=am, causal=causal, backend="flex")
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("block", [(4, 4), (3, 5)])
def test_tiled_backends_with_a_key_block_or_chunk_that_is_all_minus_inf(block):
    """Small tiles: some rows have one key block / chunk all -inf and another finite, the case
    where a NaN max from the dead chunk would poison the merge (memory_efficient did)."""
    from t5edu.flash_attention import flash_attention
    from t5edu.memory_efficient import memory_efficient_attention

    q, k, v, bias_t, am = make_case(2, 2, 9, 13, 16, bias="batch_broadcast", mask="padding")
    bias_t = with_inf_rows(bias_t, 13)
    want = torch_math_reference(q, k, v, bias_t, am, causal=True)
    bq, bk = block
    fns = {
        "flash": lambda *a, **kw: flash_attention(*a, block_q=bq, block_k=bk, **kw),
        "memory_efficient": lambda *a, **kw: memory_efficient_attention(
            *a, query_chunk_size=bq, key_chunk_size=bk, **kw
        ),
    }
    for name, fn in fns.items():
        leaves = [t.clone().requires_grad_() for t in (q, k, v, bias_t)]
        out = fn(*leaves[:3], bias=leaves[3], attention_mask=am, causal=True)
        w = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (out * w).sum().backward()
        got = [out] + [t.grad for t in leaves]
        assert all(torch.isfinite(g).all() for g in got), name
        assert_all_close(got, want)


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_the_no_key_rule_adds_no_graph_break_or_host_sync(backend):
    """The rule is tensor ops only (torch.where / masked_fill on the row max): dynamo traces
    the whole call as one graph (fullgraph=True raises on .item() or a data-dependent `if`)."""
    q, k, v, bias_t, am = make_case(2, 2, 5, 7, 16, bias="full", mask="padding")
    bias_t, am = with_inf_rows(bias_t, 7), am.bool()  # an integer mask's 0/1 check syncs

    def fn(q, k, v, bias_t, am):
        return attention(q, k, v, bias=bias_t, attention_mask=am, causal=True, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, bias_t, am), fn(q, k, v, bias_t, am))


# --- auto -------------------------------------------------------------------------------------


@pytest.mark.skipif(CUDA, reason="CPU choice")
@pytest.mark.parametrize("bias", ["none", "full"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
def test_auto_picks_sdpa_on_cpu(bias, dropout_p):
    q, k, v, bias_t, am = make_case(1, 2, 4, 4, 16, bias=bias)
    name = resolve_backend("auto", q, k, v, bias=bias_t, dropout_p=dropout_p)
    assert name == "sdpa"


@pytest.mark.skipif(not CUDA, reason="needs CUDA: on the CPU auto never picks triton")
def test_auto_picks_triton_for_bias_on_cuda():
    q, k, v, bias_t, _ = make_case(1, 2, 64, 64, 64, bias="batch_broadcast", device="cuda")
    assert resolve_backend("auto", q, k, v, bias=bias_t) == "triton"
    assert resolve_backend("auto", q, k, v, bias=bias_t, dropout_p=0.1) == "sdpa"
    assert resolve_backend("auto", q, k, v) == "sdpa"


def test_resolve_backend_passes_names_through_and_rejects_unknown():
    q, k, v, *_ = make_case(1, 1, 2, 2, 16)
    for name in BACKENDS:
        if name != "auto":
            assert resolve_backend(name, q, k, v) == name
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("fast", q, k, v)
    assert t5edu.resolve_backend is resolve_backend


def test_auto_with_dropout_runs_sdpa():
    q, k, v, *_ = make_case(1, 2, 6, 6, 16)
    torch.manual_seed(3)
    got = attention(q, k, v, dropout_p=0.5, backend="auto")
    torch.manual_seed(3)
    want = attention(q, k, v, dropout_p=0.5, backend="sdpa")
    torch.testing.assert_close(got, want, atol=0, rtol=0)


# --- bad input --------------------------------------------------------------------------------

NEW_BACKENDS = ["flash", "memory_efficient", "flex", "auto"]


@pytest.mark.parametrize("backend", NEW_BACKENDS)
def test_head_dims_must_match(backend):
    q, k, v, *_ = make_case(1, 2, 4, 4, 16)
    with pytest.raises(ValueError, match="k must be"):
        attention(q, k[..., :8], v, backend=backend)


@pytest.mark.parametrize("backend", NEW_BACKENDS)
def test_bias_that_cannot_broadcast(backend):
    q, k, v, *_ = make_case(1, 2, 4, 5, 16)
    with pytest.raises(ValueError, match="bias must broadcast"):
        attention(q, k, v, bias=torch.zeros(3, 4, 5), backend=backend)


@pytest.mark.parametrize("backend", NEW_BACKENDS)
def test_mask_of_wrong_shape(backend):
    q, k, v, *_ = make_case(2, 2, 4, 5, 16)
    with pytest.raises(ValueError, match="attention_mask must be"):
        attention(q, k, v, attention_mask=torch.ones(2, 4, dtype=torch.bool), backend=backend)


@pytest.mark.parametrize("backend", ["flash", "memory_efficient", "flex"])
@pytest.mark.parametrize("bad", [[1, 2, 1, 0, 1], [1, -1, 1, 1, 0]])
def test_mask_values_other_than_0_1(backend, bad):
    q, k, v, *_ = make_case(1, 2, 4, 5, 16)
    with pytest.raises(ValueError, match=r"attention_mask must hold only 0/1.*got values"):
        attention(q, k, v, attention_mask=torch.tensor([bad]), backend=backend)


@pytest.mark.parametrize("backend", ["flash", "memory_efficient", "flex"])
def test_backends_without_dropout_say_so(backend):
    q, k, v, *_ = make_case(1, 2, 4, 5, 16)
    with pytest.raises(ValueError, match=f"dropout_p must be 0.0 for the '{backend}' backend"):
        attention(q, k, v, dropout_p=0.1, backend=backend)
