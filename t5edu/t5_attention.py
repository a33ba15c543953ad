"""T5's multi-head attention: self or cross, no score scaling, a KV cache (chapters 3, 4).

B batch, H heads, Tq/Tk query/key length, S source length, D d_model, Dh head dim (d_kv).
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.backends import attention
from t5edu.config import T5Config
from t5edu.kv_cache import T5Cache
from t5edu.relative_position import RelativePositionBias


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
    position_bias broadcastable to `(B, H, Tq, Tk)` or None, attention_mask `(B, Tk)` 1 = attend,
    causal, cache: `T5Cache` or None, rope: a `t5edu.rope.RoPE` for self-attention or None)
    returns `(B, Tq, D)` in the input's dtype.

    There is no 1/sqrt(Dh) on the scores (scale=1.0): Mesh TensorFlow folds it into the
    initialisation of `q` (std (D * Dh)^-0.5), so checkpoints expect unscaled scores.
    With a cache, self-attention appends the new keys/values and attends to all cached ones;
    cross-attention projects the encoder output at the first step only.

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
        out = attention(
            q,
            k,
            v,
            bias=position_bias,
            attention_mask=attention_mask,
            causal=causal and tq > 1,  # one query sees every cached key: no mask needed
            scale=1.0,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )  # (B, H, Tq, Dh)
        return self.o(out.transpose(1, 2).reshape(b, tq, -1))  # (B, Tq, D)


__all__ = ["T5Attention"]
