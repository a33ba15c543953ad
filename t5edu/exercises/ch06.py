"""Exercises of chapter 6 (GLU variants). Expected outputs come from `t5edu.glu`.

D model width, F hidden width of the feed-forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t5edu.activations import get_activation
from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.glu import GLUVariants, SwiGLU, SwiGLUFeedForward, glu_hidden_dim

# --- ch06.glu_hidden_dim: the LLaMA width rule (exercise 3) -----------------------------------

register(
    Exercise(
        id="ch06.glu_hidden_dim",
        task="glu_hidden_dim(dim, multiple_of) -> int: 2/3 * 4 * dim (truncated to an int), "
        "rounded up to a multiple of multiple_of",
        cases=lambda: [
            {"dim": d, "multiple_of": m}
            for d, m in [(4096, 256), (768, 256), (512, 256), (64, 8), (100, 1), (3, 8), (6, 4)]
        ],
        expected=lambda inputs: glu_hidden_dim(**inputs),
        solution=lambda: lambda dim, multiple_of: multiple_of * -(-int(8 * dim / 3) // multiple_of),
    )
)

# --- ch06.fused_gate_up: one matrix for gate and up (exercise 4) ------------------------------


def _fuse_cases() -> list[dict]:
    gen = seeded(601)
    cases = []
    for d, f, variant in [(16, 40, "swiglu"), (8, 12, "geglu"), (12, 20, "reglu")]:
        cases.append(
            {"gate_weight": randn(gen, f, d) * d**-0.5, "up_weight": randn(gen, f, d) * d**-0.5,
             "variant": variant, "x": randn(gen, 3, 5, d)}
        )  # fmt: skip
    return cases


_ACT = {"swiglu": "silu", "geglu": "gelu_new", "reglu": "relu"}


def _unfused(gate_weight, up_weight, variant, x):
    gate = get_activation(_ACT[variant])(F.linear(x, gate_weight))  # (..., F)
    return gate * F.linear(x, up_weight)


def _run_fused(fuse, inputs):
    f, d = inputs["gate_weight"].shape
    w = fuse(inputs["gate_weight"], inputs["up_weight"])
    if not isinstance(w, torch.Tensor) or w.shape != (2 * f, d):
        got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"the fused weight must be (2F, D) = {(2 * f, d)}; got {got}")
    # What the fused layer computes: one Linear(D, 2F), then the gated unit on its halves.
    return GLUVariants(inputs["variant"])(F.linear(inputs["x"], w))


register(
    Exercise(
        id="ch06.fused_gate_up",
        task="fuse(gate_weight, up_weight) -> (2F, D) weight W such that "
        "GLUVariants(variant)(x @ W.T) == act(x @ gate_weight.T) * (x @ up_weight.T)",
        cases=_fuse_cases,
        expected=lambda inputs: _unfused(**inputs),
        run=_run_fused,
        solution=lambda: lambda gate_weight, up_weight: torch.cat([up_weight, gate_weight]),
        atol=1e-5,
    )
)

# --- ch06.swiglu_ffn: the SwiGLU feed-forward (exercise 5) ------------------------------------


def _ffn_cases() -> list[dict]:
    gen = seeded(602)
    cases = []
    for shape, f in [((2, 5, 16), 40), ((7, 8), 24), ((1, 3, 4, 12), 32)]:
        d = shape[-1]
        cases.append(
            {"x": randn(gen, *shape), "gate_weight": randn(gen, f, d) * d**-0.5,
             "up_weight": randn(gen, f, d) * d**-0.5, "down_weight": randn(gen, d, f) * f**-0.5}
        )  # fmt: skip
    return cases


def _swiglu_ffn(x, gate_weight, up_weight, down_weight):
    f, d = gate_weight.shape
    ffn = SwiGLUFeedForward(d, hidden_dim=f)
    ffn.load_state_dict(
        {"gate_proj.weight": gate_weight, "up_proj.weight": up_weight,
         "down_proj.weight": down_weight}
    )  # fmt: skip
    return ffn(x).detach()


register(
    Exercise(
        id="ch06.swiglu_ffn",
        task="swiglu_ffn(x, gate_weight, up_weight, down_weight) -> (..., D): "
        "(silu(x W_gate^T) * x W_up^T) W_down^T, weights in nn.Linear's (out, in) layout",
        cases=_ffn_cases,
        expected=lambda inputs: _swiglu_ffn(**inputs),
        solution=lambda: (
            lambda x, gate_weight, up_weight, down_weight: (
                (F.silu(x @ gate_weight.T) * (x @ up_weight.T)) @ down_weight.T
            )
        ),
        atol=1e-5,
    )
)

# --- ch06.swiglu_backward: SwiGLU's gradients by hand (exercise 6) ----------------------------


def _backward_cases() -> list[dict]:
    gen = seeded(603)
    cases = []
    for shape in [(4, 6), (2, 3, 8), (1, 16)]:
        a = randn(gen, *shape, dtype=torch.float64)
        b = randn(gen, *shape, dtype=torch.float64) * 3  # gates well into both tails
        cases.append({"a": a, "b": b, "grad_out": randn(gen, *shape, dtype=torch.float64)})
    return cases


def _autograd_swiglu(a, b, grad_out):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    y = SwiGLU()(torch.cat([a, b], dim=-1))  # a * silu(b)
    return torch.autograd.grad(y, (a, b), grad_out)


def _hand_swiglu(a, b, grad_out):
    s = torch.sigmoid(b)
    return grad_out * b * s, grad_out * a * s * (1 + b * (1 - s))


register(
    Exercise(
        id="ch06.swiglu_backward",
        task="swiglu_backward(a, b, grad_out) -> (grad_a, grad_b) of y = a * silu(b), without "
        "autograd; float64",
        cases=_backward_cases,
        expected=lambda inputs: _autograd_swiglu(**inputs),
        solution=lambda: _hand_swiglu,
        atol=1e-10,
        why_tol="float64",
    )
)
