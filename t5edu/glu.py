"""GLU-variant feed-forwards (Shazeer 2020, "GLU Variants Improve Transformer") (chapter 6).

D model width, F hidden width of the feed-forward; every layer acts on the last dim.

The activations come from `t5edu.activations` by the names T5's `feed_forward_proj` uses, so
a variant here and the same variant inside T5 cannot drift apart.
"""

from __future__ import annotations

import torch
from torch import nn

from t5edu.activations import FEED_FORWARD_PROJ, get_activation
from t5edu.rmsnorm import RMSNorm

# Shazeer 2020, eqs. 5-6: GLU (sigmoid gate), Bilinear (no nonlinearity), ReGLU, GEGLU, SwiGLU.
GLU_VARIANTS = ("glu", "bilinear", "reglu", "geglu", "swiglu")


def _activation_of(variant: str):
    if variant not in GLU_VARIANTS:
        raise ValueError(f"variant must be one of {list(GLU_VARIANTS)}; got {variant!r}")
    return get_activation(FEED_FORWARD_PROJ[variant][1])


def glu_hidden_dim(dim: int, multiple_of: int = 256) -> int:
    """2/3 * 4 * dim rounded up to a multiple of `multiple_of` (the LLaMA rule).

    A gated FFN has three D x F matrices where a plain one has two, so F = 2/3 * 4D keeps the
    parameter count of the 4D ReLU FFN (3 * D * 8D/3 = 2 * D * 4D); rounding up to a multiple
    keeps matmul shapes hardware-friendly at the cost of a few extra parameters.
    """
    if dim < 1 or multiple_of < 1:
        raise ValueError(
            f"dim and multiple_of must be >= 1; got dim={dim}, multiple_of={multiple_of}"
        )
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * -(-hidden // multiple_of)


class GLUVariants(nn.Module):
    """A gated linear unit on a split input, variant chosen by name: `a * act(b)`.

    The last dim `(..., 2F)` is split into halves a (the value) and b (the gate) and gives
    `(..., F)`; the order is `torch.nn.functional.glu`'s, which "glu" equals exactly. Variants
    (`GLUVariants.VARIANTS`): "glu" sigmoid, "bilinear" identity, "reglu" ReLU, "geglu" GELU (tanh
    approximation, as Mesh TensorFlow and T5 v1.1), "swiglu" SiLU/Swish-1. Shazeer 2020, eqs. 5-6.

    Raises:
        ValueError: for an unknown `variant`, or an input whose last dim is odd.
    """

    VARIANTS = GLU_VARIANTS

    def __init__(self, variant: str = "swiglu"):
        super().__init__()
        self.activation = _activation_of(variant)
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:
            raise ValueError(
                f"{type(self).__name__} splits the last dim in two halves; it must be even, got "
                f"shape {tuple(x.shape)}"
            )
        a, b = x.chunk(2, dim=-1)  # (..., F) each
        return a * self.activation(b)

    def extra_repr(self) -> str:
        return repr(self.variant)


class SwiGLU(GLUVariants):
    """SwiGLU on a split input: `a * silu(b)` for x = [a, b] along the last dim (Shazeer 2020).

    `(..., 2F)` -> `(..., F)`. Raises ValueError for an odd last dim.
    """

    def __init__(self):
        super().__init__("swiglu")


class GLUFeedForward(nn.Module):
    """FFN_variant(x) = down(act(gate(x)) * up(x)), a gated feed-forward (Shazeer 2020, eq. 6).

    Args:
        dim: model width D. hidden_dim: F; default `glu_hidden_dim(dim, multiple_of)`, i.e.
            2/3 * 4D rounded up, the parameter count of a 4D ReLU FFN.
        variant: one of `GLU_VARIANTS`. bias: biases on the three projections (LLaMA: none).

    Names follow HF LLaMA's `LlamaMLP` (gate_proj, up_proj, down_proj), which the SwiGLU variant
    equals exactly. forward: `(..., D)` -> `(..., D)`; ValueError when the last dim is not D.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        variant: str = "swiglu",
        multiple_of: int = 256,
        bias: bool = False,
    ):
        super().__init__()
        self.activation = _activation_of(variant)
        self.variant = variant
        hidden_dim = glu_hidden_dim(dim, multiple_of) if hidden_dim is None else hidden_dim
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.gate_proj.in_features
        if x.shape[-1] != dim:
            raise ValueError(
                f"{type(self).__name__} expects input (..., dim={dim}); got shape {tuple(x.shape)}"
            )
        return self.down_proj(self.activation(self.gate_proj(x)) * self.up_proj(x))  # (..., D)


class SwiGLUFeedForward(GLUFeedForward):
    """The SwiGLU feed-forward of PaLM and LLaMA: down(silu(gate(x)) * up(x)).

    `hidden_dim` defaults to 2/3 * 4 * dim rounded up to a multiple of `multiple_of`: three
    D x F matrices with F = 8D/3 hold as many parameters as the two D x 4D matrices of the ReLU
    FFN of the original Transformer, so the comparison in Shazeer 2020 is at equal size.
    `(..., dim)` -> `(..., dim)`. Equals HF's `LlamaMLP` with `hidden_act="silu"`.
    """

    def __init__(
        self, dim: int, hidden_dim: int | None = None, multiple_of: int = 256, bias: bool = False
    ):
        super().__init__(dim, hidden_dim, "swiglu", multiple_of, bias)


class SwiGLUMLP(nn.Module):
    """`num_layers` pre-norm residual SwiGLU blocks, x = x + FFN(RMSNorm(x)), then a final norm.

    The feed-forward half of a LLaMA-style stack, on its own: useful to study depth, norms and
    gating without attention. `(..., dim)` -> `(..., dim)`.

    Raises:
        ValueError: when `num_layers` < 1, or (from the layers) the input's last dim is not dim.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 2,
        hidden_dim: int | None = None,
        multiple_of: int = 256,
        bias: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        self.norms = nn.ModuleList(RMSNorm(dim, eps) for _ in range(num_layers))
        self.layers = nn.ModuleList(
            SwiGLUFeedForward(dim, hidden_dim, multiple_of, bias) for _ in range(num_layers)
        )
        self.final_norm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, ff in zip(self.norms, self.layers, strict=True):
            x = x + ff(norm(x))
        return self.final_norm(x)
