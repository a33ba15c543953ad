"""Model FLOPs of a T5 training step, derived by hand, and the hardware peak they are divided by.

B batch, S source (encoder) length, T target (decoder) length, D d_model, I = heads * d_kv,
F d_ff, V vocab, L_e / L_d encoder / decoder layers.

Only matrix multiplications are counted (2 FLOPs per multiply-add), as in MFU's usual
definition (PaLM, appendix B) and as `torch.utils.flop_counter.FlopCounterMode` counts; norms,
softmax and the bias add are a few percent of the total and are left out. Chapter 12 derives
each term and checks the sum against `FlopCounterMode`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from t5edu.activations import FEED_FORWARD_PROJ
from t5edu.bench.timing import time_alternating

# Dense (no sparsity) peak tensor throughput, in TFLOP/s, from NVIDIA's data sheets. The sheets
# quote bf16/fp16 "with sparsity"; the dense figure is half of it. fp32 is the plain (non-TF32)
# rate, which is what PyTorch uses for float32 matmuls unless TF32 is switched on.
#   H100 SXM / H200 SXM: "NVIDIA H100 Tensor Core GPU" data sheet (2023) and "NVIDIA H200 Tensor
#     Core GPU" data sheet (2024): BF16/FP16 1,979 TFLOPS with sparsity, FP32 67 TFLOPS.
#   H100 PCIe: same H100 data sheet: BF16/FP16 1,513 with sparsity, FP32 51.
#   H100 NVL: same sheet: BF16/FP16 1,671 with sparsity, FP32 60.
#   A100 (SXM and PCIe): "NVIDIA A100 Tensor Core GPU" data sheet (2021): BF16/FP16 312 dense
#     (624 with sparsity), FP32 19.5.
#   L4: "NVIDIA L4 Tensor Core GPU" data sheet (2023): BF16/FP16 242 with sparsity, FP32 30.3.
#   T4: "NVIDIA T4 Tensor Core GPU" data sheet (2019): FP16 (mixed precision) 65, FP32 8.1;
#     Turing has no bf16 tensor cores.
# Matched in order against torch.cuda.get_device_name(), so the PCIe/NVL names come before SXM.
VENDOR_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bfloat16": 989.5, "float16": 989.5, "float32": 67.0}),
    ("H100 PCIe", {"bfloat16": 756.5, "float16": 756.5, "float32": 51.0}),
    ("H100 NVL", {"bfloat16": 835.5, "float16": 835.5, "float32": 60.0}),
    ("H100", {"bfloat16": 989.5, "float16": 989.5, "float32": 67.0}),
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}),
    ("L4", {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3}),
    ("T4", {"float16": 65.0, "float32": 8.1}),
]


def vendor_peak_tflops(gpu_name: str | None, dtype: torch.dtype | str) -> float | None:
    """Data-sheet dense peak for this GPU and dtype, or None when the GPU or dtype is not listed."""
    if not gpu_name:
        return None
    key = str(dtype).replace("torch.", "")
    for pattern, peaks in VENDOR_PEAK_TFLOPS:
        # whole words only: "L4" must not match an "L40S", whose peak is another
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(pattern)}(?![A-Za-z0-9])", gpu_name, re.I):
            return peaks.get(key)
    return None


@dataclass
class T5Flops:
    """Matmul FLOPs of one T5 step on a `(B, S)` source and `(B, T)` target batch.

    `terms` breaks the forward pass down by where the FLOPs go; `forward` is their sum;
    `training` = 3 * forward (the backward pass multiplies each matmul's output gradient by
    both of its inputs: twice the forward's work); `tokens` = B * (S + T).
    """

    terms: dict[str, int]
    forward: int
    training: int
    tokens: int

    @property
    def training_per_token(self) -> float:
        return self.training / self.tokens

    def to_dict(self) -> dict:
        return {
            "terms": dict(self.terms),
            "forward": self.forward,
            "training": self.training,
            "tokens": self.tokens,
            "training_per_token": self.training_per_token,
        }


def _field(config, name):
    if not hasattr(config, name):
        raise ValueError(f"config must have the T5 field {name!r}; got {type(config).__name__}")
    return getattr(config, name)


def t5_flops(config, batch: int, src_len: int, tgt_len: int) -> T5Flops:
    """Analytic matmul FLOPs of a T5 encoder-decoder step (see the module docstring for symbols).

    Per encoder layer, per source token: q, k, v, o projections 4 * 2DI; scores q k^T and
    weights @ v 2 * 2SI (every key, the full matrix is computed); feed-forward 2 * 2DF
    (3 * 2DF when gated: wi_0, wi_1 and wo). Per decoder layer, per target token: self-attention
    4 * 2DI + 2 * 2TI (the causal half is computed and masked, not skipped); cross-attention q, o
    2 * 2DI + 2 * 2SI, and its k, v projections 2 * 2DI per SOURCE token; the same feed-forward.
    LM head 2DV per target token. Works with `t5edu.T5Config` and `transformers.T5Config` alike.

    Raises:
        ValueError: for a config without T5's fields, an unknown `feed_forward_proj`, or
            non-positive sizes.
    """
    for name, val in (("batch", batch), ("src_len", src_len), ("tgt_len", tgt_len)):
        if int(val) < 1:
            raise ValueError(f"{name} must be >= 1; got {val}")
    d = _field(config, "d_model")
    inner = _field(config, "num_heads") * _field(config, "d_kv")
    f = _field(config, "d_ff")
    v = _field(config, "vocab_size")
    n_enc = _field(config, "num_layers")
    n_dec = getattr(config, "num_decoder_layers", None) or n_enc
    proj = _field(config, "feed_forward_proj")
    if proj not in FEED_FORWARD_PROJ:
        raise ValueError(
            f"feed_forward_proj must be one of {sorted(FEED_FORWARD_PROJ)}; got {proj!r}"
        )
    gated = FEED_FORWARD_PROJ[proj][0]
    b, s, t = batch, src_len, tgt_len
    ffn = (3 if gated else 2) * 2 * d * f
    terms = {
        "encoder attention projections": n_enc * b * s * 4 * 2 * d * inner,
        "encoder attention scores": n_enc * b * s * 2 * 2 * s * inner,
        "encoder feed-forward": n_enc * b * s * ffn,
        "decoder self-attention projections": n_dec * b * t * 4 * 2 * d * inner,
        "decoder self-attention scores": n_dec * b * t * 2 * 2 * t * inner,
        "decoder cross-attention projections": n_dec * (b * t * 2 + b * s * 2) * 2 * d * inner,
        "decoder cross-attention scores": n_dec * b * t * 2 * 2 * s * inner,
        "decoder feed-forward": n_dec * b * t * ffn,
        "lm head": b * t * 2 * d * v,
    }
    forward = sum(terms.values())
    return T5Flops(terms=terms, forward=forward, training=3 * forward, tokens=b * (s + t))


def count_flops(fn) -> int:
    """FLOPs `torch.utils.flop_counter.FlopCounterMode` counts while `fn()` runs (matmuls,
    convolutions, and PyTorch's fused attention kernels that it has formulas for)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def measured_peak_flops(
    device: torch.device | str,
    dtype: torch.dtype,
    n: int | None = None,
    repeats: int = 5,
    min_sample_s: float = 0.2,
) -> dict:
    """FLOP/s of a large square matmul in `dtype` on `device`: the practical ceiling for MFU.

    `n` defaults to 2048 on CPU and 8192 on CUDA (large enough to reach the plateau); each timed
    sample repeats the matmul for at least `min_sample_s` seconds. Returns
    `{"n", "dtype", "median_s", "flops_per_s", "tflops"}`.
    """
    device = torch.device(device)
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    timing = time_alternating(
        {"matmul": lambda: a @ b},
        device=device,
        warmup=2,
        repeats=repeats,
        min_sample_s=min_sample_s,
    )["matmul"]
    flops = 2 * n**3 / timing.median_s
    return {
        "n": n,
        "dtype": str(dtype).replace("torch.", ""),
        "median_s": timing.median_s,
        "flops_per_s": flops,
        "tflops": flops / 1e12,
    }


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak FLOP/s (a fraction)."""
    if step_time_s <= 0 or peak_flops_per_s <= 0:
        raise ValueError(
            f"step_time_s and peak_flops_per_s must be > 0; got {step_time_s}, {peak_flops_per_s}"
        )
    return flops_per_step / step_time_s / peak_flops_per_s
