"""Triton forward kernel of FlashAttention with an additive bias (chapter 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim; a program owns BLOCK_M query rows of one
(batch, head) and walks over the keys BLOCK_N at a time; BLOCK_D is Dh rounded up to a power of 2.

Same algorithm as `t5edu.flash_attention.flash_forward`, one tile per loop step, but the loop over
query blocks becomes the launch grid: every (query block, batch, head) is its own program, and
the running max, sum and output stay in registers.
"""

import triton
import triton.language as tl


@triton.jit
def score_tile(
    q,
    k,
    offs_m,
    offs_n,
    scale,
    bias_ptrs,
    mask_ptrs,
    q_len,
    k_len,
    HAS_BIAS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """s = scale * q k^T + bias, -inf where the key is hidden: (BLOCK_M, BLOCK_N) float32.

    Shared by the forward and both backward kernels, so the backward recomputes exactly the
    forward's scores. `bias_ptrs` is the (BLOCK_M, BLOCK_N) tile of bias addresses (stride 0 on
    broadcast dims), `mask_ptrs` the BLOCK_N padding-mask entries of these keys.
    """
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # fp32 accumulation
    keep = (offs_m[:, None] < q_len) & (offs_n[None, :] < k_len)  # inside the matrix
    if HAS_BIAS:  # constexpr: a kernel without bias compiles without these loads
        s += tl.load(bias_ptrs, mask=keep, other=0.0).to(tl.float32)
    if HAS_MASK:
        attend = tl.load(mask_ptrs, mask=offs_n < k_len, other=0) != 0
        keep = keep & attend[None, :]
    if CAUSAL:  # bottom-right: query i sees key j when j <= i + Tk - Tq
        keep = keep & (offs_n[None, :] <= offs_m[:, None] + (k_len - q_len))
    return tl.where(keep, s, float("-inf"))


@triton.jit
def flash_fwd_kernel(
    Q, K, V, Bias, Mask, Out, Lse,
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
    """Out = softmax(scale q k^T + bias, masked) v and Lse = log-sum-exp of each row (+inf when
    the row sees no key, so that the backward's exp(s - lse) is 0 there)."""
    pid_m = tl.program_id(0)  # which block of query rows
    pid_bh = tl.program_id(1).to(tl.int64)  # which (batch, head); 64-bit offsets below
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ptrs = (
        Q
        + b * stride_qb
        + h * stride_qh
        + offs_m[:, None] * stride_qm
        + offs_d[None, :] * stride_qd
    )
    q_in = (offs_m[:, None] < q_len) & (offs_d[None, :] < head_dim)
    q = tl.load(q_ptrs, mask=q_in, other=0.0)  # (BLOCK_M, BLOCK_D), loaded once
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    bias_base = Bias + b * stride_bb + h * stride_bh + offs_m[:, None] * stride_bm
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
        kv_off = offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        k = tl.load(k_base + kv_off, mask=kv_in, other=0.0)  # (BLOCK_N, BLOCK_D)
        v_off = offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        v = tl.load(v_base + v_off, mask=kv_in, other=0.0)
        s = score_tile(
            q, k, offs_m, offs_n, scale, bias_base + offs_n[None, :] * stride_bn,
            mask_base + offs_n, q_len, k_len, HAS_BIAS, HAS_MASK, CAUSAL, PRECISION,
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
    o_ptrs = (
        Out
        + b * stride_ob
        + h * stride_oh
        + offs_m[:, None] * stride_om
        + offs_d[None, :] * stride_od
    )
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=q_in)
    tl.store(Lse + pid_bh * q_len + offs_m, lse, mask=offs_m < q_len)
