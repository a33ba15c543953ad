"""FlashAttention as modules: the core attention and multi-head attention around it (chapter 9).

B batch, H heads, Tq/Tk query/key length, D d_model, Dh head dim.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.flash_attention import BLOCK_K, BLOCK_Q, flash_attention
from t5edu.multi_head_attention import MultiHeadAttention

KERNELS = ("pytorch", "triton")


class FlashAttention(nn.Module):
    """Core attention (no projections) by the FlashAttention algorithm.

    Args:
        block_q, block_k: tile sizes of the PyTorch kernel (the Triton kernel picks its own).
        kernel: `"pytorch"` (`t5edu.flash_attention`, any device) or `"triton"` (`t5edu.kernels`,
            CUDA, or CPU under TRITON_INTERPRET=1).

    forward(q `(B, H, Tq, Dh)`, k, v `(B, H, Tk, Dh)`, *, bias broadcastable to `(B, H, Tq, Tk)`,
    attention_mask `(B, Tk)` 1 = attend, causal, scale) returns `(B, H, Tq, Dh)`, equal to
    `t5edu.attention.scaled_dot_product_attention`; same call as `MemoryEfficientAttention`.
    No attention dropout (FlashAttention's dropout is not implemented here).

    Raises:
        ValueError: an unknown `kernel`; bad input (see `flash_attention`).

    Source: Dao et al. 2022; Dao 2023 (FlashAttention-2).
    """

    def __init__(self, block_q: int = BLOCK_Q, block_k: int = BLOCK_K, kernel: str = "pytorch"):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
        self.block_q, self.block_k, self.kernel = block_q, block_k, kernel

    def forward(self, q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None):
        args = dict(bias=bias, attention_mask=attention_mask, causal=causal, scale=scale)
        if self.kernel == "triton":
            from t5edu.kernels import triton_flash_attention

            return triton_flash_attention(q, k, v, **args)
        return flash_attention(q, k, v, block_q=self.block_q, block_k=self.block_k, **args)

    def extra_repr(self) -> str:
        return f"block_q={self.block_q}, block_k={self.block_k}, kernel={self.kernel!r}"


class FlashMHA(MultiHeadAttention):
    """Multi-head attention whose core is `FlashAttention`; parameters as `MultiHeadAttention`
    (so state dicts are interchangeable), without attention dropout.

    Args:
        d_model, num_heads, d_kv, bias: as `t5edu.MultiHeadAttention`.
        block_q, block_k, kernel: as `FlashAttention`.

    forward(x `(B, Tq, D)`, context `(B, Tk, D)` or None, attention_mask `(B, Tk)`, bias
    broadcastable to `(B, H, Tq, Tk)`, causal) returns `(B, Tq, D)`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_kv: int | None = None,
        bias: bool = True,
        block_q: int = BLOCK_Q,
        block_k: int = BLOCK_K,
        kernel: str = "pytorch",
    ):
        super().__init__(d_model, num_heads, d_kv=d_kv, bias=bias, dropout=0.0, backend="flash")
        self.attn = FlashAttention(block_q=block_q, block_k=block_k, kernel=kernel)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        context = x if context is None else context
        q = self.split_heads(self.q(x))  # (B, H, Tq, Dh)
        k, v = self.split_heads(self.k(context)), self.split_heads(self.v(context))
        out = self.attn(q, k, v, bias=bias, attention_mask=attention_mask, causal=causal)
        b, _, tq, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(b, tq, -1))  # (B, Tq, D)


__all__ = ["FlashAttention", "FlashMHA"]
