"""FlashAttention in plain PyTorch: tiled online-softmax forward, recomputing backward (chapter 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim, bq/bk query/key block (tile) sizes.

The full `(Tq, Tk)` score matrix is never built: the forward visits `(bq, bk)` tiles and keeps,
per query row, a running max `m`, a running sum `l` and an unnormalised output `acc` (the online
softmax of Milakov & Gimelshein 2018). Only `out` and the log-sum-exp `lse = m + log(l)` are
saved; the backward recomputes every tile's probabilities `exp(s - lse)` from them (Dao et al.
2022, FlashAttention, Alg. 1-2; the loop order is FlashAttention-2's, Dao 2023, Alg. 1-2).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from t5edu.attention import check_attention_inputs

# Tile sizes: a (B, H, 128, 128) fp32 tile is 64 KiB per head, small enough to stay in cache on a
# CPU and large enough that the Python loop (Tq/bq * Tk/bk iterations) is not the bottleneck.
BLOCK_Q = 128
BLOCK_K = 128


def check_no_dropout(dropout_p: float, backend: str) -> None:
    """Raise ValueError for `dropout_p != 0` in a backend that implements no attention dropout."""
    if dropout_p != 0.0:
        raise ValueError(
            f"dropout_p must be 0.0 for the {backend!r} backend (it has no attention dropout; "
            f"use backend='sdpa' or 'naive' to train with attention dropout); got {dropout_p}"
        )


def as_4d(bias: torch.Tensor | None) -> torch.Tensor | None:
    """View a bias broadcastable to (B, H, Tq, Tk) as 4-D, adding leading size-1 dims."""
    if bias is None:
        return None
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))  # (B|1, H|1, Tq|1, Tk|1)


def bias_tile(bias4: torch.Tensor, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
    """The (…, bq, bk) tile of a 4-D bias; a broadcast (size-1) dim stays size 1."""
    rows = slice(i0, i1) if bias4.shape[2] > 1 else slice(None)
    cols = slice(j0, j1) if bias4.shape[3] > 1 else slice(None)
    return bias4[:, :, rows, cols]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for fp16/bf16/fp32 inputs (as the reference's softmax); float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def key_end(i1: int, q_len: int, k_len: int, causal: bool) -> int:
    """One past the last key any query row < i1 may see (bottom-right causal alignment)."""
    if not causal:
        return k_len
    return max(0, min(k_len, i1 + k_len - q_len))


def key_start(j0: int, q_len: int, k_len: int, causal: bool) -> int:
    """The first query row that may see key j0; earlier query rows skip the key block."""
    return max(0, j0 - (k_len - q_len)) if causal else 0


def tile_scores(q_i, k_j, bias_ij, mask, causal, scale, i0, j0, q_len, k_len) -> torch.Tensor:
    """s = scale * q_i k_j^T + bias_ij, -inf where hidden; `(B, H, bq, bk)` in the accumulation
    dtype.

    `bias_ij` is the tile's bias (broadcastable to the tile) or None; `mask` is the bool `(B, Tk)`
    padding mask (or None). The bias is added before masking, so a hidden key is -inf whatever
    its bias. The causal test is j <= i + Tk - Tq.
    """
    i1, j1 = i0 + q_i.shape[2], j0 + k_j.shape[2]
    acc = accumulation_dtype(q_i.dtype)
    s = torch.matmul(q_i, k_j.transpose(-1, -2)).to(acc)  # (B, H, bq, bk)
    if scale != 1.0:  # T5's scale is 1.0: skip a pass over the tile (x * 1.0 is x exactly)
        s = s * scale
    if bias_ij is not None:
        s = s + bias_ij.to(acc)
    keep = None
    if mask is not None:
        keep = mask[:, None, None, j0:j1]  # (B, 1, 1, bk)
    if causal and j1 - 1 > i0 + (k_len - q_len):  # only diagonal tiles need the triangle
        rows = torch.arange(i0, i1, device=q_i.device)[:, None]
        cols = torch.arange(j0, j1, device=q_i.device)[None, :]
        tri = cols <= rows + (k_len - q_len)  # (bq, bk)
        keep = tri if keep is None else keep & tri
    return s if keep is None else s.masked_fill(~keep, float("-inf"))


def flash_forward(q, k, v, bias_at, mask, causal, scale, block_q, block_k):
    """Tiled forward: returns `out (B, H, Tq, Dh)` in q's dtype and `lse (B, H, Tq)` in the
    accumulation dtype.

    `bias_at(i0, i1, j0, j1)` gives the bias of the tile of query rows i0..i1 and keys j0..j1
    (a slice of a materialised bias here, a gather from T5's bucket table in `t5edu.t5_flash`),
    or `bias_at` is None. Rows with no visible key get out = 0 and lse = +inf, so
    exp(s - lse) = 0 in the backward.
    """
    b, h, q_len, d = q.shape
    k_len = k.shape[2]
    f = dict(dtype=accumulation_dtype(q.dtype), device=q.device)
    out = torch.empty_like(q)
    lse = torch.empty(b, h, q_len, **f)
    for i0 in range(0, q_len, block_q):  # FA2: the outer loop is over query blocks
        i1 = min(i0 + block_q, q_len)
        q_i = q[:, :, i0:i1]
        m = torch.full((b, h, i1 - i0), float("-inf"), **f)  # running max
        l = torch.zeros(b, h, i1 - i0, **f)  # running sum of exp(s - m)
        acc = torch.zeros(b, h, i1 - i0, d, **f)  # running sum of exp(s - m) v
        for j0 in range(0, key_end(i1, q_len, k_len, causal), block_k):
            j1 = min(j0 + block_k, k_len)
            bias_ij = None if bias_at is None else bias_at(i0, i1, j0, j1)
            s = tile_scores(q_i, k[:, :, j0:j1], bias_ij, mask, causal, scale, i0, j0, q_len, k_len)
            m_new = torch.maximum(m, s.amax(dim=-1))
            m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # no key seen yet: avoid NaN
            p = torch.exp(s - m_safe[..., None])  # (B, H, bq, bk)
            alpha = torch.exp(m - m_safe)  # rescales the old sums when the max grows
            l = alpha * l + p.sum(dim=-1)
            acc = alpha[..., None] * acc + torch.matmul(p, v[:, :, j0:j1].to(p.dtype))
            m = m_new
        seen = l > 0
        out[:, :, i0:i1] = (acc / torch.where(seen, l, 1.0)[..., None]).to(q.dtype)
        lse[:, :, i0:i1] = torch.where(seen, m + torch.log(l), float("inf"))
    return out, lse


def flash_backward(do, q, k, v, out, lse, bias_at, add_bias_grad, mask, causal, scale, block_q,
                   block_k):  # fmt: skip
    """Recomputing backward: grads of q, k, v in the accumulation dtype.

    With P = exp(S - lse) recomputed per tile and D = rowsum(dO * O):
    dV = P^T dO, dP = dO V^T, dS = P * (dP - D), dQ = scale dS K, dK = scale dS^T Q, and the
    bias's gradient is dS itself: each tile's dS goes to `add_bias_grad(i0, i1, j0, j1, ds)`
    when given (the bias's owner reduces it to its own shape or scatters it to its table).
    """
    b, h, q_len, _ = q.shape
    k_len = k.shape[2]
    acc = accumulation_dtype(q.dtype)
    delta = torch.empty(b, h, q_len, dtype=acc, device=q.device)  # FA2's D_i = rowsum(dO * O)
    for i0 in range(0, q_len, block_q):  # by query block: no (B, H, Tq, Dh) temporary
        i1 = min(i0 + block_q, q_len)
        delta[:, :, i0:i1] = (do[:, :, i0:i1].to(acc) * out[:, :, i0:i1].to(acc)).sum(dim=-1)
    dq = torch.zeros(q.shape, dtype=acc, device=q.device)
    dk = torch.zeros(k.shape, dtype=acc, device=q.device)
    dv = torch.zeros(v.shape, dtype=acc, device=q.device)
    for j0 in range(0, k_len, block_k):  # FA2 backward: outer loop over key blocks
        j1 = min(j0 + block_k, k_len)
        k_j, v_j = k[:, :, j0:j1], v[:, :, j0:j1].to(acc)
        dk_j, dv_j = torch.zeros_like(dk[:, :, j0:j1]), torch.zeros_like(dv[:, :, j0:j1])
        for i0 in range(key_start(j0, q_len, k_len, causal) // block_q * block_q, q_len, block_q):
            i1 = min(i0 + block_q, q_len)
            q_i, do_i = q[:, :, i0:i1], do[:, :, i0:i1].to(acc)
            bias_ij = None if bias_at is None else bias_at(i0, i1, j0, j1)
            s = tile_scores(q_i, k_j, bias_ij, mask, causal, scale, i0, j0, q_len, k_len)
            p = torch.exp(s - lse[:, :, i0:i1, None])  # the forward's probabilities, exactly
            dv_j += torch.matmul(p.transpose(-1, -2), do_i)
            dp = torch.matmul(do_i, v_j.transpose(-1, -2))  # (B, H, bq, bk)
            ds = p * (dp - delta[:, :, i0:i1, None])
            dq[:, :, i0:i1] += torch.matmul(ds, k_j.to(acc)) * scale
            dk_j += torch.matmul(ds.transpose(-1, -2), q_i.to(acc)) * scale
            if add_bias_grad is not None:
                add_bias_grad(i0, i1, j0, j1, ds)
        dk[:, :, j0:j1], dv[:, :, j0:j1] = dk_j, dv_j
    return dq, dk, dv


def _materialised_bias(bias4: torch.Tensor | None):
    """`bias_at` for a 4-D bias: a view of its tile (None without a bias)."""
    if bias4 is None:
        return None
    return lambda i0, i1, j0, j1: bias_tile(bias4, i0, i1, j0, j1)


def _bias_grad_into(dbias: torch.Tensor):
    """`add_bias_grad` that sums each tile's dS over the bias's broadcast dims into `dbias`."""

    def add(i0, i1, j0, j1, ds):
        dims = [a for a in range(4) if dbias.shape[a] == 1 and ds.shape[a] > 1]
        tile = ds.sum(dim=dims, keepdim=True) if dims else ds
        bias_tile(dbias, i0, i1, j0, j1).add_(tile)  # a view: adds in place

    return add


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, out and lse (no O(Tq Tk) tensor), recomputes in backward."""

    @staticmethod
    def forward(ctx, q, k, v, bias, mask, causal, scale, block_q, block_k):
        bias_at = _materialised_bias(as_4d(bias))
        out, lse = flash_forward(q, k, v, bias_at, mask, causal, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse, bias, mask)
        ctx.config = (causal, scale, block_q, block_k)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, do, _dlse):
        q, k, v, out, lse, bias, mask = ctx.saved_tensors
        causal, scale, block_q, block_k = ctx.config
        bias4, dbias, add_grad = as_4d(bias), None, None
        if bias is not None and ctx.needs_input_grad[3]:
            dbias = torch.zeros(bias4.shape, dtype=accumulation_dtype(q.dtype), device=q.device)
            add_grad = _bias_grad_into(dbias)
        dq, dk, dv = flash_backward(
            do, q, k, v, out, lse, _materialised_bias(bias4), add_grad, mask, causal, scale,
            block_q, block_k,
        )  # fmt: skip
        if dbias is not None:
            dbias = dbias.reshape(bias.shape).to(bias.dtype)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias, None, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
    return_lse: bool = False,
):
    """FlashAttention (tiled, online softmax, recomputing backward) in plain PyTorch.

    Args:
        q: `(batch, heads, q_len, head_dim)`; k, v: `(batch, heads, k_len, head_dim)`, any float
            dtype (tiles are computed in float32).
        bias: additive, broadcastable to `(batch, heads, q_len, k_len)`, e.g. T5's relative bias
            `(1, heads, q_len, k_len)` or ALiBi; gets a gradient reduced to its own shape.
        attention_mask: `(batch, k_len)` bool or integer 0/1, 1/True for keys to attend to (HF).
        causal: hide future keys, aligned bottom-right when `q_len != k_len`.
        scale: multiplies q k^T; default `head_dim ** -0.5` (T5 passes 1.0).
        dropout_p: must be 0.0: this implementation has no attention dropout.
        block_q, block_k: tile sizes (any positive ints; lengths need not be multiples).
        return_lse: also return the log-sum-exp `(batch, heads, q_len)` in float32 (float64 for
            float64 inputs; +inf for rows
            with no visible key).

    Returns:
        `(batch, heads, q_len, head_dim)` in q's dtype, equal to
        `t5edu.attention.scaled_dot_product_attention` with the same arguments; a query that sees
        no key (all hidden, or a -inf bias at every key) gets zeros and zero gradients (its row
        max stays -inf, so l = 0 and lse = +inf). With `return_lse`, `(out, lse)`.

    Raises:
        ValueError: for inputs `check_attention_inputs` rejects, mask values other than 0/1,
            `dropout_p != 0`, or non-positive block sizes.

    Source: Dao et al. 2022 (FlashAttention) Alg. 1-2 with FlashAttention-2's loop order (Dao
    2023); online softmax from Milakov & Gimelshein 2018. Taught in chapter 9.
    """
    check_attention_inputs(q, k, v, bias, attention_mask)
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int; got {size!r}")
    return flash_attention_unchecked(
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale,
        dropout_p=dropout_p, block_q=block_q, block_k=block_k, return_lse=return_lse,
    )  # fmt: skip


def flash_attention_unchecked(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0,
    block_q=BLOCK_Q, block_k=BLOCK_K, return_lse=False,
):  # fmt: skip
    """`flash_attention` without its input checks, for callers that checked at their boundary
    (a T5 model, once per forward). Still refuses `dropout_p != 0` (a mode, not an input)."""
    check_no_dropout(dropout_p, "flash")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    mask = None if attention_mask is None else attention_mask.bool()
    out, lse = FlashAttentionFunction.apply(q, k, v, bias, mask, causal, scale, block_q, block_k)
    return (out, lse) if return_lse else out


__all__ = [
    "flash_attention",
    "flash_attention_unchecked",
    "FlashAttentionFunction",
    "BLOCK_Q",
    "BLOCK_K",
]
