"""Exercises of chapter 5 (RMSNorm). Expected outputs come from `t5edu.RMSNorm` and autograd.

N rows, d channels (the norm runs over the last dim).
"""

from __future__ import annotations

import torch

from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.rmsnorm import RMSNorm

# --- ch05.rms_norm: the forward (exercise 4) --------------------------------------------------


def _norm_cases() -> list[dict]:
    gen = seeded(501)
    cases = []
    for shape, scale, shift, eps in [
        ((4, 16), 1.0, 0.0, 1e-6),
        ((2, 3, 64), 3.0, 1.0, 1e-6),  # rows with a mean: RMSNorm keeps it, LayerNorm would not
        ((5, 8), 0.05, 0.0, 1e-2),  # small rows: eps matters, and where it goes
        ((3, 32), 1e3, 0.0, 1e-6),  # large rows: no overflow in float32
    ]:
        x = randn(gen, *shape) * scale + shift
        cases.append({"x": x, "weight": randn(gen, shape[-1]), "eps": eps})
    return cases


def _rms_norm(x, weight, eps=1e-6):
    norm = RMSNorm(x.shape[-1], eps).to(x.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm(x).detach()


register(
    Exercise(
        id="ch05.rms_norm",
        task="rms_norm(x, weight, eps=1e-6) -> x / sqrt(mean(x**2, last dim) + eps) * weight, "
        "x (..., d), weight (d,)",
        cases=_norm_cases,
        expected=lambda inputs: _rms_norm(**inputs),
        solution=lambda: (
            lambda x, weight, eps=1e-6: (
                x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
            )
        ),
        atol=1e-5,
        rtol=1e-5,
        why_tol="float32; relative too, since outputs reach |weight| * sqrt(d)",
    )
)

# --- ch05.rms_norm_backward: the hand-derived gradients (exercise 5) --------------------------


def _grad_cases() -> list[dict]:
    gen = seeded(502)
    cases = []
    for n, d, eps in [(6, 16, 1e-6), (3, 8, 1e-2), (10, 32, 1e-6), (1, 4, 0.1)]:
        x = randn(gen, n, d, dtype=torch.float64) * 2 + 0.5
        weight = randn(gen, d, dtype=torch.float64)
        grad_out = randn(gen, n, d, dtype=torch.float64)
        cases.append({"x": x, "weight": weight, "grad_out": grad_out, "eps": eps})
    return cases


def _autograd_grads(x, weight, grad_out, eps):
    norm = RMSNorm(x.shape[-1], eps).double()
    with torch.no_grad():
        norm.weight.copy_(weight)
    x = x.clone().requires_grad_()
    norm(x).backward(grad_out)
    return x.grad, norm.weight.grad


def _hand_grads(x, weight, grad_out, eps=1e-6):
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (N, 1) reciprocal RMS
    x_hat = x * r
    gw = grad_out * weight
    grad_x = r * (gw - x_hat * (gw * x_hat).mean(-1, keepdim=True))  # (N, d)
    return grad_x, (grad_out * x_hat).sum(0)  # (N, d), (d,)


register(
    Exercise(
        id="ch05.rms_norm_backward",
        task="rms_norm_backward(x, weight, grad_out, eps) -> (grad_x (N, d), grad_weight (d,)) "
        "of RMSNorm for x (N, d), without autograd; float64 inputs",
        cases=_grad_cases,
        expected=lambda inputs: _autograd_grads(**inputs),
        solution=lambda: _hand_grads,
        atol=1e-10,
        why_tol="float64: a correct formula agrees with autograd to about 1e-15",
    )
)

# --- ch05.rms_norm_grad_eps: the gradient exercise 2 leaves out (exercise 6) ------------------


def _eps_grad(x, weight, grad_out, eps):
    eps_t = torch.tensor(eps, dtype=torch.float64, requires_grad=True)
    # The package's RMSNorm takes eps as a number, so the formula is written out here; the
    # forward equals RMSNorm's (checked by the ch05.rms_norm exercise's reference).
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps_t) * weight
    torch.testing.assert_close(y, _rms_norm(x, weight, eps), rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(y, eps_t, grad_out)
    return grad


def _eps_grad_solution(x, weight, grad_out, eps):
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (N, 1)
    return (grad_out * weight * x * (-0.5 * r**3)).sum()


register(
    Exercise(
        id="ch05.rms_norm_grad_eps",
        task="rms_norm_grad_eps(x, weight, grad_out, eps) -> 0-d tensor dL/deps of RMSNorm, "
        "x (N, d), float64",
        cases=_grad_cases,
        expected=lambda inputs: _eps_grad(**inputs),
        solution=lambda: _eps_grad_solution,
        atol=1e-10,
        why_tol="float64",
    )
)
