"""Half precision: bf16 and fp16 run finite where HF's T5 does and stay close to float32.

Tolerances are about 3x the differences measured on these models (float32 logits up to |5|):
bf16 keeps 8 bits of mantissa, fp16 11; HF's own half-precision model is as far from float32.
"""

import pytest
import torch
from test_t5_parity import batch, hf_model

import t5edu.t5_blocks
from t5edu.hf import from_hf

HALF_TOL = {torch.bfloat16: 0.1, torch.float16: 0.02}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["v1_relu_tied", "v11_gated_gelu_untied"])
def test_half_precision_close_to_float32_and_to_hf(name, dtype):
    inputs = batch()
    with torch.no_grad():
        ref = from_hf(hf_model(name))(**inputs).logits
        hf = hf_model(name).to(dtype)
        ours = from_hf(hf)
        assert ours.dtype == dtype
        out, want = ours(**inputs), hf(**inputs)
    assert out.logits.dtype == dtype and out.loss.dtype == torch.float32
    assert torch.isfinite(want.logits).all() and torch.isfinite(out.logits).all()
    tol = HALF_TOL[dtype]
    torch.testing.assert_close(out.logits.float(), ref, atol=tol, rtol=0)
    torch.testing.assert_close(out.logits.float(), want.logits.float(), atol=tol, rtol=0)


def _overflowing(name):
    """fp16 models whose first encoder feed-forward output exceeds 65504 (T5's known issue)."""
    hf = hf_model(name)
    with torch.no_grad():
        hf.encoder.block[0].layer[1].DenseReluDense.wo.weight.mul_(1e5)
    hf = hf.half()
    return hf, from_hf(hf)


@pytest.mark.parametrize("name", ["v1_relu_tied", "v11_gated_gelu_untied"])
def test_fp16_feed_forward_overflow_is_clamped_like_hf(name, monkeypatch):
    hf, ours = _overflowing(name)
    inputs = batch()
    with torch.no_grad():
        want, got = hf(**inputs), ours(**inputs)
        assert torch.isfinite(want.logits).all() and torch.isfinite(got.logits).all()
        torch.testing.assert_close(got.logits.float(), want.logits.float(), atol=0.02, rtol=0)
        # The clamp is what keeps it finite: without it the inf turns into NaN downstream.
        monkeypatch.setattr(t5edu.t5_blocks, "clamp_fp16_inf", lambda h: h)
        assert not torch.isfinite(ours(**inputs).logits).all()


def test_clamp_only_touches_fp16_with_inf():
    clamp = t5edu.t5_blocks.clamp_fp16_inf
    x = torch.tensor([1.0, 7e4, -7e4])
    assert torch.equal(clamp(x), x)  # float32: untouched
    big = torch.tensor([1.0, 65504.0, -65504.0], dtype=torch.float16)
    assert torch.equal(clamp(big), big)  # fp16 without inf: untouched
    inf = torch.tensor([1.0, float("inf"), -float("inf")], dtype=torch.float16)
    out = clamp(inf)
    assert torch.isfinite(out).all() and out[1] == -out[2] and out[1] <= 65504 - 1000 + 32
