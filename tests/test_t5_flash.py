"""`t5edu.t5_flash.t5_flash_attention` against the naive reference with a materialised bias.

The reference gathers `RelativePositionBias(q_len, k_len, offset)` (T5's / HF's buckets) from a
module whose weight is the same table and runs `attention(..., backend="naive")`: outputs and the
gradients of q, k, v and the table must agree within 1e-5 in float32, and gradcheck must pass in
float64. Tiles are small so that many of them, partial ones included, are exercised fast.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from t5edu.backends import attention
from t5edu.bench.timing import peak_memory
from t5edu.relative_position import RelativePositionBias
from t5edu.t5_flash import relative_buckets, t5_flash_attention

ATOL = 1e-5


def make(b, h, tq, tk, d, num_buckets, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=dtype) for t in (tq, tk, tk))
    table = torch.randn(num_buckets, h, generator=g, dtype=dtype)
    return q, k, v, table


def reference(q, k, v, table, *, bidirectional, num_buckets, max_distance, attention_mask=None,
              causal=False, offset=0):  # fmt: skip
    """Materialised buckets (RelativePositionBias, HF's formula), gather, naive attention."""
    rpb = RelativePositionBias(num_buckets, max_distance, q.shape[1], bidirectional)
    buckets = rpb.buckets(q.shape[2], k.shape[2], offset)  # int64 (Tq, Tk)
    bias = table.t()[:, buckets][None]  # (1, H, Tq, Tk), what rpb(Tq, Tk, offset) gathers
    return attention(q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=1.0,
                     backend="naive")  # fmt: skip


def out_and_grads(fn, q, k, v, table, **kw):
    leaves = [t.clone().requires_grad_() for t in (q, k, v, table)]
    out = fn(*leaves, **kw)
    # A fixed, non-uniform upstream gradient: every output element matters differently.
    w = torch.cos(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
    (out * w).sum().backward()
    return [out.detach()] + [t.grad for t in leaves]


def check(case, atol=ATOL, block_q=4, block_k=4, **kw):
    want = out_and_grads(reference, *case, **kw)
    got = out_and_grads(t5_flash_attention, *case, block_q=block_q, block_k=block_k, **kw)
    for name, g, w in zip(["out", "dq", "dk", "dv", "dtable"], got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        assert not torch.isnan(g).any(), f"{name} has NaN"
        torch.testing.assert_close(g, w, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    return got


def padding_mask(b, tk, kind, pad, row_empty):
    """(b, tk) long mask: `pad` padded keys on the left or right; optionally row 0 all padding."""
    if kind == "none":
        return None
    am = torch.ones(b, tk, dtype=torch.long)
    pad = min(pad, tk)
    if kind == "left":  # the first key tiles fully masked
        am[:, :pad] = 0
    elif kind == "right":
        am[:, tk - pad :] = 0
    if row_empty:
        am[0] = 0  # a sequence that sees no key: zeros and zero gradients
    return am


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    tq=st.integers(1, 29),
    tk=st.integers(1, 29),
    d=st.integers(1, 8),
    block_q=st.integers(2, 12),
    block_k=st.integers(2, 12),
    bidirectional=st.booleans(),
    causal=st.booleans(),
    num_buckets=st.integers(4, 16),
    max_distance_extra=st.integers(1, 40),
    offset_kind=st.sampled_from(["zero", "cache", "any"]),
    any_offset=st.integers(0, 60),
    mask_kind=st.sampled_from(["none", "left", "right"]),
    pad=st.integers(0, 29),
    row_empty=st.booleans(),
)
def test_hypothesis_shapes_equal_the_naive_reference(
    b, h, tq, tk, d, block_q, block_k, bidirectional, causal, num_buckets, max_distance_extra,
    offset_kind, any_offset, mask_kind, pad, row_empty,
):  # fmt: skip
    n = num_buckets // 2 if bidirectional else num_buckets
    max_distance = n // 2 + max_distance_extra  # log-spaced buckets and the far clamp both hit
    # "cache": queries follow tk - tq cached keys, as in decoding with a KV cache.
    offset = {"zero": 0, "cache": max(tk - tq, 0), "any": any_offset}[offset_kind]
    am = padding_mask(b, tk, mask_kind, pad, row_empty)
    check(
        make(b, h, tq, tk, d, num_buckets), block_q=block_q, block_k=block_k,
        bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance,
        attention_mask=am, causal=causal, offset=offset,
    )  # fmt: skip


@pytest.mark.parametrize("causal", [False, True])
def test_fully_masked_first_key_tiles_and_empty_rows(causal):
    """Left padding hides the first two 4-wide key tiles; batch row 1 sees no key at all."""
    case = make(2, 2, 10, 23, 8, 32)
    am = torch.ones(2, 23, dtype=torch.bool)
    am[:, :9] = False
    am[1] = False
    got = check(case, bidirectional=not causal, num_buckets=32, max_distance=128,
                attention_mask=am, causal=causal)  # fmt: skip
    out, dq, dk, dv, _ = got
    assert (out[1] == 0).all() and (dq[1] == 0).all() and (dk[1] == 0).all()
    assert (dv[:, :, :9] == 0).all()  # hidden keys receive no gradient


def test_cached_decoding_step_and_chunk():
    """One new query (and a chunk of 5) after 36 cached keys: the decoder with a KV cache."""
    for tq in (1, 5):
        case = make(2, 3, tq, 36 + tq, 8, 32, seed=tq)
        check(case, block_q=4, block_k=8, bidirectional=False, num_buckets=32, max_distance=128,
              causal=True, offset=36)  # fmt: skip


def test_q_len_greater_than_k_len_causal():
    """Bottom-right causal with Tq > Tk: the first Tq - Tk rows see no key."""
    out, *_ = check(make(1, 2, 17, 6, 4, 8), bidirectional=False, num_buckets=8,
                    max_distance=10, causal=True)  # fmt: skip
    assert (out[:, :, :11] == 0).all()


def test_minus_inf_table_entry_at_every_key_gives_zeros_not_nan():
    """A row whose every visible key falls in a -inf bucket sees no key: zeros, zero grads."""
    q, k, v, table = make(1, 2, 1, 3, 4, 8)
    table[[0, 1, 2]] = float("-inf")  # offset 2, causal: distances 0, 1, 2 -> buckets 0, 1, 2
    kw = dict(bidirectional=False, num_buckets=8, max_distance=10, causal=True, offset=2)
    out, dq, dk, dv, dtable = out_and_grads(t5_flash_attention, q, k, v, table, **kw)
    assert (out == 0).all() and (dq == 0).all() and (dk == 0).all() and (dv == 0).all()
    assert (dtable == 0).all()
    want = reference(q, k, v, table, **kw)
    torch.testing.assert_close(out, want, atol=0, rtol=0)


@pytest.mark.parametrize("bidirectional,causal", [(True, False), (False, True), (True, True)])
def test_gradcheck_float64(bidirectional, causal):
    q, k, v, table = make(2, 2, 5, 7, 3, 8, dtype=torch.float64)
    am = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    leaves = [t.requires_grad_() for t in (q, k, v, table)]

    def fn(q, k, v, table):
        return t5_flash_attention(
            q, k, v, table, bidirectional=bidirectional, num_buckets=8, max_distance=6,
            attention_mask=am, causal=causal, offset=3, block_q=2, block_k=3,
        )  # fmt: skip

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_buckets_are_t5s():
    """The O(Tq + Tk) bucket vector, read per (i, j), equals RelativePositionBias's table."""
    for bidirectional, offset in ((True, 0), (True, 7), (False, 40)):
        rpb = RelativePositionBias(32, 128, 1, bidirectional)
        want = rpb.buckets(50, 300, offset)
        vec = relative_buckets(50, 300, offset, bidirectional, 32, 128, "cpu")
        i, j = torch.arange(50)[:, None], torch.arange(300)[None, :]
        assert torch.equal(vec[j - i + 49], want)


def test_frozen_table_and_float16_inputs():
    """A table without grad gets none; fp16 q, k, v with an fp32 table: fp16 out, fp32 grads."""
    q, k, v, table = make(1, 2, 9, 11, 8, 8)
    kw = dict(bidirectional=True, num_buckets=8, max_distance=12)
    qh = q.half().requires_grad_()
    out = t5_flash_attention(qh, k.half(), v.half(), table, block_q=4, block_k=4, **kw)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert qh.grad is not None and table.grad is None
    torch.testing.assert_close(out.float(), reference(q, k, v, table, **kw), atol=1e-2, rtol=0)
    leaf = table.clone().requires_grad_()
    t5_flash_attention(q.half(), k.half(), v.half(), leaf, **kw).float().sum().backward()
    assert leaf.grad.dtype == torch.float32 and leaf.grad.shape == (8, 2)


def test_nothing_of_size_q_len_times_k_len_is_saved():
    """The autograd graph keeps only O(T) tensors: q, k, v, out, lse, table, buckets, mask."""
    q, k, v, table = make(1, 2, 256, 256, 8, 32)
    leaves = [t.requires_grad_() for t in (q, k, v, table)]
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t,
                                                  lambda t: t):  # fmt: skip
        t5_flash_attention(*leaves, bidirectional=True, num_buckets=32, max_distance=128,
                           attention_mask=torch.ones(1, 256, dtype=torch.bool))  # fmt: skip
    assert sizes and max(sizes) < 256 * 256, sizes


def test_peak_memory_is_the_gradients_plus_a_few_tiles():
    """Forward + backward at N = 512, 2 heads, 64 x 64 tiles: the peak is at least the gradients
    it returns (the measurement is sound) and below those plus 16 tiles (B, H, 64, 64) fp32,
    0.7 MB in all, where one materialised (H, N, N) fp32 bias alone is 2 MiB (and the naive
    backend holds several: the bias, its gradient, scores, probabilities)."""
    n, h, d, block = 512, 2, 16, 64
    q, k, v, table = (t.requires_grad_() for t in make(1, h, n, n, d, 32))

    def step():
        out = t5_flash_attention(q, k, v, table, bidirectional=True, num_buckets=32,
                                 max_distance=128, block_q=block, block_k=block)  # fmt: skip
        torch.autograd.grad(out.sum(), [q, k, v, table])

    peak = peak_memory(step, "cpu")["peak_bytes"]
    grads = 3 * n * h * d * 4 + 32 * h * 4  # dq, dk, dv, dtable in fp32
    tile = h * block * block * 4
    assert grads <= peak < grads + 16 * tile, (peak, grads, tile)


# --- bad input --------------------------------------------------------------------------------

KW = dict(bidirectional=True, num_buckets=8, max_distance=16)


@pytest.mark.parametrize(
    "table,kw,match",
    [
        (
            torch.zeros(2, 8),
            {},
            r"bias_table must be \(num_buckets, heads\) = \(8, 2\).*"
            r"got shape \(2, 8\) \(transposed\?\)",
        ),  # fmt: skip
        (torch.zeros(8), {}, r"bias_table must be .* got shape \(8,\)"),
        (torch.zeros(32, 2), {}, r"bias_table must be .*= \(8, 2\).*got shape \(32, 2\)"),
        (torch.zeros(8, 2, dtype=torch.long), {}, "bias_table must be a floating-point tensor"),
        ([[0.0] * 2] * 8, {}, "bias_table must be a .* tensor.*got list"),
        (torch.zeros(8, 2), {"offset": -1}, "offset must be an int >= 0.*got offset=-1"),
        (torch.zeros(8, 2), {"offset": 1.5}, "offset must be an int >= 0.*got offset=1.5"),
        (torch.zeros(8, 2), {"block_q": 0}, "block_q must be a positive int; got block_q=0"),
        (torch.zeros(8, 2), {"bidirectional": 1}, "bidirectional must be a bool; got 1"),
        (torch.zeros(8, 2), {"max_distance": 2}, "max_distance must exceed"),
        (torch.zeros(8, 2), {"scale": -1.0}, "scale must be None or a positive finite number"),
        (
            torch.zeros(8, 2),
            {"attention_mask": torch.ones(1, 4)},
            r"attention_mask must be .*"
            r"\(1, 5\)",
        ),  # fmt: skip
        (torch.zeros(8, 2), {"attention_mask": torch.full((1, 5), 2)}, "only 0/1"),
    ],
)
def test_bad_inputs_name_the_argument(table, kw, match):
    q, k, v, _ = make(1, 2, 4, 5, 4, 8)
    with pytest.raises(ValueError, match=match):
        t5_flash_attention(q, k, v, table, **{**KW, **kw})
