"""The decoder's key/value cache for incremental decoding (chapter 4).

B batch, H heads, T cached length, S source length, Dh head dim.
"""

from __future__ import annotations

import torch

MIN_CAPACITY = 16  # positions of the first self-attention storage with `max_length`


class T5Cache:
    """Keys and values of every decoder layer, so each new token costs one step, not a re-run.

    Self-attention keys/values grow by the new tokens each step; cross-attention keys/values
    depend only on the encoder output, so they are computed at the first step and reused.

    Args:
        num_layers: decoder layers.
        max_length: when given, the positions the cache may hold: self-attention storage
            `(B, H, capacity, Dh)` is filled in place, its capacity doubled (from
            `MIN_CAPACITY`, up to max_length) when a step needs more: a copy at a few
            doublings only, and a generation that stops early holds no storage for the
            positions it never reached (what `generate` uses); when None it grows by
            concatenation (works with autograd).
        preallocate: with `max_length`, allocate the storage for all `max_length` positions at
            the first step instead of doubling: every later step then runs the same code on
            the same storage, so a `torch.compile`d decoding step compiles for the first step
            (no cross-attention cache yet) and the second (the cached length turns symbolic)
            and never again (tests/test_compile.py). Memory for max_length positions up front.

    `length` is the number of cached target positions. The decoder calls `update(i, k, v)` in
    each layer and `advance(t)` once after all layers. Returned by the model as
    `past_key_values`; pass it back with the next token(s).

    Raises:
        ValueError: when a step would exceed `max_length`, or for a bad `reorder` index.
    """

    def __init__(self, num_layers: int, max_length: int | None = None, preallocate: bool = False):
        if preallocate and max_length is None:
            raise ValueError("preallocate=True needs max_length (the positions to allocate)")
        self.num_layers, self.max_length, self.preallocate = num_layers, max_length, preallocate
        self.length = 0
        self.self_k: list[torch.Tensor | None] = [None] * num_layers
        self.self_v: list[torch.Tensor | None] = [None] * num_layers
        self.cross_k: list[torch.Tensor | None] = [None] * num_layers
        self.cross_v: list[torch.Tensor | None] = [None] * num_layers

    def get_seq_length(self) -> int:
        """Cached target positions (HF's name)."""
        return self.length

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor):
        """Append new `(B, H, t, Dh)` keys/values of layer i; return all `(B, H, T + t, Dh)`."""
        pos, t = self.length, k.shape[2]
        if self.max_length is None:
            if self.self_k[i] is not None:
                k = torch.cat([self.self_k[i], k], dim=2)  # (B, H, T + t, Dh)
                v = torch.cat([self.self_v[i], v], dim=2)
            self.self_k[i], self.self_v[i] = k, v
            return k, v
        if pos + t > self.max_length:
            raise ValueError(
                f"T5Cache(max_length={self.max_length}) is full: cannot add {t} positions to {pos}"
            )
        capacity = 0 if self.self_k[i] is None else self.self_k[i].shape[2]
        if pos + t > capacity:  # doubling: O(1) amortised copies per position
            capacity = min(self.max_length, max(pos + t, 2 * capacity, MIN_CAPACITY))
            if self.preallocate:
                capacity = self.max_length
            shape = (k.shape[0], k.shape[1], capacity, k.shape[3])
            new_k, new_v = k.new_empty(shape), v.new_empty(shape)
            if pos:
                new_k[:, :, :pos] = self.self_k[i][:, :, :pos]
                new_v[:, :, :pos] = self.self_v[i][:, :, :pos]
            self.self_k[i], self.self_v[i] = new_k, new_v
        self.self_k[i][:, :, pos : pos + t] = k
        self.self_v[i][:, :, pos : pos + t] = v
        return self.self_k[i][:, :, : pos + t], self.self_v[i][:, :, : pos + t]

    def advance(self, t: int) -> None:
        """Record that t new positions were added to every layer."""
        self.length += t

    def has_cross(self, i: int) -> bool:
        return self.cross_k[i] is not None

    def set_cross(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.cross_k[i], self.cross_v[i] = k, v

    def reorder(self, index: torch.Tensor, cross: bool = False) -> None:
        """Keep rows `index` (beam search: each surviving beam continues some parent's cache).

        Cross-attention entries are reordered only with `cross=True`; beam search leaves them,
        since all beams of one input share the same encoder output.
        """
        n = self.length
        for store in (self.self_k, self.self_v) + ((self.cross_k, self.cross_v) if cross else ()):
            for i, t in enumerate(store):
                if t is None:
                    continue
                if index.numel() != t.shape[0]:
                    raise ValueError(f"index must have {t.shape[0]} rows; got {index.numel()}")
                if store is self.cross_k or store is self.cross_v or self.max_length is None:
                    store[i] = t.index_select(0, index)
                else:
                    t[:, :, :n] = t[:, :, :n].index_select(0, index)


__all__ = ["T5Cache", "MIN_CAPACITY"]
