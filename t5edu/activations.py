"""Activation functions by the names HF's `ACT2FN` and T5's `feed_forward_proj` use (chapter 6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation written as Mesh TensorFlow and HF's `NewGELUActivation` do.

    `F.gelu(x, approximate="tanh")` is the same function but rounds differently (about 1e-7
    relative), which compounds over layers; this form keeps T5 v1.1 bit-exact with HF's.
    Hendrycks & Gimpel 2016, eq. after (2).
    """
    return (
        0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    )


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact erf form
    "gelu_new": gelu_new,  # Mesh TensorFlow's tanh approximation, used by T5 v1.1
    "silu": F.silu,  # also called swish
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
}

# feed_forward_proj -> (gated, activation). The GLU names of Shazeer 2020 map onto HF's
# "gated-<act>" spellings, so every variant converts to and from HF without loss.
FEED_FORWARD_PROJ = {
    "relu": (False, "relu"),
    "gelu": (False, "gelu"),
    "gated-gelu": (True, "gelu_new"),
    "geglu": (True, "gelu_new"),
    "swiglu": (True, "silu"),
    "gated-silu": (True, "silu"),
    "reglu": (True, "relu"),
    "gated-relu": (True, "relu"),
    "bilinear": (True, "linear"),
    "gated-linear": (True, "linear"),
    "glu": (True, "sigmoid"),
}


def get_activation(name: str):
    """The activation called `name`; ValueError listing the known names otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}") from None
