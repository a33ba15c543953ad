"""T5's relative position bias: log-spaced distance buckets and a learned bias per bucket (ch. 2).

H heads, Tq/Tk query/key length.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def check_bucket_settings(num_buckets: int, max_distance: int, bidirectional: bool = True) -> None:
    """Raise ValueError unless the bucketing formula is well defined for these settings.

    The formula gives the first `max_exact = n // 2` buckets to exact distances and the other
    `n - max_exact` to log-spaced ranges up to `max_distance`, where `n = num_buckets // 2` when
    bidirectional (the other half encodes the direction) and `num_buckets` otherwise. It divides by
    `max_exact` and by `log(max_distance / max_exact)`, so it needs `max_exact >= 1` (num_buckets
    >= 4 bidirectional, >= 2 causal) and `max_distance > max_exact`; otherwise buckets become NaN
    casts or run backwards into the exact range.
    """
    for name, value in (("num_buckets", num_buckets), ("max_distance", max_distance)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int; got {value!r}")
    n = num_buckets // 2 if bidirectional else num_buckets
    max_exact = n // 2
    if max_exact < 1:
        need = 4 if bidirectional else 2
        kind = "bidirectional" if bidirectional else "causal"
        raise ValueError(
            f"num_buckets must be >= {need} for {kind} bucketing (so at least one bucket holds an "
            f"exact distance); got num_buckets={num_buckets}"
        )
    if max_distance <= max_exact:
        raise ValueError(
            f"max_distance must exceed the {max_exact} exact-distance buckets (num_buckets="
            f"{num_buckets}, bidirectional={bidirectional}) for the log-spaced buckets to grow; "
            f"got max_distance={max_distance}"
        )


def relative_position_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> torch.Tensor:
    """Map relative positions (key - query) to bucket ids in `[0, num_buckets)`.

    Small distances get one bucket each; larger ones share log-spaced buckets up to
    `max_distance`, beyond which all distances share the last bucket. Bidirectional bucketing
    (the encoder) spends half of the buckets on keys after the query; causal bucketing (the
    decoder) maps every key after the query to bucket 0 (those keys are masked anyway).

    Args:
        relative_position: integer tensor of any shape, `key_position - query_position`.
        bidirectional, num_buckets, max_distance: as HF's `T5Attention._relative_position_bucket`.

    Returns:
        int64 tensor of relative_position's shape, equal to HF's (same float32 ops, same order).

    Raises:
        ValueError: when `relative_position` is not an integer tensor, or for bucket settings the
            formula cannot use (see `check_bucket_settings`).

    Source: Raffel et al. 2020 (T5), sec. 2.1; Mesh TensorFlow `_relative_position_bucket`.
    """
    if not isinstance(relative_position, torch.Tensor) or relative_position.dtype.is_floating_point:
        got = getattr(relative_position, "dtype", type(relative_position).__name__)
        raise ValueError(f"relative_position must be an integer tensor; got {got}")
    check_bucket_settings(num_buckets, max_distance, bidirectional)
    rel = relative_position.long()
    if bidirectional:
        num_buckets //= 2
        offset = (rel > 0).long() * num_buckets  # keys after the query use the upper half
        distance = rel.abs()
    else:
        offset = 0
        distance = (-rel).clamp_min(0)  # future keys collapse onto distance 0
    max_exact = num_buckets // 2
    # Clamping before the log only avoids log(0); those entries take the exact branch below.
    far = distance.clamp_min(max_exact).float() / max_exact
    log_bucket = (
        torch.log(far) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    log_bucket = (max_exact + log_bucket).clamp_max(num_buckets - 1)
    return offset + torch.where(distance < max_exact, distance, log_bucket)


class RelativePositionBias(nn.Module):
    """Learned additive attention bias, one scalar per (bucket, head) (T5; chapter 2).

    `weight` is `(num_buckets, num_heads)` like HF's `relative_attention_bias` embedding, so state
    dicts map 1:1. forward(q_len, k_len, offset=0) returns `(1, num_heads, q_len, k_len)` in the
    weight's dtype; query i sits at position `offset + i` and key j at position j, so with a KV
    cache pass `offset = past_len` (the new queries follow the cached keys).

    Raises:
        ValueError: for bucket settings that cannot work (at construction), or negative lengths.

    Source: Raffel et al. 2020, sec. 2.1; matches HF `T5Attention.compute_bias`.
    """

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int, bidirectional: bool):
        super().__init__()
        check_bucket_settings(num_buckets, max_distance, bidirectional)
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive; got {num_heads}")
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.num_heads, self.bidirectional = num_heads, bidirectional
        self.weight = nn.Parameter(torch.empty(num_buckets, num_heads))
        nn.init.normal_(self.weight)
        self._bucket_cache: dict = {}  # (q_len, k_len, offset, device) -> buckets; not state

    def buckets(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor:
        """int64 `(q_len, k_len)` bucket ids for queries at `offset..offset+q_len-1`.

        The last few tables are kept (training repeats the same lengths every step). Under
        `torch.compile` the table is computed in the graph instead (a few integer ops the
        compiler fuses; a cache of tensors would be a side effect it must guard and replay)."""
        if q_len < 0 or k_len < 0 or offset < 0:
            raise ValueError(
                f"q_len, k_len and offset must be >= 0; got {q_len}, {k_len}, {offset}"
            )
        dev = self.weight.device
        if torch.compiler.is_compiling():
            return self._table(q_len, k_len, offset, dev)
        key = (q_len, k_len, offset, dev)
        table = self._bucket_cache.get(key)
        if table is None:
            table = self._table(q_len, k_len, offset, dev)
            if torch.is_inference_mode_enabled():
                return table  # an inference tensor may not be saved for a later backward
            if len(self._bucket_cache) >= 8:
                self._bucket_cache.pop(next(iter(self._bucket_cache)))
            self._bucket_cache[key] = table
        return table

    def _table(self, q_len: int, k_len: int, offset: int, device) -> torch.Tensor:
        query = torch.arange(offset, offset + q_len, device=device)[:, None]  # (Tq, 1)
        memory = torch.arange(k_len, device=device)[None, :]  # (1, Tk)
        return relative_position_bucket(
            memory - query, self.bidirectional, self.num_buckets, self.max_distance
        )

    def forward(
        self, q_len: int = 0, k_len: int = 0, offset: int = 0, *, table: bool = False
    ) -> torch.Tensor:
        """The `(1, H, q_len, k_len)` bias; with `table=True` a copy of the `(num_buckets, H)`
        weight instead, which is how the `t5_flash` path reads the table: through a module
        call, so that hooks gathering a sharded weight (FSDP's) run, and a copy, so that the
        gathered weight may be freed after the call while autograd still reaches it."""
        if table:
            return self.weight.clone()  # (num_buckets, H)
        return self.bias(q_len, k_len, offset)

    def bias(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor:
        """`forward`'s `(1, H, q_len, k_len)` bias, computed without a module call."""
        idx = self.buckets(q_len, k_len, offset).reshape(-1)  # (Tq*Tk,)
        # Gathering columns of weight^T gives a contiguous (H, Tq*Tk) result directly, and its
        # backward is one index_add, several times faster than embedding's on long inputs.
        values = self.weight.t().index_select(1, idx)  # (H, Tq*Tk)
        return values.view(1, self.num_heads, q_len, k_len)  # (1, H, Tq, Tk)

    def bias_by_distance(self, n: int) -> torch.Tensor:
        """`(H, 2n - 1)` bias for every relative position `key - query` in `-(n-1) .. n-1`.

        Column `n - 1 + j - i` holds the bias of query position i and key position j, for all
        positions below n: the bias depends on `j - i` alone. Decoding keeps this `O(n)`
        vector instead of the `(n, n)` table and takes each step's row with `bias_rows` (a
        slice). It is the one bias row of a query at position n - 1 over keys 0..2n-2, computed
        by calling the module (so hooks such as FSDP's, which gather the weight, run) and
        bit-identical to what `forward` gives for any (q_len, k_len, offset) below n.

        Raises:
            ValueError: for n < 1.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}")
        return self(1, 2 * n - 1, n - 1)[0, :, 0]  # (H, 2n - 1)

    def extra_repr(self) -> str:
        return (
            f"num_buckets={self.num_buckets}, max_distance={self.max_distance}, "
            f"num_heads={self.num_heads}, bidirectional={self.bidirectional}"
        )


def bias_rows(by_distance: torch.Tensor, offset: int, q_len: int, k_len: int) -> torch.Tensor:
    """`(1, H, q_len, k_len)` bias for queries at `offset..` and keys at `0..`, read from
    `RelativePositionBias.bias_by_distance(n)`'s `(H, 2n - 1)` output, equal to
    `RelativePositionBias(q_len, k_len, offset)`.

    One query row (cached decoding) is a view, a slice of the vector; several rows are copied
    (each row is the previous one shifted by one column).

    Raises:
        ValueError: when the positions do not fit the vector (`offset + q_len` or `k_len`
            above n).
    """
    n = (by_distance.shape[1] + 1) // 2
    if offset < 0 or q_len < 1 or k_len < 1 or offset + q_len > n or k_len > n:
        raise ValueError(
            f"queries {offset}..{offset + q_len - 1} and keys 0..{k_len - 1} must lie below "
            f"n={n}, the positions by_distance {tuple(by_distance.shape)} covers"
        )
    start = n - 1 - offset  # column of (query offset, key 0)
    if q_len == 1:
        return by_distance[None, :, None, start : start + k_len]  # (1, H, 1, Tk) view
    windows = by_distance.unfold(1, k_len, 1)  # (H, 2n - k_len, Tk): window s = columns s..
    # Query offset + a starts at column start - a: the windows, last row first.
    return windows[:, start - q_len + 1 : start + 1].flip(1)[None]  # (1, H, Tq, Tk)


__all__ = [
    "relative_position_bucket",
    "RelativePositionBias",
    "check_bucket_settings",
    "bias_rows",
]
