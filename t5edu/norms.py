"""The norm a T5 layer uses, chosen by name from the config's `norm_type` (chapters 3, 5).

D model width; every norm here runs over the last dim.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.fast_rmsnorm import FastRMSNorm
from t5edu.rmsnorm import RMSNorm


class LayerNorm(nn.Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last dim (Ba et al. 2016).

    The norm of the original Transformer, offered as a `norm_type` choice against T5's RMSNorm
    (chapter 5 compares them). Same conventions as `t5edu.RMSNorm`: `(..., dim)` in and out,
    statistics in float32 (float64 for float64 input), output in the input dtype, eps 1e-6.
    Equals `torch.nn.LayerNorm` within 1e-6 in float32 (biased variance, as there).

    Raises:
        ValueError: when the input's last dim is not `dim`.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"LayerNorm expects input (..., dim={self.weight.shape[0]}); "
                f"got shape {tuple(x.shape)}"
            )
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        xc = xf - xf.mean(-1, keepdim=True)
        y = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype) + self.bias.to(y.dtype)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS = {"rmsnorm": RMSNorm, "fast_rmsnorm": FastRMSNorm, "layernorm": LayerNorm}


def build_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    """A norm over the last dim of width `dim`; ValueError naming `norm_type` if unknown."""
    try:
        cls = NORMS[norm_type]
    except KeyError:
        raise ValueError(f"norm_type must be one of {sorted(NORMS)}; got {norm_type!r}") from None
    return cls(dim, eps=eps)
