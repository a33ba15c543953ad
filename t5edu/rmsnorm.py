"""RMSNorm (Zhang & Sennrich 2019), T5's layer norm: no mean, no bias (chapters 3, 5).

D model width; the norm runs over the last dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def check_norm_args(name: str, eps, **dims) -> None:
    """Raise ValueError naming the argument unless each width is a positive int and eps >= 0.

    Shared by every norm of the RMSNorm family: `RMSNorm(0)` or a negative `eps` would otherwise
    build a module that returns NaN or inf on its first call.
    """
    for arg, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive int; got {arg}={value!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise ValueError(f"{name}: eps must be a finite number >= 0; got eps={eps!r}")
    if eps < 0:
        raise ValueError(f"{name}: eps must be >= 0; got eps={eps}")


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, over the last dim.

    Shapes: `(..., dim)` in and out. The statistic is computed in float32 (float64 for float64
    input) whatever the input dtype, and the result has the input's dtype.
    Matches HF's `T5LayerNorm` and `LlamaRMSNorm` bit for bit when the weight and input share a
    dtype, and `torch.nn.RMSNorm` within 1e-6 in float32. Zhang & Sennrich 2019, eq. 4.

    Raises:
        ValueError: when `dim` is not a positive int, `eps` is negative, or the input's last dim
            is not `dim`.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        check_norm_args("RMSNorm", eps, dim=dim)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"RMSNorm expects input (..., dim={self.weight.shape[0]}); "
                f"got shape {tuple(x.shape)}"
            )
        # float32 at least: half-precision sums of squares overflow, and float64 input keeps
        # float64 (gradcheck needs it) instead of being silently rounded to float32.
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            y = y.to(self.weight.dtype)
        return (self.weight * y).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
