"""Adaptive RMSNorm: scale (and shift) predicted from a conditioning vector (chapter 5).

B batch, D model width, C conditioning width; the norm runs over the last dim.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.rmsnorm import check_norm_args


class AdaptiveRMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * (1 + scale(c)) + shift(c), scale and shift linear in c.

    The conditioning vector c (a class, timestep or style embedding) sets the gain per example
    instead of one learned weight for all, as FiLM (Perez et al. 2018) and the adaLN of
    diffusion transformers (Peebles & Xie 2023) do. Both projections start at zero, so at
    initialisation the layer is exactly RMSNorm with unit weight whatever c is.

    Args:
        dim: width D of x. cond_dim: width C of c. shift: also predict an additive shift.
        eps: added to the mean square.

    forward(x `(B, ..., D)`, cond `(B, C)` (one vector per example, broadcast over the middle
    dims) or `x.shape[:-1] + (C,)` (one per position)) returns `(B, ..., D)` in x's dtype;
    statistics in float32 (float64 for float64 input).

    Raises:
        ValueError: when `dim` or `cond_dim` is not a positive int, `eps` is negative, x's last
            dim is not `dim`, cond's last dim is not `cond_dim`, or cond's leading dims are
            neither `(B,)` nor x's leading dims.
    """

    def __init__(self, dim: int, cond_dim: int, shift: bool = False, eps: float = 1e-6):
        super().__init__()
        check_norm_args("AdaptiveRMSNorm", eps, dim=dim, cond_dim=cond_dim)
        self.dim, self.cond_dim, self.eps = dim, cond_dim, eps
        self.to_scale = nn.Linear(cond_dim, dim)
        self.to_shift = nn.Linear(cond_dim, dim) if shift else None
        for proj in (self.to_scale, self.to_shift):
            if proj is not None:  # zero init: the identity (plain RMSNorm) at the start
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def _check(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"AdaptiveRMSNorm expects x (..., dim={self.dim}); got shape {tuple(x.shape)}"
            )
        if cond.shape[-1] != self.cond_dim:
            raise ValueError(
                f"AdaptiveRMSNorm expects cond (..., cond_dim={self.cond_dim}); got shape "
                f"{tuple(cond.shape)}"
            )
        if cond.shape[:-1] == x.shape[:-1]:
            return cond
        if cond.dim() == 2 and x.dim() > 2 and cond.shape[0] == x.shape[0]:
            return cond.view(cond.shape[0], *([1] * (x.dim() - 2)), self.cond_dim)  # (B, 1.., C)
        raise ValueError(
            f"cond must be (batch, cond_dim) = ({x.shape[0]}, {self.cond_dim}) or x's leading "
            f"dims + (cond_dim,) = {tuple(x.shape[:-1]) + (self.cond_dim,)}; got shape "
            f"{tuple(cond.shape)}"
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = self._check(x, cond).to(self.to_scale.weight.dtype)  # a bf16 c with fp32 layers
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        y = y * (1 + self.to_scale(cond).to(y.dtype))
        if self.to_shift is not None:
            y = y + self.to_shift(cond).to(y.dtype)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, cond_dim={self.cond_dim}, shift={self.to_shift is not None}"
