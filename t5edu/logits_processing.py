"""Sampling filters (temperature, top-k, nucleus) and generation-argument checks (chapter 4).

N rows (batch or batch * beams), V vocab_size.
"""

from __future__ import annotations

import math
import numbers

import torch


def warp_logits(
    scores: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Scores `(N, V)` for sampling: divide by temperature, keep the top_k, then the smallest set
    whose probability reaches top_p (nucleus); the rest become -inf. Same order and tie rules as
    HF's TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper (Holtzman et al. 2020
    for top-p); each step is skipped at its neutral value (1.0, None, None/1.0)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k is not None:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k).values[..., -1:]  # (N, 1) the k-th largest score
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # (N, V) ascending cumulative mass
        drop = cum <= 1 - top_p
        drop[..., -1:] = False  # always keep the most likely token
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
    return scores


def _is_real(value) -> bool:
    """An int or float (or a NumPy scalar of one), not a bool: what `x > 0` can test."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_generate_args(
    max_new_tokens,
    num_beams,
    temperature,
    top_k,
    top_p,
    early_stopping,
    length_penalty=1.0,
    do_sample=False,
    use_cache=True,
):
    """ValueError naming the first invalid generation argument, its value and what is allowed.

    Float arguments must be finite real numbers: a NaN compares False with everything, so
    `length_penalty=nan` would make every finished score NaN and return an arbitrary beam, and
    `temperature=inf` would flatten every distribution to uniform without a word.
    """
    for name, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if not (_is_real(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1; got {top_k!r}")
    if top_p is not None and not (_is_real(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be None or a number in (0, 1]; got {top_p!r}")
    if not (_is_real(length_penalty) and math.isfinite(length_penalty)):
        raise ValueError(
            f"length_penalty must be a finite number (the exponent of the length that divides "
            f"a finished beam's score); got {length_penalty!r}"
        )
    # Strict: 1 == True would pass `in (True, False)`, and beam search tests `is True`.
    if not (isinstance(early_stopping, bool) or (isinstance(early_stopping, str)
                                                 and early_stopping == "never")):  # fmt: skip
        raise ValueError(f"early_stopping must be True, False or 'never'; got {early_stopping!r}")
    for name, value in (("do_sample", do_sample), ("use_cache", use_cache)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False; got {value!r}")


__all__ = ["warp_logits", "check_generate_args"]
