"""T5's position-wise feed-forward: dense (v1.0, ReLU) and gated (v1.1, GEGLU) (chapters 3, 6).

B batch, T length, D d_model, F d_ff.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.activations import get_activation
from t5edu.config import T5Config
from t5edu.norms import build_norm


def dropout(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    """`module(x)`, skipped when it would do nothing (eval mode or p = 0): a decoding step runs
    dozens of these, and an identity dropout still costs a dispatch."""
    return module(x) if module.training and module.p > 0 else x


def _to_weight_dtype(h: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    # HF keeps `wo` in float32 when loading half-precision T5 (its output overflows fp16); casting
    # the input to wo's dtype lets such a mixed model run, as in HF.
    return h if h.dtype == linear.weight.dtype else h.to(linear.weight.dtype)


class T5DenseActDense(nn.Module):
    """wo(dropout(act(wi x))), `(B, T, D) -> (B, T, D)`; T5 v1.0's ReLU feed-forward.

    Names `wi`, `wo` as HF's `T5DenseActDense`, so state dicts map 1:1. Raffel et al. 2020,
    sec. 2.1 (Vaswani et al. 2017, eq. 2 without biases).
    """

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = get_activation(config.dense_act_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = dropout(self.dropout, self.act(self.wi(x)))  # (B, T, F)
        return self.wo(_to_weight_dtype(h, self.wo))


class T5DenseGatedActDense(nn.Module):
    """wo(dropout(act(wi_0 x) * wi_1 x)), `(B, T, D) -> (B, T, D)`: a GLU (T5 v1.1: GEGLU).

    Names `wi_0` (gate, through the activation), `wi_1` (linear), `wo` as HF's
    `T5DenseGatedActDense`. Shazeer 2020, "GLU Variants Improve Transformer", eq. 6. Chapter 6.
    """

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = get_activation(config.dense_act_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = dropout(self.dropout, self.act(self.wi_0(x)) * self.wi_1(x))  # (B, T, F)
        return self.wo(_to_weight_dtype(h, self.wo))


class T5LayerFF(nn.Module):
    """Pre-norm residual feed-forward sub-layer: x + dropout(FF(norm(x))), `(B, T, D)`.

    `DenseReluDense` is the dense or gated network by `config.feed_forward_proj` (HF's name for
    both). Matches HF's `T5LayerFF`.
    """

    def __init__(self, config: T5Config):
        super().__init__()
        ff = T5DenseGatedActDense if config.is_gated_act else T5DenseActDense
        self.DenseReluDense = ff(config)
        self.layer_norm = build_norm(config.norm_type, config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + dropout(self.dropout, self.DenseReluDense(self.layer_norm(x)))


__all__ = ["T5DenseActDense", "T5DenseGatedActDense", "T5LayerFF"]
