"""ALiBi against Press et al.'s slope recipe and HF BLOOM's `build_alibi_tensor` (chapter 8).

B batch, H heads, T length.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.bloom.modeling_bloom import build_alibi_tensor

from t5edu import AdaptiveALiBi, ALiBi, ALiBiAttention, CausalALiBiAttention, alibi_slopes

HEADS = range(1, 65)


def paper_slopes(n):
    """The recipe of Press et al. 2022 (their released code's `get_slopes`), in float64."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


def bloom(num_heads, t):
    """BLOOM's bias m * j for keys j = 0..t-1, as `(heads, 1, t)` float32."""
    return build_alibi_tensor(torch.ones(1, t, dtype=torch.long), num_heads, torch.float32)


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("h", HEADS)
def test_slopes_equal_paper_recipe_exactly(h):
    assert torch.equal(alibi_slopes(h), torch.tensor(paper_slopes(h)).float())
    assert ALiBi(h).slopes.shape == (h,) and ALiBi(h).slopes.dtype == torch.float32


@pytest.mark.parametrize("h", HEADS)
def test_slopes_equal_bloom(h):
    got, want = ALiBi(h).slopes, bloom(h, 2)[:, 0, 1]  # m * j at j = 1 is m
    if h <= 10:  # BLOOM's float32 powers are exact here (bases 2^-k)
        assert torch.equal(got, want)
    # Beyond, BLOOM raises a rounded float32 base to powers up to 64, drifting by <= 6e-7
    # relative from the correctly rounded 2^(-8h/n) that the paper's float64 recipe gives.
    torch.testing.assert_close(got, want, atol=0, rtol=6e-7)


def test_slopes_known_values():
    assert alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]
    assert alibi_slopes(2).tolist() == [2.0**-4, 2.0**-8]
    assert alibi_slopes(3).tolist() == [2.0**-4, 2.0**-8, 2.0**-2]  # third: odd slope of 4 heads


@pytest.mark.parametrize("h", HEADS)
def test_causal_bias_is_bloom_up_to_a_row_constant(h):
    t = 7
    ours, theirs = ALiBi(h).bias(t, t, causal=True), bloom(h, t)  # (H, T, T), (H, 1, T)
    slopes = ALiBi(h).slopes
    # m(j - i) = m j - m i: the difference is -m i, the same for every key j of row i.
    diff = ours - theirs
    want = -slopes[:, None, None] * torch.arange(t, dtype=torch.float32)[None, :, None]
    torch.testing.assert_close(diff, want.expand(h, t, t), atol=1e-5, rtol=0)
    # Hence equal attention probabilities, masked (the real use) or not.
    scores = randn(h, t, t, seed=h)
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for keep in (mask, torch.ones_like(mask)):
        p_ours = torch.softmax((scores + ours).masked_fill(~keep, -torch.inf), -1)
        p_bloom = torch.softmax((scores + theirs).masked_fill(~keep, -torch.inf), -1)
        torch.testing.assert_close(p_ours, p_bloom, atol=1e-6, rtol=0)


def test_causal_bias_values():
    b = ALiBi(2).bias(4, 4, causal=True)
    m = alibi_slopes(2)
    for i in range(4):
        for j in range(i + 1):
            assert b[1, i, j] == -m[1] * (i - j)  # -slope * distance to the past key
    assert (b.diagonal(dim1=-2, dim2=-1) == 0).all()


@pytest.mark.parametrize("h", [1, 5, 8])
def test_bidirectional_bias_is_symmetric_distance(h):
    b = ALiBi(h).bias(6, 6)
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    want = -ALiBi(h).slopes[:, None, None] * (i - j).abs().float()
    assert torch.equal(b, want)
    assert torch.equal(b, b.transpose(-1, -2)) and (b <= 0).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tq", [1, 3, 10])
def test_bias_aligned_bottom_right(causal, tq):
    alibi = ALiBi(4)
    full = alibi.bias(10, 10, causal=causal)
    assert torch.equal(alibi.bias(tq, 10, causal=causal), full[:, -tq:])


def test_bias_dtype_stays_float32_after_half():
    alibi = ALiBi(12).half()
    b = alibi.bias(3, 5)
    assert b.dtype == torch.float32 and torch.equal(alibi.slopes, alibi_slopes(12))
    assert ALiBi(4).state_dict() == {}  # fixed slopes are not checkpointed
    assert alibi.to(torch.float64).slopes.dtype == torch.float32


def test_adaptive_alibi_starts_at_paper_slopes_and_stays_positive():
    alibi = AdaptiveALiBi(6)
    torch.testing.assert_close(alibi.slopes, alibi_slopes(6), atol=0, rtol=1e-6)
    torch.testing.assert_close(alibi.bias(5, 5), ALiBi(6).bias(5, 5), atol=1e-6, rtol=0)
    alibi.slopes.sum().backward()  # a unit step down on every slope...
    with torch.no_grad():
        alibi.log_slopes -= alibi.log_slopes.grad
    # ...would make a raw slope m - 1 < 0; the log-parameterised one becomes m * exp(-m) > 0.
    want = alibi_slopes(6) * torch.exp(-alibi_slopes(6))
    torch.testing.assert_close(alibi.slopes.detach(), want, atol=0, rtol=1e-6)
    assert (alibi.slopes > 0).all()
    assert list(alibi.state_dict()) == ["log_slopes"]


def project(attn, x):
    b, t, _ = x.shape
    h = attn.num_heads

    def heads(y):
        return y.view(b, t, h, -1).transpose(1, 2)  # (B, H, T, Dh)

    return heads(attn.q(x)), heads(attn.k(x)), heads(attn.v(x))


def test_causal_alibi_attention_equals_bloom_bias_with_torch_sdpa():
    torch.manual_seed(0)
    attn = CausalALiBiAttention(d_model=24, num_heads=6).eval()  # 6 heads: not a power of two
    x = randn(2, 9, 24)
    q, k, v = project(attn, x)
    keep = torch.ones(9, 9, dtype=torch.bool).tril()
    bias = bloom(6, 9)[None].masked_fill(~keep, -torch.inf)  # (1, H, T, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    want = attn.o(out.transpose(1, 2).reshape(2, 9, 24))
    torch.testing.assert_close(attn(x), want, atol=1e-6, rtol=0)


def test_alibi_attention_symmetric_bias_with_padding_equals_torch_sdpa():
    torch.manual_seed(0)
    attn = ALiBiAttention(d_model=16, num_heads=4).eval()
    x = randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    q, k, v = project(attn, x)
    i, j = torch.arange(5)[:, None], torch.arange(5)[None, :]
    bias = -alibi_slopes(4)[:, None, None] * (i - j).abs()  # (H, T, T)
    bias = bias[None].masked_fill(~mask.bool()[:, None, None, :], -torch.inf)  # (B, H, T, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    want = attn.o(out.transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x, attention_mask=mask), want, atol=1e-6, rtol=0)


def test_adaptive_alibi_attention_trains_slopes():
    torch.manual_seed(0)
    attn = CausalALiBiAttention(d_model=8, num_heads=2, adaptive=True)
    attn(randn(1, 4, 8)).pow(2).sum().backward()
    assert attn.alibi.log_slopes.grad is not None and attn.alibi.log_slopes.grad.abs().sum() > 0
    assert attn.causal and not ALiBiAttention(8, 2).causal


# ---- bad input ------------------------------------------------------------------------------


def test_bad_num_heads():
    with pytest.raises(ValueError, match="num_heads must be >= 1; got num_heads=0"):
        ALiBi(0)


def test_bad_lengths():
    with pytest.raises(ValueError, match="q_len=0, k_len=4"):
        ALiBi(2).bias(0, 4)
