"""T5's pre-norm residual sub-layers and the encoder/decoder block (chapter 3).

B batch, Tq target length, S source length, D d_model.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.config import T5Config
from t5edu.feed_forward import T5LayerFF, dropout
from t5edu.kv_cache import T5Cache
from t5edu.norms import build_norm
from t5edu.t5_attention import T5Attention


def clamp_fp16_inf(h: torch.Tensor) -> torch.Tensor:
    """In float16, clamp to +-(65504 - 1000) when any entry overflowed to inf; else unchanged.

    T5's residual stream grows large (the v1.1 and FLAN feed-forward outputs exceed fp16's
    65504), and one inf would turn the next norm into NaN. As HF's `T5Block`, every sub-layer's
    output is clamped (by 1000 below the max only when an inf appeared, so fp16 runs that never
    overflow are untouched). This is a patch, not a cure: bf16 (same range as fp32) avoids it.
    """
    if h.dtype != torch.float16:
        return h
    big = torch.finfo(h.dtype).max
    limit = torch.where(torch.isinf(h).any(), big - 1000, big)
    return torch.clamp(h, min=-limit, max=limit)


class T5LayerSelfAttention(nn.Module):
    """x + dropout(SelfAttention(norm(x))), `(B, T, D)`; HF's `T5LayerSelfAttention`."""

    def __init__(
        self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool, i: int
    ):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, is_decoder, i)
        self.layer_norm = build_norm(config.norm_type, config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(
        self, x, position_bias=None, attention_mask=None, causal=False, cache=None, rope=None
    ):
        h = self.SelfAttention(
            self.layer_norm(x),
            position_bias=position_bias,
            attention_mask=attention_mask,
            causal=causal,
            cache=cache,
            rope=rope,
        )
        return x + dropout(self.dropout, h)


class T5LayerCrossAttention(nn.Module):
    """x + dropout(EncDecAttention(norm(x), encoder output)); no position information."""

    def __init__(self, config: T5Config, i: int):
        super().__init__()
        self.EncDecAttention = T5Attention(config, False, is_decoder=True, layer_idx=i)
        self.layer_norm = build_norm(config.norm_type, config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, encoder_hidden_states, attention_mask=None, cache=None):
        h = self.EncDecAttention(
            self.layer_norm(x),
            key_value_states=encoder_hidden_states,
            attention_mask=attention_mask,
            cache=cache,
        )
        return x + dropout(self.dropout, h)


class T5Block(nn.Module):
    """One encoder block (self-attention, FF) or decoder block (causal self-, cross-attention, FF).

    `layer` holds the sub-layers in HF's order, so parameter names match HF's `T5Block`:
    `layer.0.SelfAttention`, (decoder) `layer.1.EncDecAttention`, `layer.{1|2}.DenseReluDense`.

    forward(hidden_states `(B, T, D)`, position_bias (a tensor broadcastable to
    `(B, H, T, Tk)`, a `t5edu.t5_attention.RelativeBiasTable` or None), attention_mask `(B, Tk)`,
    encoder_hidden_states `(B, S, D)`, encoder_attention_mask `(B, S)`, cache, rope) returns
    `(B, T, D)`. fp16 outputs of each sub-layer pass through `clamp_fp16_inf` (HF does the same).
    """

    def __init__(
        self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool, i: int
    ):
        super().__init__()
        self.is_decoder = is_decoder
        self.layer = nn.ModuleList(
            [T5LayerSelfAttention(config, has_relative_attention_bias, is_decoder, i)]
        )
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config, i))
        self.layer.append(T5LayerFF(config))

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_bias=None,  # tensor | RelativeBiasTable | None, passed to self-attention
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: T5Cache | None = None,
        rope=None,
    ) -> torch.Tensor:
        h = self.layer[0](
            hidden_states, position_bias, attention_mask, self.is_decoder, cache, rope
        )
        h = clamp_fp16_inf(h)
        if self.is_decoder:
            h = clamp_fp16_inf(
                self.layer[1](h, encoder_hidden_states, encoder_attention_mask, cache)
            )
        return clamp_fp16_inf(self.layer[-1](h))


__all__ = ["T5Block", "T5LayerSelfAttention", "T5LayerCrossAttention", "clamp_fp16_inf"]
