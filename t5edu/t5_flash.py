"""FlashAttention that computes T5's relative position bias inside the tiles (chapter 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim, NB num_buckets, bq/bk tile sizes.

`t5edu.flash_attention` takes T5's bias as a materialised `(1, H, Tq, Tk)` tensor and returns its
`(H, Tq, Tk)` gradient, so with a learned bias it still holds O(Tq Tk) memory. But the bias has
only `NB x H` parameters: `bias[h, i, j] = table[bucket(j - (offset + i)), h]`. So each tile
computes its buckets from the positions, gathers its bias from the table, and the backward
scatter-adds each tile's dS into a `(NB, H)` gradient:

    d table[n, h] = sum over b and all (i, j) with bucket(j - offset - i) = n of dS[b, h, i, j].

Nothing of size Tq x Tk is ever allocated: the forward saves q, k, v, the output, the
log-sum-exp and the `Tq + Tk - 1` bucket ids of every relative position the call meets.

Source: Raffel et al. 2020 (T5), sec. 2.1 (relative position bias, buckets as HF's
`T5Attention._relative_position_bucket`, reused from `t5edu.relative_position`); Dao 2023
(FlashAttention-2), Alg. 1 (forward) and Alg. 2 (backward); the bias-from-a-table idea as in the
unmerged FlashAttention pull request for T5's relative position bias with linear memory.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from t5edu.attention import check_attention_inputs, check_scale_and_dropout
from t5edu.flash_attention import accumulation_dtype, flash_backward, flash_forward
from t5edu.relative_position import check_bucket_settings, relative_position_bucket

# Same tiles as t5edu.flash_attention: 128 x 128 fp32 is 64 KiB per head, cache-sized on a CPU.
BLOCK_Q = 128
BLOCK_K = 128


def relative_buckets(
    q_len: int,
    k_len: int,
    offset: int,
    bidirectional: bool,
    num_buckets: int,
    max_distance: int,
    device,
) -> torch.Tensor:
    """int64 `(q_len + k_len - 1,)` bucket ids of every relative position the call meets.

    T5's bias depends on `j - (offset + i)` alone (query i sits at position `offset + i`, key j
    at position j), which runs from `-(offset + q_len - 1)` to `k_len - 1 - offset`: entry
    `j - i + q_len - 1` holds the bucket of query i and key j. O(Tq + Tk), not O(Tq Tk).
    """
    if q_len == 0 or k_len == 0:  # no (query, key) pair: no bucket
        return torch.zeros(0, dtype=torch.long, device=device)
    rel = torch.arange(-(offset + q_len - 1), k_len - offset, device=device)
    return relative_position_bucket(rel, bidirectional, num_buckets, max_distance)


def tile_buckets(buckets: torch.Tensor, i0: int, i1: int, j0: int, j1: int, q_len: int):
    """int64 `(i1 - i0, j1 - j0)` bucket ids of one tile, read from `relative_buckets`."""
    rows = torch.arange(i0, i1, device=buckets.device)[:, None]
    cols = torch.arange(j0, j1, device=buckets.device)[None, :]
    return buckets[cols - rows + (q_len - 1)]


def table_bias(table_t: torch.Tensor, buckets: torch.Tensor, q_len: int):
    """`bias_at` for `flash_forward`/`flash_backward`: a tile's `(H, bq, bk)` bias gathered from
    the `(H, NB)` transposed table by the tile's bucket ids (broadcast over the batch)."""
    return lambda i0, i1, j0, j1: table_t[:, tile_buckets(buckets, i0, i1, j0, j1, q_len)]


def table_grad_into(dtable_t: torch.Tensor, buckets: torch.Tensor, q_len: int):
    """`add_bias_grad` scattering a tile's dS into the `(H, NB)` table gradient: summed over the
    batch (the bias is shared by it), then added by bucket with one `index_add_`."""
    h = dtable_t.shape[0]

    def add(i0, i1, j0, j1, ds):
        idx = tile_buckets(buckets, i0, i1, j0, j1, q_len)
        dtable_t.index_add_(1, idx.reshape(-1), ds.sum(dim=0).reshape(h, -1))

    return add


class T5FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, out, lse, the table and the `(Tq + Tk - 1,)` buckets (no
    O(Tq Tk) tensor) and recomputes every tile in the backward."""

    @staticmethod
    def forward(ctx, q, k, v, table, buckets, mask, causal, scale, block_q, block_k):
        table_t = table.t().to(accumulation_dtype(q.dtype)).contiguous()  # (H, NB), tiny
        bias_at = table_bias(table_t, buckets, q.shape[2])
        out, lse = flash_forward(q, k, v, bias_at, mask, causal, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse, table, buckets, mask)
        ctx.config = (causal, scale, block_q, block_k)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, do, _dlse):
        q, k, v, out, lse, table, buckets, mask = ctx.saved_tensors
        causal, scale, block_q, block_k = ctx.config
        table_t = table.t().to(accumulation_dtype(q.dtype)).contiguous()
        q_len = q.shape[2]
        dtable_t = torch.zeros_like(table_t) if ctx.needs_input_grad[3] else None  # (H, NB)
        add_grad = None if dtable_t is None else table_grad_into(dtable_t, buckets, q_len)
        dq, dk, dv = flash_backward(
            do, q, k, v, out, lse, table_bias(table_t, buckets, q_len), add_grad, mask, causal,
            scale, block_q, block_k,
        )  # fmt: skip
        dtable = None if dtable_t is None else dtable_t.t().contiguous().to(table.dtype)
        return (
            dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dtable,
            None, None, None, None, None, None,
        )  # fmt: skip


def check_t5_flash_inputs(
    q, k, v, bias_table, bidirectional, num_buckets, max_distance, attention_mask, offset,
    block_q, block_k,
) -> None:  # fmt: skip
    """Raise ValueError, naming the argument, what was received and what was expected."""
    check_attention_inputs(q, k, v, None, attention_mask)
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional must be a bool; got {bidirectional!r}")
    check_bucket_settings(num_buckets, max_distance, bidirectional)
    heads = q.shape[1]
    if not isinstance(bias_table, torch.Tensor):
        raise ValueError(
            f"bias_table must be a ({num_buckets}, {heads}) (num_buckets, heads) tensor, the "
            f"weight of RelativePositionBias; got {type(bias_table).__name__}"
        )
    if bias_table.shape != (num_buckets, heads):
        hint = " (transposed?)" if bias_table.shape == (heads, num_buckets) else ""
        raise ValueError(
            f"bias_table must be (num_buckets, heads) = ({num_buckets}, {heads}), the weight of "
            f"RelativePositionBias / HF's relative_attention_bias; got shape "
            f"{tuple(bias_table.shape)}{hint}"
        )
    if not bias_table.dtype.is_floating_point:
        raise ValueError(
            f"bias_table must be a floating-point tensor; got dtype {bias_table.dtype}"
        )
    if bias_table.device != q.device:
        raise ValueError(
            f"bias_table must be on q's device {q.device}; got device {bias_table.device}"
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(
            f"offset must be an int >= 0 (the position of the first query, e.g. the KV cache "
            f"length); got offset={offset!r}"
        )
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int; got {name}={size!r}")


def t5_flash_attention(
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
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
) -> torch.Tensor:
    """FlashAttention with T5's relative position bias gathered from its table inside each tile.

    Equals `t5edu.attention.scaled_dot_product_attention(q, k, v, bias=rpb(Tq, Tk, offset),
    attention_mask=attention_mask, causal=causal, scale=scale)` where `rpb` is a
    `RelativePositionBias` whose weight is `bias_table`, forward and backward (the table's
    gradient included), in O(Tq + Tk) memory beyond the inputs and gradients.

    Args:
        q: `(batch, heads, q_len, head_dim)`; k, v: `(batch, heads, k_len, head_dim)`, one
            floating dtype (tiles are computed in float32, float64 for float64 inputs).
        bias_table: `(num_buckets, heads)`, any floating dtype, on q's device: the weight of
            `RelativePositionBias` (HF's `relative_attention_bias.weight`). Gets a gradient of
            its shape and dtype when it requires one.
        bidirectional, num_buckets, max_distance: T5's bucketing (encoder: bidirectional=True;
            decoder: False), as `t5edu.relative_position.relative_position_bucket` (= HF's).
        attention_mask: `(batch, k_len)` bool or integer 0/1, 1/True for keys to attend to (HF).
        causal: hide future keys, aligned bottom-right when `q_len != k_len` (as the reference:
            query i sees key j when j <= i + k_len - q_len, whatever `offset`).
        offset: position of the first query (keys sit at 0..k_len-1): with a KV cache, the
            number of cached keys, as `RelativePositionBias.forward`'s offset.
        scale: multiplies q k^T. Default 1.0, T5's (its 1/sqrt(d) is folded into the query
            projection's initialisation); None means `head_dim ** -0.5`, as t5edu's attention.
        block_q, block_k: tile sizes (positive ints; the lengths need not be multiples).

    Returns:
        `(batch, heads, q_len, head_dim)` in q's dtype. A query that sees no key (every key
        hidden by `attention_mask` or `causal`, or a -inf table entry at every visible key) gets
        zeros and zero gradients, never NaN: the rule of every t5edu backend.

    Raises:
        ValueError: for q, k, v or `attention_mask` that `check_attention_inputs` rejects, a
            `bias_table` that is not a floating `(num_buckets, heads)` tensor on q's device,
            bucket settings `check_bucket_settings` rejects, a non-bool `bidirectional`, a
            negative or non-int `offset`, a bad `scale`, or non-positive block sizes.

    Source: T5's relative position bias (Raffel et al. 2020, sec. 2.1) computed per tile of
    FlashAttention-2 (Dao 2023, Alg. 1-2), its table gradient scatter-added as in the unmerged
    FlashAttention pull request for T5's bias with linear memory. Taught in chapter 9.
    """
    check_t5_flash_inputs(
        q, k, v, bias_table, bidirectional, num_buckets, max_distance, attention_mask, offset,
        block_q, block_k,
    )  # fmt: skip
    check_scale_and_dropout(scale, 0.0)
    return t5_flash_attention_unchecked(
        q, k, v, bias_table, bidirectional=bidirectional, num_buckets=num_buckets,
        max_distance=max_distance, attention_mask=attention_mask, causal=causal, offset=offset,
        scale=scale, block_q=block_q, block_k=block_k,
    )  # fmt: skip


def t5_flash_attention_unchecked(
    q, k, v, bias_table, *, bidirectional, num_buckets, max_distance, attention_mask=None,
    causal=False, offset=0, scale=1.0, block_q=BLOCK_Q, block_k=BLOCK_K,
) -> torch.Tensor:  # fmt: skip
    """`t5_flash_attention` without its input checks, for `T5Attention` (its model checked the
    input once, at the boundary; the table and bucket settings are the model's own)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q_len, k_len = q.shape[2], k.shape[2]
    buckets = relative_buckets(
        q_len, k_len, offset, bidirectional, num_buckets, max_distance, q.device
    )
    mask = None if attention_mask is None else attention_mask.bool()
    out, _ = T5FlashAttentionFunction.apply(
        q, k, v, bias_table, buckets, mask, causal, scale, block_q, block_k
    )
    return out


__all__ = [
    "t5_flash_attention",
    "t5_flash_attention_unchecked",
    "T5FlashAttentionFunction",
    "relative_buckets",
]
