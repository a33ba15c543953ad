"""Multi-head attention: project, split into heads, attend through a backend, merge (chapter 1).

B batch, H heads, Tq/Tk query/key length, Dh head dim, D d_model.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.backends import attention, check_backend


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project, split into heads, attend, merge, project (chapter 1).

    Args:
        d_model: model width D. num_heads: H. d_kv: per-head width (default D // H).
        bias: whether the four projections have a bias (T5's have none).
        dropout: attention-probability dropout while training.
        backend: name of the attention backend (see `t5edu.backends.BACKENDS`).

    forward(x `(B, Tq, D)`, context `(B, Tk, D)` or None for self-attention, attention_mask
    `(B, Tk)`, bias broadcastable to `(B, H, Tq, Tk)`, causal) returns `(B, Tq, D)`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_kv: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        backend: str = "naive",
    ):
        super().__init__()
        if num_heads < 1 or d_model < 1:
            raise ValueError(f"d_model and num_heads must be >= 1; got {d_model}, {num_heads}")
        check_backend(backend)
        if d_kv is None:
            if d_model % num_heads:
                raise ValueError(
                    f"d_model={d_model} is not divisible by num_heads={num_heads}; pass d_kv"
                )
            d_kv = d_model // num_heads
        self.num_heads, self.d_kv, self.dropout, self.backend = num_heads, d_kv, dropout, backend
        inner = num_heads * d_kv
        self.q = nn.Linear(d_model, inner, bias=bias)
        self.k = nn.Linear(d_model, inner, bias=bias)
        self.v = nn.Linear(d_model, inner, bias=bias)
        self.o = nn.Linear(inner, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.d_kv).transpose(1, 2)  # (B, H, T, Dh)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        d_model = self.q.in_features
        for name, t in (("x", x), ("context", context)):
            if t is not None and (t.dim() != 3 or t.shape[-1] != d_model):
                raise ValueError(
                    f"{name} must be (batch, len, d_model={d_model}); got shape {tuple(t.shape)}"
                )
        context = x if context is None else context
        q = self.split_heads(self.q(x))
        k, v = self.split_heads(self.k(context)), self.split_heads(self.v(context))
        out = attention(
            q,
            k,
            v,
            bias=bias,
            attention_mask=attention_mask,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )  # (B, H, Tq, Dh)
        b, _, tq, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(b, tq, -1))


__all__ = ["MultiHeadAttention"]
