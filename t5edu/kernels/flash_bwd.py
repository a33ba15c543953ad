"""Triton backward kernels of FlashAttention with a learnable additive bias (chapter 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim; BLOCK_M query rows, BLOCK_N keys per tile.

Both kernels recompute each tile's probabilities P = exp(S - lse) from the saved log-sum-exp and,
with D = rowsum(dO * O) precomputed, dS = P * (dO V^T - D). Two passes, no atomics:
- `flash_bwd_dkdv_kernel`: a program owns a key block and loops over query blocks, accumulating
  dK = scale dS^T Q and dV = P^T dO in registers.
- `flash_bwd_dq_kernel`: a program owns a query block and loops over key blocks, accumulating
  dQ = scale dS K; it also writes dBias = dS. A bias shared over batch or heads receives the sum
  of several (batch, head) slices: one program loops over all of them, so it alone owns its
  dBias tiles and adds into them without atomics (deterministic).
"""

import triton
import triton.language as tl

from t5edu.kernels.flash_fwd import score_tile


@triton.jit
def flash_bwd_dkdv_kernel(
    Q, K, V, Bias, Mask, DO, Lse, Delta, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_bb, stride_bh, stride_bm, stride_bn,
    stride_mb,
    stride_ob, stride_oh, stride_om, stride_od,
    num_heads, q_len, k_len, head_dim, scale,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dK and dV of one key block; DK and DV are contiguous (B, H, Tk, Dh), DO has strides
    stride_o*; Lse and Delta are contiguous (B, H, Tq) float32."""
    pid_n = tl.program_id(0)  # which key block
    pid_bh = tl.program_id(1).to(tl.int64)  # 64-bit: offsets can pass 2**31 elements
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_in = (offs_n[:, None] < k_len) & (offs_d[None, :] < head_dim)
    k_ptrs = (
        K
        + b * stride_kb
        + h * stride_kh
        + offs_n[:, None] * stride_kn
        + offs_d[None, :] * stride_kd
    )
    v_ptrs = (
        V
        + b * stride_vb
        + h * stride_vh
        + offs_n[:, None] * stride_vn
        + offs_d[None, :] * stride_vd
    )
    k = tl.load(k_ptrs, mask=kv_in, other=0.0)  # (BLOCK_N, BLOCK_D), stays in registers
    v = tl.load(v_ptrs, mask=kv_in, other=0.0)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_ob + h * stride_oh
    bias_base = Bias + b * stride_bb + h * stride_bh + offs_n[None, :] * stride_bn
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    start_m = 0
    if CAUSAL:  # query rows above this key block's diagonal never see it
        start_m = tl.maximum(pid_n * BLOCK_N - (k_len - q_len), 0) // BLOCK_M * BLOCK_M
    for m0 in range(start_m, q_len, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        q_in = (offs_m[:, None] < q_len) & (offs_d[None, :] < head_dim)
        q = tl.load(
            q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=q_in, other=0.0
        )
        do = tl.load(
            do_base + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
            mask=q_in,
            other=0.0,
        )
        lse = tl.load(Lse + pid_bh * q_len + offs_m, mask=offs_m < q_len, other=float("inf"))
        delta = tl.load(Delta + pid_bh * q_len + offs_m, mask=offs_m < q_len, other=0.0)
        s = score_tile(
            q, k, offs_m, offs_n, scale, bias_base + offs_m[:, None] * stride_bm,
            Mask + b * stride_mb + offs_n, q_len, k_len, HAS_BIAS, HAS_MASK, CAUSAL, PRECISION,
        )  # fmt: skip
        p = tl.exp(s - lse[:, None])  # the forward's probabilities; 0 where hidden
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    out_off = pid_bh * k_len * head_dim + offs_n[:, None] * head_dim + offs_d[None, :]
    tl.store(DK + out_off, (dk * scale).to(DK.dtype.element_ty), mask=kv_in)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=kv_in)


@triton.jit
def flash_bwd_dq_kernel(
    Q, K, V, Bias, Mask, DO, Lse, Delta, DQ, DBias,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_bb, stride_bh, stride_bm, stride_bn,
    stride_mb,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_gb, stride_gh, stride_gm, stride_gn,
    num_heads, q_len, k_len, head_dim, scale,
    bias_heads, batch_per_group, heads_per_group,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BIAS_GRAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """dQ of one query block for every (batch, head) of one bias group, and that group's dBias.

    The grid's second axis enumerates bias groups (bias batch x bias heads; B*H groups of one
    slice each when there is no bias gradient). DBias is float32 (bias batch, bias heads, Tq, Tk)
    with strides stride_g*, zero-initialised; DQ is contiguous (B, H, Tq, Dh).
    """
    pid_m = tl.program_id(0)
    pid_g = tl.program_id(1).to(tl.int64)
    bb = pid_g // bias_heads  # this group's index in the bias's batch dim (0 if broadcast)
    hb = pid_g % bias_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_in = (offs_m[:, None] < q_len) & (offs_d[None, :] < head_dim)
    end_n = k_len
    if CAUSAL:
        end_n = tl.minimum(k_len, (pid_m + 1) * BLOCK_M + k_len - q_len)
    for r in range(0, batch_per_group * heads_per_group):  # the slices sharing this dBias
        b = bb + r // heads_per_group  # one of bb, r // heads_per_group is always 0
        h = hb + r % heads_per_group
        bh = b * num_heads + h
        q_off = offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        q = tl.load(Q + b * stride_qb + h * stride_qh + q_off, mask=q_in, other=0.0)
        do_off = offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
        do = tl.load(DO + b * stride_ob + h * stride_oh + do_off, mask=q_in, other=0.0)
        lse = tl.load(Lse + bh * q_len + offs_m, mask=offs_m < q_len, other=float("inf"))
        delta = tl.load(Delta + bh * q_len + offs_m, mask=offs_m < q_len, other=0.0)
        bias_base = Bias + b * stride_bb + h * stride_bh + offs_m[:, None] * stride_bm
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start_n in range(0, end_n, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kv_in = (offs_n[:, None] < k_len) & (offs_d[None, :] < head_dim)
            k_off = offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
            k = tl.load(K + b * stride_kb + h * stride_kh + k_off, mask=kv_in, other=0.0)
            v_off = offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
            v = tl.load(V + b * stride_vb + h * stride_vh + v_off, mask=kv_in, other=0.0)
            s = score_tile(
                q, k, offs_m, offs_n, scale, bias_base + offs_n[None, :] * stride_bn,
                Mask + b * stride_mb + offs_n, q_len, k_len, HAS_BIAS, HAS_MASK, CAUSAL,
                PRECISION,
            )  # fmt: skip
            p = tl.exp(s - lse[:, None])
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])  # (BLOCK_M, BLOCK_N) = dBias of this tile
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
            if BIAS_GRAD:
                g_ptrs = DBias + bb * stride_gb + hb * stride_gh + offs_m[:, None] * stride_gm
                g_ptrs = g_ptrs + offs_n[None, :] * stride_gn
                g_in = (offs_m[:, None] < q_len) & (offs_n[None, :] < k_len)
                tl.store(g_ptrs, tl.load(g_ptrs, mask=g_in, other=0.0) + ds, mask=g_in)
                tl.debug_barrier()  # the next slice's read of this tile must see the write
        dq_off = bh * q_len * head_dim + offs_m[:, None] * head_dim + offs_d[None, :]
        tl.store(DQ + dq_off, (dq * scale).to(DQ.dtype.element_ty), mask=q_in)
