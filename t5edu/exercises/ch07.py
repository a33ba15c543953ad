"""Exercises of chapter 7 (RoPE). Expected outputs come from `t5edu.rope`, which equals HF
LLaMA's `apply_rotary_pos_emb`.

B batch, H heads, T sequence length, Dh head dim, D d_model.
"""

from __future__ import annotations

import torch

from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.rope import RoPE, half_split_index, rope_inv_freq

# --- ch07.inv_freq: the frequencies, with linear and NTK-aware scaling (exercise 4) -----------

_FREQ_SETTINGS = [
    (64, 10000.0, None),
    (8, 10000.0, None),
    (64, 500000.0, None),
    (64, 10000.0, {"type": "linear", "factor": 4.0}),
    (64, 10000.0, {"type": "ntk", "factor": 4.0}),
    (16, 10000.0, {"type": "ntk", "factor": 8.0}),
]


def _inv_freq_solution(dim, base=10000.0, scaling=None):
    kind, s = (None, 1.0) if scaling is None else (scaling["type"], scaling["factor"])
    if kind == "ntk":
        base = base * s ** (dim / (dim - 2))
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    return theta / s if kind == "linear" else theta


register(
    Exercise(
        id="ch07.inv_freq",
        task="inv_freq(dim, base, scaling) -> (dim/2,) theta_i = base**(-2i/dim); scaling None, "
        "{'type': 'linear', 'factor': s} (theta / s) or {'type': 'ntk', 'factor': s} "
        "(base * s**(dim/(dim-2)))",
        cases=lambda: [{"dim": d, "base": b, "scaling": s} for d, b, s in _FREQ_SETTINGS],
        expected=lambda inputs: rope_inv_freq(**inputs),
        solution=lambda: _inv_freq_solution,
        atol=0.0,
        rtol=1e-5,
        why_tol="relative: the frequencies span 1 to 1e-6; the reference is float32",
    )
)

# --- ch07.rope_offset: rotate at positions offset .. offset + T - 1 (exercise 5) --------------


def _rope_cases() -> list[dict]:
    gen = seeded(701)
    return [
        {"x": randn(gen, b, h, t, d), "offset": off}
        for b, h, t, d, off in [
            (2, 2, 5, 8, 0),
            (1, 3, 4, 16, 7),  # offset: a KV cache of 7 positions
            (2, 1, 1, 64, 40),  # one new token at position 40
            (1, 2, 6, 32, 13),
        ]
    ]


def _rope(x, offset):
    return RoPE(x.shape[-1]).rotate(x, offset)


def _rope_solution(x, offset):
    t, d = x.shape[-2:]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (Dh/2,)
    angles = torch.arange(offset, offset + t, dtype=torch.float64)[:, None] * theta  # (T, Dh/2)
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)  # (T, Dh)
    x1, x2 = x.double().chunk(2, dim=-1)
    return (x.double() * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


register(
    Exercise(
        id="ch07.rope_offset",
        task="rope(x, offset) -> x (B, H, T, Dh) rotated as positions offset .. offset + T - 1, "
        "half-split pairs (i, i + Dh/2) as HF LLaMA, base 10000",
        cases=_rope_cases,
        expected=lambda inputs: _rope(**inputs),
        solution=lambda: _rope_solution,
        atol=1e-5,
        why_tol="the reference's angles m * theta are float32, off by up to 4e-6 rad below "
        "position 64",
    )
)

# --- ch07.permute_for_half_split: convert an interleaved checkpoint (exercise 6) --------------


def _permute_cases() -> list[dict]:
    gen = seeded(702)
    return [
        {"weight": randn(gen, h * dh, d), "num_heads": h}
        for h, dh, d in [(2, 8, 16), (4, 4, 12), (1, 16, 8), (3, 6, 10)]
    ]


def _permute(weight, num_heads):
    out, d = weight.shape
    p = half_split_index(out // num_heads)  # within one head
    return weight.view(num_heads, out // num_heads, d)[:, p].reshape(out, d)


def _permute_solution(weight, num_heads):
    dh = weight.shape[0] // num_heads
    per_head = torch.cat([torch.arange(0, dh, 2), torch.arange(1, dh, 2)])  # (Dh,)
    rows = (torch.arange(num_heads)[:, None] * dh + per_head).flatten()  # (H * Dh,)
    return weight[rows]


register(
    Exercise(
        id="ch07.permute_for_half_split",
        task="permute(weight, num_heads) -> the (H*Dh, D) query or key projection weight with "
        "each head's output rows reordered so that half-split RoPE on its output equals "
        "interleaved RoPE on the original's",
        cases=_permute_cases,
        expected=lambda inputs: _permute(**inputs),
        solution=lambda: _permute_solution,
        atol=0.0,
        why_tol="a permutation: the rows must be the original's, exactly",
    )
)
