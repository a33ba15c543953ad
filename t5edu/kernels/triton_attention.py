"""Launch the Triton FlashAttention kernels as one autograd function (chapter 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim.
"""

from __future__ import annotations

import torch
import triton

from t5edu.attention import check_attention_inputs
from t5edu.flash_attention import as_4d, check_no_dropout
from t5edu.kernels.flash_bwd import flash_bwd_dkdv_kernel, flash_bwd_dq_kernel
from t5edu.kernels.flash_fwd import flash_fwd_kernel

# Triton fixes interpreted vs compiled when a kernel is defined (at this module's import).
INTERPRETED = bool(triton.knobs.runtime.interpret)
# ... and for its own jit'd helpers (tl.max, tl.sum, tl.zeros) when `triton` is first imported.
_HELPERS_COMPILED = isinstance(triton.language.max, triton.runtime.JITFunction)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128


def launch_config(dtype: torch.dtype, head_dim: int, block_m=None, block_n=None) -> dict:
    """Tile sizes and warps. Without autotuning: 64x64 tiles keep q, k, v, dO and the fp32
    accumulators of the backward in registers for Dh <= 128 in 16-bit; fp32 inputs use
    32-wide key tiles to halve the register and shared-memory footprint."""
    wide = head_dim > 64
    default_n = 32 if dtype == torch.float32 and wide else 64
    return {
        "BLOCK_M": block_m or 64,
        "BLOCK_N": block_n or default_n,
        "BLOCK_D": max(16, triton.next_power_of_2(head_dim)),
        "PRECISION": "ieee" if dtype == torch.float32 else "tf32",  # fp32: no TF32 rounding
        "num_warps": 8 if wide else 4,
    }


def _bias_args(bias4, q, b, h, q_len, k_len):
    """Pointer and (B, H, Tq, Tk) strides of the bias; broadcast dims get stride 0."""
    if bias4 is None:
        return q, (0, 0, 0, 0)
    return bias4, bias4.expand(b, h, q_len, k_len).stride()


def _forward(q, k, v, bias4, mask, causal, scale, cfg):
    b, h, q_len, d = q.shape
    k_len = k.shape[2]
    out = torch.empty((b, h, q_len, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, q_len), dtype=torch.float32, device=q.device)
    bias_t, bias_s = _bias_args(bias4, q, b, h, q_len, k_len)
    grid = (triton.cdiv(q_len, cfg["BLOCK_M"]), b * h)
    flash_fwd_kernel[grid](
        q, k, v, bias_t, q if mask is None else mask, out, lse,
        *q.stride(), *k.stride(), *v.stride(), *bias_s,
        0 if mask is None else mask.stride(0), *out.stride(),
        h, q_len, k_len, d, scale,
        HAS_BIAS=bias4 is not None, HAS_MASK=mask is not None, CAUSAL=causal, **cfg,
    )  # fmt: skip
    return out, lse


def _backward(do, q, k, v, out, lse, bias4, mask, causal, scale, cfg, bias_grad):
    b, h, q_len, d = q.shape
    k_len = k.shape[2]
    do = do.contiguous()
    delta = (do.float() * out.float()).sum(dim=-1)  # (B, H, Tq), FA2's D_i
    dq = torch.empty((b, h, q_len, d), dtype=q.dtype, device=q.device)
    dk = torch.empty((b, h, k_len, d), dtype=k.dtype, device=q.device)
    dv = torch.empty((b, h, k_len, d), dtype=v.dtype, device=q.device)
    bias_t, bias_s = _bias_args(bias4, q, b, h, q_len, k_len)
    mask_t, mask_s = (q, 0) if mask is None else (mask, mask.stride(0))
    common = dict(HAS_BIAS=bias4 is not None, HAS_MASK=mask is not None, CAUSAL=causal, **cfg)
    flash_bwd_dkdv_kernel[(triton.cdiv(k_len, cfg["BLOCK_N"]), b * h)](
        q, k, v, bias_t, mask_t, do, lse, delta, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), *bias_s, mask_s, *do.stride(),
        h, q_len, k_len, d, scale, **common,
    )  # fmt: skip
    # dBias is summed over the dims the bias broadcasts: one program per (bias batch, bias head).
    gb, gh = (bias4.shape[0], bias4.shape[1]) if bias_grad else (b, h)
    dbias = torch.zeros((gb, gh, q_len, k_len), dtype=torch.float32, device=q.device)
    dbias_s = dbias.stride() if bias_grad else (0, 0, 0, 0)
    flash_bwd_dq_kernel[(triton.cdiv(q_len, cfg["BLOCK_M"]), gb * gh)](
        q, k, v, bias_t, mask_t, do, lse, delta, dq, dbias if bias_grad else q,
        *q.stride(), *k.stride(), *v.stride(), *bias_s, mask_s, *do.stride(), *dbias_s,
        h, q_len, k_len, d, scale, gh, b // gb, h // gh, BIAS_GRAD=bias_grad, **common,
    )  # fmt: skip
    if bias_grad:  # a bias broadcast over queries or keys: sum those dims too
        dims = [a for a in (2, 3) if bias4.shape[a] == 1]
        dbias = dbias.sum(dim=dims, keepdim=True) if dims else dbias
    return dq, dk, dv, (dbias if bias_grad else None)


class TritonFlashAttentionFunction(torch.autograd.Function):
    """Forward and backward Triton kernels; saves q, k, v, out and lse only."""

    @staticmethod
    def forward(ctx, q, k, v, bias, mask, causal, scale, block_m, block_n):
        cfg = launch_config(q.dtype, q.shape[-1], block_m, block_n)
        bias4 = as_4d(bias)
        out, lse = _forward(q, k, v, bias4, mask, causal, scale, cfg)
        ctx.save_for_backward(q, k, v, out, lse, bias, mask)
        ctx.config = (causal, scale, cfg)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, _dlse):
        q, k, v, out, lse, bias, mask = ctx.saved_tensors
        causal, scale, cfg = ctx.config
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dbias = _backward(
            do, q, k, v, out, lse, as_4d(bias), mask, causal, scale, cfg, bias_grad
        )
        if dbias is not None:
            dbias = dbias.reshape(bias.shape).to(bias.dtype)
        return dq, dk, dv, dbias, None, None, None, None, None


def check_triton_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise for inputs the kernels cannot take: device, dtype, head dim."""
    if q.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"the Triton kernels need CUDA tensors; got q on {q.device}. To run them on the CPU "
            "through Triton's interpreter (slow; for tests), set TRITON_INTERPRET=1 before "
            "t5edu.kernels.triton_attention is first imported"
        )
    if INTERPRETED and _HELPERS_COMPILED:
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after `triton` had been imported, so Triton's own helpers "
            "(tl.max, tl.sum) are compiled-mode functions the interpreter cannot call; set "
            "TRITON_INTERPRET=1 before anything imports triton (first thing in the process)"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float32; got {t.dtype}")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(
            f"head_dim must be <= {MAX_HEAD_DIM} for the Triton kernels; got {q.shape}"
        )


def triton_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    block_m: int | None = None,
    block_n: int | None = None,
    return_lse: bool = False,
):
    """FlashAttention-2 forward and backward as Triton kernels, with a learnable additive bias.

    Args and result as `t5edu.flash_attention.flash_attention` (q `(batch, heads, q_len,
    head_dim)`, k, v `(batch, heads, k_len, head_dim)`, bias broadcastable to `(batch, heads,
    q_len, k_len)` with gradient, HF padding mask `(batch, k_len)`, bottom-right causal, rows
    that see no key, hidden or with a -inf bias at every key -> zeros and zero gradients).
    fp16/bf16/fp32 (fp32 matmuls in IEEE fp32, not TF32); scores, softmax and accumulators in
    fp32. `block_m`/`block_n` override the tile sizes (powers of 2, >= 16).

    Raises:
        ValueError: bad shapes/masks (see `check_attention_inputs`), mask values other than 0/1,
            `dropout_p != 0` (no dropout in these kernels), unsupported dtype, head_dim > 128,
            block sizes that are not powers of two >= 16.
        RuntimeError: tensors not on CUDA while Triton's interpreter is off.

    Source: Dao 2023 (FlashAttention-2), Alg. 1 (forward) and Alg. 2 (backward, here split into a
    dK/dV pass and a dQ/dBias pass instead of atomic dQ updates). Taught in chapter 9.
    """
    check_attention_inputs(q, k, v, bias, attention_mask)
    check_no_dropout(dropout_p, "triton")
    check_triton_inputs(q, k, v)
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size is not None and (size < 16 or size & (size - 1)):
            raise ValueError(f"{name} must be a power of two >= 16; got {size}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    mask = None if attention_mask is None else attention_mask.to(torch.int8).contiguous()
    out, lse = TritonFlashAttentionFunction.apply(
        q, k, v, bias, mask, causal, scale, block_m, block_n
    )
    return (out, lse) if return_lse else out


__all__ = ["triton_flash_attention", "TritonFlashAttentionFunction", "launch_config"]
