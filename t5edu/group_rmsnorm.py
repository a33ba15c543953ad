"""Group RMSNorm: RMSNorm over each group of channels on its own (chapter 5).

G groups, D model width (D/G channels per group); the norm runs over the last dim.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.rmsnorm import check_norm_args


class GroupRMSNorm(nn.Module):
    """Split the last dim into `num_groups` equal groups and RMS-normalise each separately.

    y[g] = x[g] / sqrt(mean(x[g]^2) + eps) * weight[g]: the RMS analogue of GroupNorm
    (Wu & He 2018) taken over channels only, as the per-head norms of multi-head models
    (e.g. query-key normalisation) use. `num_groups=1` is RMSNorm; `num_groups=dim` leaves only
    the sign of each channel (times its weight). Shapes `(..., dim)` in and out; statistics in
    float32 (float64 for float64 input), output in the input dtype.

    Raises:
        ValueError: when `dim` or `num_groups` is not a positive int, `num_groups` does not
            divide `dim`, `eps` is negative, or the input's last dim is not `dim`.
    """

    def __init__(self, dim: int, num_groups: int, eps: float = 1e-6):
        super().__init__()
        check_norm_args("GroupRMSNorm", eps, dim=dim, num_groups=num_groups)
        if num_groups < 1 or dim % num_groups:
            raise ValueError(
                f"num_groups must be a positive divisor of dim={dim}; got num_groups={num_groups}"
            )
        self.num_groups, self.eps = num_groups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.weight.shape[0]
        if x.shape[-1] != dim:
            raise ValueError(
                f"GroupRMSNorm expects input (..., dim={dim}); got shape {tuple(x.shape)}"
            )
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        xg = xf.reshape(*x.shape[:-1], self.num_groups, dim // self.num_groups)  # (..., G, D/G)
        y = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y.reshape(x.shape) * self.weight.to(y.dtype)).to(x.dtype)  # (..., D)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, num_groups={self.num_groups}, eps={self.eps}"
