"""RoPE against HF LLaMA's rotary embedding, the complex-number form, and its defining properties.

B batch, H heads, T length, Dh head dim (chapter 7).
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from t5edu import (
    RoPE,
    RoPEAttention,
    half_split_index,
    rope_inv_freq,
    to_half_split,
    to_interleaved,
)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def llama_config(dim, base=10000.0, scaling=None, max_pos=2048):
    params = {"rope_type": "default", "rope_theta": base}
    if scaling is not None:
        params.update(rope_type=scaling["type"], factor=scaling["factor"])
    return LlamaConfig(
        hidden_size=2 * dim,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=dim,
        rope_parameters=params,
        max_position_embeddings=max_pos,
    )


def hf_rope(q, k, base=10000.0, offset=0, scaling=None):
    """HF LLaMA's half-split RoPE on (B, H, T, Dh) q and k, same positions for both."""
    emb = LlamaRotaryEmbedding(llama_config(q.shape[-1], base, scaling))
    pos = torch.arange(offset, offset + q.shape[2])[None]  # (1, T)
    cos, sin = emb(q, pos)
    return apply_rotary_pos_emb(q, k, cos, sin)


CASES = [(2, 5, 0, 10000.0), (8, 17, 0, 10000.0), (64, 40, 3, 10000.0), (32, 9, 1000, 500000.0)]


@pytest.mark.parametrize("dim,t,offset,base", CASES)
def test_half_split_equals_hf_llama(dim, t, offset, base):
    q, k = randn(2, 3, t, dim), randn(2, 3, t, dim, seed=1)
    got = RoPE(dim, max_seq_length=16, base=base)(q, k, offset=offset)
    want = hf_rope(q, k, base, offset)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dim,t,offset,base", CASES)
def test_interleaved_equals_hf_llama_after_permutation(dim, t, offset, base):
    q, k = randn(2, 3, t, dim), randn(2, 3, t, dim, seed=1)
    q_rot, k_rot = RoPE(dim, base=base, interleaved=True)(q, k, offset=offset)
    want_q, want_k = hf_rope(to_half_split(q), to_half_split(k), base, offset)
    torch.testing.assert_close(to_half_split(q_rot), want_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(to_half_split(k_rot), want_k, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dim", [2, 8, 16])
def test_interleaved_equals_complex_multiplication(dim):
    # The paper's (and Meta LLaMA's) form: (x_2i + i x_2i+1) * exp(i m theta_i).
    x = randn(1, 2, 11, dim)
    theta = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(11, dtype=torch.float64)[:, None] * theta  # (T, Dh/2)
    xc = torch.view_as_complex(x.double().reshape(1, 2, 11, dim // 2, 2))
    want = torch.view_as_real(xc * torch.polar(torch.ones_like(angles), angles)).flatten(-2)
    torch.testing.assert_close(
        RoPE(dim, interleaved=True).rotate(x), want.float(), atol=1e-5, rtol=0
    )


def test_permutation_round_trip_and_layout():
    assert half_split_index(6).tolist() == [0, 2, 4, 1, 3, 5]
    x = randn(3, 4, 10)
    assert torch.equal(to_interleaved(to_half_split(x)), x)
    assert torch.equal(to_half_split(to_interleaved(x)), x)


@pytest.mark.parametrize("interleaved", [False, True])
def test_scores_depend_only_on_relative_position(interleaved):
    rope = RoPE(16, interleaved=interleaved)
    q, k = randn(1, 1, 1, 16), randn(1, 1, 1, 16, seed=1)
    scores = []
    for m in (0, 7, 123, 5000):  # query at m, key at m + 3
        q_rot, k_rot = rope.rotate(q, m), rope.rotate(k, m + 3)
        scores.append((q_rot * k_rot).sum().item())
    assert max(scores) - min(scores) < 1e-3 * max(1.0, abs(scores[0]))
    q_rot, k_rot = rope.rotate(q, 0), rope.rotate(k, 4)  # another offset gives another score
    assert abs((q_rot * k_rot).sum().item() - scores[0]) > 1e-3


def test_rotation_preserves_norm_and_position_zero_is_identity():
    x = randn(2, 2, 30, 8)
    y = RoPE(8).rotate(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-6)
    assert torch.equal(y[:, :, 0], x[:, :, 0])


@pytest.mark.parametrize("interleaved", [False, True])
def test_cache_grows_past_max_seq_length(interleaved):
    small = RoPE(8, max_seq_length=4, interleaved=interleaved)
    big = RoPE(8, max_seq_length=256, interleaved=interleaved)
    q, k = randn(1, 2, 20, 8), randn(1, 2, 20, 8, seed=1)
    for g, w in zip(small(q, k, offset=100), big(q, k, offset=100), strict=True):
        assert torch.equal(g, w)
    assert small.cached_length >= 120


def test_offset_matches_slice_of_full_sequence():
    # KV cache: rotating only the new tokens with offset=past_len equals rotating everything.
    rope = RoPE(16)
    q, k = randn(2, 2, 12, 16), randn(2, 2, 12, 16, seed=1)
    q_full, k_full = rope(q, k)
    q_new, k_new = rope(q[:, :, 9:], k[:, :, 9:], offset=9)
    assert torch.equal(q_new, q_full[:, :, 9:]) and torch.equal(k_new, k_full[:, :, 9:])


def test_shorter_query_takes_last_key_positions():
    rope = RoPE(8)
    q, k = randn(1, 2, 3, 8), randn(1, 2, 10, 8, seed=1)
    q_rot, k_rot = rope(q, k, offset=5)
    assert torch.equal(q_rot, rope.rotate(q, 5 + 7))
    assert torch.equal(k_rot, rope.rotate(k, 5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_keeps_dtype_with_float32_angles(dtype):
    rope = RoPE(32).to(dtype)  # .to(dtype) must not round the table
    q, k = randn(1, 2, 8, 32, dtype=dtype), randn(1, 2, 8, 32, seed=1, dtype=dtype)
    q_rot, k_rot = rope(q, k, offset=3000)
    assert q_rot.dtype == k_rot.dtype == dtype
    cos, sin = rope.cos_sin(8, 3000)
    assert cos.dtype == sin.dtype == torch.float32
    want, _ = hf_rope(q.float(), k.float(), offset=3000)  # the rotation in float32, rounded once
    assert torch.equal(q_rot, want.to(dtype))


def test_linear_scaling_equals_hf():
    q, k = randn(1, 2, 7, 16), randn(1, 2, 7, 16, seed=1)
    scaling = {"type": "linear", "factor": 4.0}
    got = RoPE(16, scaling=scaling)(q, k, offset=50)
    want = hf_rope(q, k, offset=50, scaling=scaling)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)
    # Linear interpolation: position s * m with factor s is position m unscaled (s = 4: exact).
    x = randn(1, 1, 1, 16)
    scaled, plain = RoPE(16, scaling=scaling), RoPE(16)
    for m in (1, 9, 300):
        assert torch.equal(scaled.rotate(x, offset=4 * m), plain.rotate(x, offset=m))


@pytest.mark.parametrize("dim,factor", [(8, 2.0), (64, 4.0)])
def test_ntk_scaling_equals_hf_dynamic_at_matching_length(dim, factor):
    # HF's dynamic NTK uses factor' = factor * L / M - (factor - 1); it equals the static
    # NTK-aware rescaling with factor' = `factor` at L = M * (2 * factor - 1) / factor.
    max_pos = 64
    cfg = llama_config(dim, scaling={"type": "dynamic", "factor": factor}, max_pos=max_pos)
    seq_len = int(max_pos * (2 * factor - 1) / factor)
    hf_freq, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, None, seq_len=seq_len)
    ours = rope_inv_freq(dim, scaling={"type": "ntk", "factor": factor})
    torch.testing.assert_close(ours, hf_freq, atol=0, rtol=1e-6)
    plain = rope_inv_freq(dim)
    assert ours[0] == plain[0]  # fastest pair untouched
    torch.testing.assert_close(ours[-1], plain[-1] / factor, atol=0, rtol=1e-6)  # slowest: / s


def test_learnable_frequencies_start_equal_and_get_gradients():
    fixed, learn = RoPE(8), RoPE(8, learnable=True)
    q, k = randn(1, 2, 6, 8), randn(1, 2, 6, 8, seed=1)
    for g, w in zip(learn(q, k, offset=2), fixed(q, k, offset=2), strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)
    q_rot, k_rot = learn(q, k)
    (q_rot * k_rot).sum().backward()
    assert learn.inv_freq.grad is not None and learn.inv_freq.grad.abs().sum() > 0
    assert [n for n, _ in learn.named_parameters()] == ["inv_freq"]
    assert list(fixed.parameters()) == [] and fixed.state_dict() == {}


@pytest.mark.parametrize("causal", [False, True])
def test_rope_attention_matches_hf_rope_and_torch_sdpa(causal):
    torch.manual_seed(0)
    attn = RoPEAttention(d_model=16, num_heads=2).eval()
    x = randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])

    def heads(t):
        return t.view(2, 6, 2, 8).transpose(1, 2)  # (B, H, T, Dh)

    q, k = hf_rope(heads(attn.q(x)), heads(attn.k(x)))
    keep = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        keep = keep & torch.ones(6, 6, dtype=torch.bool).tril()
    out = F.scaled_dot_product_attention(q, k, heads(attn.v(x)), attn_mask=keep)
    want = attn.o(out.transpose(1, 2).reshape(2, 6, 16))
    got = attn(x, attention_mask=mask, causal=causal)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_rope_attention_is_shift_invariant():
    # With RoPE alone, shifting every position by the same offset leaves the output unchanged.
    torch.manual_seed(0)
    attn = RoPEAttention(d_model=16, num_heads=4).eval()
    x = randn(1, 5, 16)
    torch.testing.assert_close(
        attn(x, causal=True), attn(x, causal=True, offset=77), atol=1e-5, rtol=0
    )


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [7, 1, 0])
def test_odd_dim_raises(dim):
    with pytest.raises(ValueError, match=f"dim must be even and >= 2; got dim={dim}"):
        RoPE(dim)


def test_bad_shapes_raise():
    rope = RoPE(8)
    with pytest.raises(ValueError, match=r"q must be \(batch, heads, seq, dim=8\)"):
        rope(torch.randn(2, 5, 8), torch.randn(2, 1, 5, 8))
    with pytest.raises(ValueError, match=r"k must be .*got shape \(1, 1, 5, 6\)"):
        rope(torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 6))
    with pytest.raises(ValueError, match="q_len=6, k_len=5"):
        rope(torch.randn(1, 1, 6, 8), torch.randn(1, 1, 5, 8))
    with pytest.raises(
        ValueError, match=r"offset must be an int >= 0 \(a token position\); got offset=-1"
    ):
        rope(torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8), offset=-1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"scaling": {"type": "yarn", "factor": 2.0}}, "scaling must be"),
        ({"scaling": {"type": "linear"}}, "scaling must be"),
        ({"scaling": {"type": "linear", "factor": 0.5}}, "factor must be >= 1; got 0.5"),
        ({"scaling": 2.0}, "scaling must be None or a dict"),
        ({"base": 1.0}, "base must be > 1; got base=1.0"),
        ({"max_seq_length": 0}, "max_seq_length must be >= 1; got 0"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RoPE(8, **kwargs)
