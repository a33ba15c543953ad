"""Triton FlashAttention with T5's relative position bias looked up inside the kernel (chapter 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim, NB num_buckets, L = Tq + Tk - 1 relative
positions; a program owns BLOCK_M query rows (or BLOCK_N keys) of one (batch, head).

The algorithm of `t5edu.t5_flash.t5_flash_attention`, as kernels. T5's bias depends on `j - i`
alone, so before the launch the `(NB, H)` table is gathered into `bias_rel`, the `(H, L)` bias of
every relative position (HF's buckets, computed once per position by
`t5edu.relative_position.relative_position_bucket`); the kernels read the tile's bias at
`bias_rel[h, j - i + Tq - 1]`. The dK/dV kernel, which visits every tile once, atomically adds
each tile's dS into an `(H, L)` float32 `d_rel`; one `index_add_` then sums `d_rel` by bucket
into the table's gradient. Everything beyond q, k, v, out and their gradients is O(H (Tq + Tk)).

Kernels: `t5_fwd_kernel` (forward, one program per query block), `t5_bwd_dkdv_kernel` (dK, dV
and d_rel, one program per key block), `t5_bwd_dq_kernel` (dQ, one program per query block); the
same FlashAttention-2 loops as `t5edu.kernels.flash_fwd` / `flash_bwd` (Dao 2023, Alg. 1-2).
The float32 atomics make d_rel's summation order, hence its last bits, vary between GPU runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from t5edu.attention import check_scale_and_dropout
from t5edu.kernels.triton_attention import check_triton_inputs, launch_config
from t5edu.t5_flash import check_t5_flash_inputs, relative_buckets, t5_flash_attention

# Triton fixes interpreted vs compiled when a kernel is defined (at this module's import).
INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def t5_score_tile(
    q, k, offs_m, offs_n, scale, rel_base, stride_rl, mask_ptrs, q_len, k_len,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """s = scale q k^T + bias_rel[h, j - i + Tq - 1], -inf where hidden: (BLOCK_M, BLOCK_N) fp32.

    `rel_base` points at row h of bias_rel. Shared by the three kernels, so the backward
    recomputes exactly the forward's scores. The bias is added before masking (as the
    reference), so a hidden key is -inf whatever its bias.
    """
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # fp32 accumulation
    keep = (offs_m[:, None] < q_len) & (offs_n[None, :] < k_len)  # inside the matrix
    rel = offs_n[None, :] - offs_m[:, None] + (q_len - 1)  # in [0, L) wherever keep holds
    s += tl.load(rel_base + rel * stride_rl, mask=keep, other=0.0)
    if HAS_MASK:
        attend = tl.load(mask_ptrs, mask=offs_n < k_len, other=0) != 0
        keep = keep & attend[None, :]
    if CAUSAL:  # bottom-right: query i sees key j when j <= i + Tk - Tq
        keep = keep & (offs_n[None, :] <= offs_m[:, None] + (k_len - q_len))
    return tl.where(keep, s, float("-inf"))


@triton.jit
def t5_fwd_kernel(
    Q, K, V, Rel, Mask, Out, Lse,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_rh, stride_rl, stride_mb,
    stride_ob, stride_oh, stride_om, stride_od,
    num_heads, q_len, k_len, head_dim, scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Out = softmax(scale q k^T + bias, masked) v; Lse = row log-sum-exp (+inf: no key seen)."""
    pid_m = tl.program_id(0)  # which block of query rows
    pid_bh = tl.program_id(1).to(tl.int64)  # which (batch, head); 64-bit offsets below
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_in = (offs_m[:, None] < q_len) & (offs_d[None, :] < head_dim)
    q_off = offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(Q + b * stride_qb + h * stride_qh + q_off, mask=q_in, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    rel_base = Rel + h * stride_rh
    mask_base = Mask + b * stride_mb

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp(s - m)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum of exp(s - m) v
    end_n = k_len
    if CAUSAL:  # keys past the last row's diagonal are hidden from the whole block
        end_n = tl.minimum(k_len, (pid_m + 1) * BLOCK_M + k_len - q_len)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_in = (offs_n[:, None] < k_len) & (offs_d[None, :] < head_dim)
        k = tl.load(
            k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
            mask=kv_in,
            other=0.0,
        )
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
            mask=kv_in,
            other=0.0,
        )
        s = t5_score_tile(
            q, k, offs_m, offs_n, scale, rel_base, stride_rl, mask_base + offs_n, q_len, k_len,
            HAS_MASK, CAUSAL, PRECISION,
        )  # fmt: skip
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no visible key yet: no NaN
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)  # rescales the old sums when the max grows
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    seen = l_i > 0
    l_safe = tl.where(seen, l_i, 1.0)
    out = acc / l_safe[:, None]
    lse = tl.where(seen, m_i + tl.log(l_safe), float("inf"))
    o_off = offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(Out + b * stride_ob + h * stride_oh + o_off, out.to(Out.dtype.element_ty), mask=q_in)
    tl.store(Lse + pid_bh * q_len + offs_m, lse, mask=offs_m < q_len)


@triton.jit
def t5_bwd_dkdv_kernel(
    Q, K, V, Rel, Mask, DO, Lse, Delta, DK, DV, DRel,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_rh, stride_rl, stride_mb,
    stride_ob, stride_oh, stride_om, stride_od,
    num_heads, q_len, k_len, head_dim, scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, REL_GRAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dK, dV of one key block (DK, DV contiguous (B, H, Tk, Dh)); with REL_GRAD, atomically adds
    every tile's dS into DRel[h, j - i + Tq - 1] (contiguous (H, L) float32, zero-initialised).
    DO has strides stride_o*; Lse and Delta are contiguous (B, H, Tq) float32."""
    pid_n = tl.program_id(0)  # which key block
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_in = (offs_n[:, None] < k_len) & (offs_d[None, :] < head_dim)
    k_off = offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    k = tl.load(K + b * stride_kb + h * stride_kh + k_off, mask=kv_in, other=0.0)
    v_off = offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    v = tl.load(V + b * stride_vb + h * stride_vh + v_off, mask=kv_in, other=0.0)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_ob + h * stride_oh
    rel_base = Rel + h * stride_rh
    drel_base = DRel + h * (q_len + k_len - 1)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    start_m = 0
    if CAUSAL:  # query rows above this key block's diagonal never see it
        start_m = tl.maximum(pid_n * BLOCK_N - (k_len - q_len), 0) // BLOCK_M * BLOCK_M
    for m0 in range(start_m, q_len, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        q_in = (offs_m[:, None] < q_len) & (offs_d[None, :] < head_dim)
        q_off = offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        q = tl.load(q_base + q_off, mask=q_in, other=0.0)
        do_off = offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
        do = tl.load(do_base + do_off, mask=q_in, other=0.0)
        lse = tl.load(Lse + pid_bh * q_len + offs_m, mask=offs_m < q_len, other=float("inf"))
        delta = tl.load(Delta + pid_bh * q_len + offs_m, mask=offs_m < q_len, other=0.0)
        s = t5_score_tile(
            q, k, offs_m, offs_n, scale, rel_base, stride_rl, Mask + b * stride_mb + offs_n,
            q_len, k_len, HAS_MASK, CAUSAL, PRECISION,
        )  # fmt: skip
        p = tl.exp(s - lse[:, None])  # the forward's probabilities; 0 where hidden
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
        if REL_GRAD:
            inside = (offs_m[:, None] < q_len) & (offs_n[None, :] < k_len)
            rel = offs_n[None, :] - offs_m[:, None] + (q_len - 1)
            tl.atomic_add(drel_base + rel, ds, mask=inside)  # dBias[h, i, j] -> its distance
    out_off = pid_bh * k_len * head_dim + offs_n[:, None] * head_dim + offs_d[None, :]
    tl.store(DK + out_off, (dk * scale).to(DK.dtype.element_ty), mask=kv_in)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=kv_in)


@triton.jit
def t5_bwd_dq_kernel(
    Q, K, V, Rel, Mask, DO, Lse, Delta, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_rh, stride_rl, stride_mb,
    stride_ob, stride_oh, stride_om, stride_od,
    num_heads, q_len, k_len, head_dim, scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dQ = scale dS K of one query block; DQ is contiguous (B, H, Tq, Dh)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_in = (offs_m[:, None] < q_len) & (offs_d[None, :] < head_dim)
    q_off = offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(Q + b * stride_qb + h * stride_qh + q_off, mask=q_in, other=0.0)
    do_off = offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    do = tl.load(DO + b * stride_ob + h * stride_oh + do_off, mask=q_in, other=0.0)
    lse = tl.load(Lse + pid_bh * q_len + offs_m, mask=offs_m < q_len, other=float("inf"))
    delta = tl.load(Delta + pid_bh * q_len + offs_m, mask=offs_m < q_len, other=0.0)
    rel_base = Rel + h * stride_rh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    end_n = k_len
    if CAUSAL:
        end_n = tl.minimum(k_len, (pid_m + 1) * BLOCK_M + k_len - q_len)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_in = (offs_n[:, None] < k_len) & (offs_d[None, :] < head_dim)
        k_off = offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        k = tl.load(K + b * stride_kb + h * stride_kh + k_off, mask=kv_in, other=0.0)
        v_off = offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        v = tl.load(V + b * stride_vb + h * stride_vh + v_off, mask=kv_in, other=0.0)
        s = t5_score_tile(
            q, k, offs_m, offs_n, scale, rel_base, stride_rl, Mask + b * stride_mb + offs_n,
            q_len, k_len, HAS_MASK, CAUSAL, PRECISION,
        )  # fmt: skip
        p = tl.exp(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq_off = pid_bh * q_len * head_dim + offs_m[:, None] * head_dim + offs_d[None, :]
    tl.store(DQ + dq_off, (dq * scale).to(DQ.dtype.element_ty), mask=q_in)


def _common(q, k, v, rel, mask):
    """Strides shared by the three launches (mask: a dummy pointer and stride 0 when None)."""
    mask_t, mask_s = (q, 0) if mask is None else (mask, mask.stride(0))
    strides = (*q.stride(), *k.stride(), *v.stride(), *rel.stride(), mask_s)
    return mask_t, strides


def _forward(q, k, v, rel, mask, causal, scale, cfg):
    b, h, q_len, d = q.shape
    k_len = k.shape[2]
    out = torch.empty((b, h, q_len, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, q_len), dtype=torch.float32, device=q.device)
    mask_t, strides = _common(q, k, v, rel, mask)
    t5_fwd_kernel[(triton.cdiv(q_len, cfg["BLOCK_M"]), b * h)](
        q, k, v, rel, mask_t, out, lse, *strides, *out.stride(),
        h, q_len, k_len, d, scale, HAS_MASK=mask is not None, CAUSAL=causal, **cfg,
    )  # fmt: skip
    return out, lse


def _backward(do, q, k, v, out, lse, rel, mask, causal, scale, cfg, rel_grad):
    b, h, q_len, d = q.shape
    k_len = k.shape[2]
    do = do.contiguous()
    delta = (do.float() * out.float()).sum(dim=-1)  # (B, H, Tq), FA2's D_i
    dq = torch.empty((b, h, q_len, d), dtype=q.dtype, device=q.device)
    dk = torch.empty((b, h, k_len, d), dtype=k.dtype, device=q.device)
    dv = torch.empty((b, h, k_len, d), dtype=v.dtype, device=q.device)
    drel = torch.zeros((h, q_len + k_len - 1), dtype=torch.float32, device=q.device)
    mask_t, strides = _common(q, k, v, rel, mask)
    dims = (h, q_len, k_len, d, scale)
    flags = dict(HAS_MASK=mask is not None, CAUSAL=causal, **cfg)
    t5_bwd_dkdv_kernel[(triton.cdiv(k_len, cfg["BLOCK_N"]), b * h)](
        q, k, v, rel, mask_t, do, lse, delta, dk, dv, drel, *strides, *do.stride(), *dims,
        REL_GRAD=rel_grad, **flags,
    )  # fmt: skip
    t5_bwd_dq_kernel[(triton.cdiv(q_len, cfg["BLOCK_M"]), b * h)](
        q, k, v, rel, mask_t, do, lse, delta, dq, *strides, *do.stride(), *dims, **flags,
    )  # fmt: skip
    return dq, dk, dv, (drel if rel_grad else None)


def gather_bias_rel(table: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
    """`(H, L)` contiguous float32 bias of every relative position: `table[buckets].T`."""
    return table.t().float()[:, buckets].contiguous()


class TritonT5FlashAttentionFunction(torch.autograd.Function):
    """Forward and backward kernels; saves q, k, v, out, lse, the table and the buckets."""

    @staticmethod
    def forward(ctx, q, k, v, table, buckets, mask, causal, scale, cfg):
        out, lse = _forward(q, k, v, gather_bias_rel(table, buckets), mask, causal, scale, cfg)
        ctx.save_for_backward(q, k, v, out, lse, table, buckets, mask)
        ctx.config = (causal, scale, cfg)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, _dlse):
        q, k, v, out, lse, table, buckets, mask = ctx.saved_tensors
        causal, scale, cfg = ctx.config
        rel = gather_bias_rel(table, buckets)
        dq, dk, dv, drel = _backward(
            do, q, k, v, out, lse, rel, mask, causal, scale, cfg, ctx.needs_input_grad[3]
        )
        dtable = None
        if drel is not None:  # sum the distances' gradients by bucket: (H, L) -> (H, NB)
            dtable_t = torch.zeros(table.shape[::-1], dtype=torch.float32, device=q.device)
            dtable = dtable_t.index_add_(1, buckets, drel).t().contiguous().to(table.dtype)
        return dq, dk, dv, dtable, None, None, None, None, None


def triton_t5_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias_table: torch.Tensor,
    *,
    bidirectional: bool,
    num_buckets: int,
    max_distance: int,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    offset: int = 0,
    scale: float | None = 1.0,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """`t5edu.t5_flash.t5_flash_attention` as Triton kernels: T5's bias from its table in-kernel.

    Args, result and the no-visible-key rule (zeros, zero gradients) as `t5_flash_attention`:
    q `(batch, heads, q_len, head_dim)`, k, v `(batch, heads, k_len, head_dim)`, `bias_table`
    `(num_buckets, heads)` (RelativePositionBias's weight, gets a gradient), HF padding mask
    `(batch, k_len)`, bottom-right causal, queries at positions `offset + i`, scale default 1.0.
    fp16/bf16/fp32 inputs (fp32 matmuls in IEEE fp32, not TF32); scores, softmax, accumulators
    and the bias in fp32. `block_m`/`block_n` override the tile sizes (powers of 2, >= 16).

    Raises:
        ValueError: for what `t5_flash_attention` rejects, an unsupported dtype, head_dim > 128,
            or block sizes that are not powers of two >= 16.
        RuntimeError: tensors not on CUDA while Triton's interpreter is off.

    Source: T5's relative position bias (Raffel et al. 2020, sec. 2.1) inside FlashAttention-2
    (Dao 2023, Alg. 1-2; dK/dV and dQ in two passes), the bias's gradient accumulated per
    relative position with atomics, as in the unmerged FlashAttention pull request for T5's
    bias with linear memory. Taught in chapter 9.
    """
    check_t5_flash_inputs(
        q, k, v, bias_table, bidirectional, num_buckets, max_distance, attention_mask, offset,
        1, 1,
    )  # fmt: skip
    check_triton_inputs(q, k, v)
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or size < 16 or size & (size - 1)
        ):
            raise ValueError(f"{name} must be a power of two >= 16; got {name}={size!r}")
    check_scale_and_dropout(scale, 0.0)
    q_len, k_len = q.shape[2], k.shape[2]
    kw = dict(bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
    if q_len == 0 or k_len == 0:  # an empty grid cannot launch; nothing to compute anyway
        return t5_flash_attention(q, k, v, bias_table, attention_mask=attention_mask,
                                  causal=causal, offset=offset, scale=scale, **kw)  # fmt: skip
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    buckets = relative_buckets(q_len, k_len, offset, device=q.device, **kw)
    mask = None if attention_mask is None else attention_mask.to(torch.int8).contiguous()
    cfg = launch_config(q.dtype, q.shape[-1], block_m, block_n)
    out, _ = TritonT5FlashAttentionFunction.apply(
        q, k, v, bias_table, buckets, mask, causal, scale, cfg
    )
    return out


__all__ = ["triton_t5_flash_attention", "TritonT5FlashAttentionFunction"]
