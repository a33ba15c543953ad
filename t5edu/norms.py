"""The norm a T5 layer uses, chosen by name from the config's `norm_type` (chapters 3, 5)."""

from __future__ import annotations

from torch import nn

from t5edu.rmsnorm import RMSNorm

NORMS = {"rmsnorm": RMSNorm}


def build_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    """A norm over the last dim of width `dim`; ValueError naming `norm_type` if unknown."""
    try:
        cls = NORMS[norm_type]
    except KeyError:
        raise ValueError(f"norm_type must be one of {sorted(NORMS)}; got {norm_type!r}") from None
    return cls(dim, eps=eps)
