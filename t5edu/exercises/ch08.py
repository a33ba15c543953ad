"""Exercises of chapter 8 (ALiBi). Expected outputs come from `t5edu.alibi`, whose slopes equal
HF BLOOM's.

H heads, Tq/Tk query/key length.
"""

from __future__ import annotations

import math

import torch

from t5edu.alibi import ALiBi, alibi_slopes
from t5edu.exercises._core import Exercise, register

# --- ch08.longest_half_life: the furthest-looking head of 16 (exercise 3) ---------------------

register(
    Exercise(
        id="ch08.longest_half_life",
        task="the largest half-life ln(2) / m_h over the slopes of 16 heads, in positions",
        cases=lambda: [{}],
        expected=lambda inputs: math.log(2) / alibi_slopes(16).double().min().item(),
        solution=lambda: 256 * math.log(2),
        run=lambda answer, inputs: answer,
        value=True,
        atol=0.01,
        why_tol="to 0.01 positions",
    )
)

# --- ch08.slopes: the slopes for any head count (exercise 4) ----------------------------------


def _slopes_solution(num_heads):
    n = 2 ** math.floor(math.log2(num_heads))
    first = [2 ** (-8 * h / n) for h in range(1, n + 1)]
    between = [2 ** (-8 * h / (2 * n)) for h in range(1, 2 * (num_heads - n), 2)]
    return torch.tensor(first + between)


register(
    Exercise(
        id="ch08.slopes",
        task="slopes(num_heads) -> (num_heads,) float: 2**(-8h/n) for n = num_heads a power of "
        "two; otherwise those of the largest power of two n below, then the odd-numbered "
        "slopes of 2n heads",
        cases=lambda: [{"num_heads": h} for h in [1, 2, 4, 8, 6, 12, 16, 20, 33]],
        expected=lambda inputs: alibi_slopes(**inputs),
        solution=lambda: _slopes_solution,
        atol=0.0,
        rtol=1e-6,
        why_tol="relative: slopes span 1/2 to 1/256; the reference is float32",
    )
)

# --- ch08.alibi_bias: the bias with fewer queries than keys (exercise 5) ----------------------


def _bias_cases() -> list[dict]:
    return [
        {"num_heads": h, "q_len": tq, "k_len": tk, "causal": c}
        for h, tq, tk, c in [
            (4, 6, 6, True),
            (4, 6, 6, False),
            (8, 1, 9, True),  # one new query after 8 cached keys
            (3, 3, 10, True),
            (2, 4, 7, False),
        ]
    ]


def _alibi_bias(num_heads, q_len, k_len, causal):
    return ALiBi(num_heads).bias(q_len, k_len, causal)


def _alibi_bias_solution(num_heads, q_len, k_len, causal):
    m = alibi_slopes(num_heads)[:, None, None]  # (H, 1, 1)
    i = torch.arange(k_len - q_len, k_len)[:, None]  # (Tq, 1): the last q_len positions
    j = torch.arange(k_len)[None, :]  # (1, Tk)
    return m * ((j - i) if causal else -(j - i).abs()).float()  # (H, Tq, Tk)


register(
    Exercise(
        id="ch08.alibi_bias",
        task="alibi_bias(num_heads, q_len, k_len, causal) -> (H, q_len, k_len) float: "
        "m * (j - i) causal or -m * |i - j| bidirectional, query i at position "
        "k_len - q_len + i (bottom-right, as a KV cache needs)",
        cases=_bias_cases,
        expected=lambda inputs: _alibi_bias(**inputs),
        solution=lambda: _alibi_bias_solution,
        atol=1e-6,
    )
)
