"""GLU variants against F.glu, Shazeer 2020's formulas and HF's LLaMA / T5 MLPs (chapter 6)."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, T5Config
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm
from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

from t5edu import (
    GLU_VARIANTS,
    GLUFeedForward,
    GLUVariants,
    SwiGLU,
    SwiGLUFeedForward,
    SwiGLUMLP,
    glu_hidden_dim,
)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


# Shazeer 2020, eq. 5, written out by hand (gate g, value v).
FORMULAS = {
    "glu": lambda g: 1 / (1 + torch.exp(-g)),
    "bilinear": lambda g: g,
    "reglu": lambda g: torch.maximum(g, torch.zeros_like(g)),
    "geglu": gelu_tanh,
    "swiglu": lambda g: g / (1 + torch.exp(-g)),
}


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype) * 2


@pytest.mark.parametrize("variant", GLU_VARIANTS)
@pytest.mark.parametrize("shape", [(6,), (3, 10), (2, 3, 8)])
def test_glu_variants_match_formulas(variant, shape):
    x = randn(*shape)
    value, gate = x.chunk(2, dim=-1)
    want = value * FORMULAS[variant](gate)
    torch.testing.assert_close(GLUVariants(variant)(x), want, atol=1e-6, rtol=0)


def test_glu_equals_torch_glu():
    x = randn(4, 5, 12)
    torch.testing.assert_close(GLUVariants("glu")(x), F.glu(x, dim=-1), atol=1e-6, rtol=0)


def test_swiglu_is_the_swiglu_variant():
    x = randn(3, 16)
    assert torch.equal(SwiGLU()(x), GLUVariants("swiglu")(x))
    torch.testing.assert_close(SwiGLU()(x), x[:, :8] * F.silu(x[:, 8:]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("variant", GLU_VARIANTS)
def test_glu_variants_keep_half_dtype(variant, dtype):
    assert GLUVariants(variant)(randn(2, 8, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("dim,multiple_of,want", [(4096, 256, 11008), (512, 256, 1536), (6, 1, 16)])
def test_glu_hidden_dim_llama_rule(dim, multiple_of, want):
    assert glu_hidden_dim(dim, multiple_of) == want  # 4096 -> 11008 is LLaMA-7B's


@pytest.mark.parametrize("dim", [3, 12, 48, 96])
def test_swiglu_ffn_has_parameters_of_4d_relu_ffn(dim):
    relu_ffn = 2 * dim * 4 * dim
    ffn = SwiGLUFeedForward(dim, multiple_of=1)
    assert sum(p.numel() for p in ffn.parameters()) == relu_ffn  # dim divisible by 3: exact
    rounded = SwiGLUFeedForward(dim, multiple_of=32)
    extra = sum(p.numel() for p in rounded.parameters()) - relu_ffn
    assert 0 <= extra < 3 * dim * 32


def test_swiglu_ffn_equals_hf_llama_mlp():
    ffn = SwiGLUFeedForward(16, hidden_dim=40)
    ref = LlamaMLP(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=40,
            hidden_act="silu",
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    ref.load_state_dict(ffn.state_dict())
    x = randn(2, 5, 16)
    torch.testing.assert_close(ffn(x), ref(x), atol=1e-6, rtol=0)


def test_geglu_ffn_equals_hf_t5_v11_gated_gelu():
    ffn = GLUFeedForward(16, hidden_dim=24, variant="geglu")
    cfg = T5Config(d_model=16, d_ff=24, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    ref = T5DenseGatedActDense(cfg).eval()
    ref.wi_0.weight.data.copy_(ffn.gate_proj.weight.data)
    ref.wi_1.weight.data.copy_(ffn.up_proj.weight.data)
    ref.wo.weight.data.copy_(ffn.down_proj.weight.data)
    x = randn(2, 5, 16)
    torch.testing.assert_close(ffn(x), ref(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", GLU_VARIANTS)
@pytest.mark.parametrize("bias", [False, True])
def test_glu_ffn_matches_explicit_formula(variant, bias):
    ffn = GLUFeedForward(8, hidden_dim=12, variant=variant, bias=bias)
    x = randn(3, 4, 8)

    def lin(layer, h):
        return h @ layer.weight.T + (layer.bias if bias else 0)

    want = lin(ffn.down_proj, FORMULAS[variant](lin(ffn.gate_proj, x)) * lin(ffn.up_proj, x))
    torch.testing.assert_close(ffn(x), want, atol=1e-6, rtol=0)


def test_swiglu_ffn_keeps_bf16():
    ffn = SwiGLUFeedForward(8, multiple_of=8).bfloat16()
    assert ffn(randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("num_layers", [1, 3])
def test_swiglu_mlp_equals_hf_llama_blocks(num_layers):
    torch.manual_seed(0)
    mlp = SwiGLUMLP(16, num_layers=num_layers, hidden_dim=24)
    for p in mlp.parameters():  # random norm weights too, so a mix-up of norms would show
        p.data.normal_(0, 0.3)
    cfg = LlamaConfig(
        hidden_size=16,
        intermediate_size=24,
        hidden_act="silu",
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    x = randn(2, 3, 16)
    want = x
    for norm, ff in zip(mlp.norms, mlp.layers, strict=True):
        ref_norm, ref_ff = LlamaRMSNorm(16, eps=1e-6), LlamaMLP(cfg)
        ref_norm.load_state_dict(norm.state_dict())
        ref_ff.load_state_dict(ff.state_dict())
        want = want + ref_ff(ref_norm(want))
    final = LlamaRMSNorm(16, eps=1e-6)
    final.load_state_dict(mlp.final_norm.state_dict())
    torch.testing.assert_close(mlp(x), final(want), atol=1e-6, rtol=0)
    assert len(mlp.layers) == num_layers


def test_swiglu_mlp_trains():
    torch.manual_seed(0)
    mlp = SwiGLUMLP(8, num_layers=2, multiple_of=8)
    x, y = randn(32, 8), randn(32, 8, seed=1)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.mse_loss(mlp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [GLUVariants, lambda v: GLUFeedForward(8, 8, variant=v)])
def test_unknown_variant(make):
    with pytest.raises(ValueError, match="variant must be one of.*'gelu'"):
        make("gelu")


def test_odd_split_raises():
    with pytest.raises(ValueError, match=r"even, got shape \(2, 7\)"):
        SwiGLU()(torch.randn(2, 7))


def test_ffn_dim_mismatch_raises():
    with pytest.raises(ValueError, match=r"dim=8\); got shape \(2, 6\)"):
        SwiGLUFeedForward(8, 16)(torch.randn(2, 6))


def test_mlp_bad_num_layers():
    with pytest.raises(ValueError, match="num_layers must be >= 1; got 0"):
        SwiGLUMLP(8, num_layers=0)


def test_hidden_dim_bad_multiple():
    with pytest.raises(ValueError, match="multiple_of=0"):
        glu_hidden_dim(8, 0)
