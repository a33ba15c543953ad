"""T5's multi-head attention: self or cross, no score scaling, a KV cache (chapters 3, 4).

B batch, H heads, Tq/Tk query/key length, S source length, D d_model, Dh head dim (d_kv).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from t5edu.backends import attention_unchecked
from t5edu.config import T5Config
from t5edu.flash_attention import check_no_dropout
from t5edu.kv_cache import T5Cache
from t5edu.relative_position import RelativePositionBias
from t5edu.t5_flash import t5_flash_attention_unchecked


@dataclass(frozen=True)
class RelativeBiasTable:
    """T5's relative position bias left as its `(num_buckets, H)` table: what a stack passes its
    self-attention layers as `position_bias` when they all run the `t5_flash` backend.

    `module` is the stack's `RelativePositionBias` (block 0's, as in HF), `offset` the position
    of the first query (the KV cache length when decoding with a cache; keys sit at 0..). The
    `t5_flash` layers hand `module.weight` to `t5edu.t5_flash.t5_flash_attention`, which
    gathers the bias per tile, so no `(1, H, Tq, Tk)` bias exists; any other layer calls
    `materialise`. Both read the weight through a module call (`module(table=True)` for the
    table), so FSDP's hooks gather a sharded table first.
    """

    module: RelativePositionBias
    offset: int = 0

    def materialise(self, q_len: int, k_len: int) -> torch.Tensor:
        """The `(1, H, q_len, k_len)` bias `RelativePositionBias(q_len, k_len, offset)`."""
        return self.module(q_len, k_len, self.offset)


class T5Attention(nn.Module):
    """Attention with HF's parameter names `q`, `k`, `v`, `o` (and `relative_attention_bias`).

    Args:
        config: sizes, dropout and `attention_backend` (the backend runs the softmax(q k^T + bias)
            v core through the one dispatcher, `t5edu.backends.attention`).
        has_relative_attention_bias: own the stack's `RelativePositionBias` (first block only;
            the stack computes the bias once and every layer adds it).
        is_decoder: bucket causally (decoder) or bidirectionally (encoder).
        layer_idx: this layer's slot in a `T5Cache`.

    forward(hidden_states `(B, Tq, D)`, key_value_states `(B, S, D)` for cross-attention or None,
    position_bias broadcastable to `(B, H, Tq, Tk)`, a `RelativeBiasTable` or None,
    attention_mask `(B, Tk)` 1 = attend,
    causal, cache: `T5Cache` or None, rope: a `t5edu.rope.RoPE` for self-attention or None)
    returns `(B, Tq, D)` in the input's dtype.

    There is no 1/sqrt(Dh) on the scores (scale=1.0): Mesh TensorFlow folds it into the
    initialisation of `q` (std (D * Dh)^-0.5), so checkpoints expect unscaled scores.
    With a cache, self-attention appends the new keys/values and attends to all cached ones;
    cross-attention projects the encoder output at the first step only.

    Backend `t5_flash`: self-attention given a `RelativeBiasTable` runs
    `t5edu.t5_flash.t5_flash_attention` on the table (bucketing as the module's, `offset` from
    the table spec, `causal` as for every backend), in O(Tq + Tk) memory beyond q, k, v; given
    a materialised tensor bias (generation's precomputed rows, ALiBi) or none (cross-attention,
    RoPE) it runs `flash`. It has no attention dropout: in training with `dropout_rate > 0` it
    raises ValueError, as `flash` does. Other backends materialise a `RelativeBiasTable`.

    No input checks here: the model checks its input once, where it enters (`T5Model.forward`,
    `generate`, a stack called on its own), and passes masks in their final form (bool or
    None); the attention core runs through `t5edu.backends.attention_unchecked`.

    Source: Vaswani et al. 2017, sec. 3.2; Raffel et al. 2020; HF `T5Attention`.
    """

    def __init__(
        self,
        config: T5Config,
        has_relative_attention_bias: bool = False,
        is_decoder: bool = False,
        layer_idx: int = 0,
    ):
        super().__init__()
        self.num_heads, self.d_kv, self.layer_idx = config.num_heads, config.d_kv, layer_idx
        self.dropout, self.backend = config.dropout_rate, config.attention_backend
        inner = config.num_heads * config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.has_relative_attention_bias = has_relative_attention_bias
        if has_relative_attention_bias:
            self.relative_attention_bias = RelativePositionBias(
                config.relative_attention_num_buckets,
                config.relative_attention_max_distance,
                config.num_heads,
                bidirectional=not is_decoder,
            )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.d_kv).transpose(1, 2)  # (B, H, T, Dh)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: T5Cache | None = None,
        rope=None,
    ) -> torch.Tensor:
        b, tq, _ = hidden_states.shape
        q = self._heads(self.q(hidden_states))  # (B, H, Tq, Dh)
        i = self.layer_idx
        if key_value_states is None:
            k, v = self._heads(self.k(hidden_states)), self._heads(self.v(hidden_states))
            if rope is not None:
                q, k = rope(q, k, offset=cache.length if cache is not None else 0)
            if cache is not None:
                k, v = cache.update(i, k, v)  # (B, H, Tk, Dh), Tk = past + Tq
        elif cache is not None and cache.has_cross(i):
            k, v = cache.cross_k[i], cache.cross_v[i]  # (B, H, S, Dh), computed at step one
        else:
            k, v = self._heads(self.k(key_value_states)), self._heads(self.v(key_value_states))
            if cache is not None:
                # Stored head-major once, so no decoding step re-copies the strided view.
                k, v = k.contiguous(), v.contiguous()  # (B, H, S, Dh)
                cache.set_cross(i, k, v)
        causal = causal and tq > 1  # one query sees every cached key: no mask needed
        dropout_p = self.dropout if self.training else 0.0
        if isinstance(position_bias, RelativeBiasTable):
            if self.backend == "t5_flash":
                check_no_dropout(dropout_p, "t5_flash")
                rpb = position_bias.module
                out = t5_flash_attention_unchecked(
                    q, k, v, rpb(table=True), bidirectional=rpb.bidirectional,
                    num_buckets=rpb.num_buckets, max_distance=rpb.max_distance,
                    attention_mask=attention_mask, causal=causal, offset=position_bias.offset,
                    scale=1.0,
                )  # fmt: skip
                return self.o(out.transpose(1, 2).reshape(b, tq, -1))  # (B, Tq, D)
            position_bias = position_bias.materialise(tq, k.shape[2])  # (1, H, Tq, Tk)
        out = attention_unchecked(
            q,
            k,
            v,
            bias=position_bias,
            attention_mask=attention_mask,
            causal=causal,
            scale=1.0,
            dropout_p=dropout_p,
            backend=self.backend,
        )  # (B, H, Tq, Dh)
        return self.o(out.transpose(1, 2).reshape(b, tq, -1))  # (B, Tq, D)


__all__ = ["T5Attention", "RelativeBiasTable"]
