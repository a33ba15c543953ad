"""Sampling filters (temperature, top-k, nucleus) and generation-argument checks (chapter 4).

N rows (batch or batch * beams), V vocab_size.
"""

from __future__ import annotations

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


def check_generate_args(max_new_tokens, num_beams, temperature, top_k, top_p, early_stopping):
    """ValueError naming the first invalid generation argument."""
    for name, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1; got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be None or in (0, 1]; got {top_p!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never'; got {early_stopping!r}")


__all__ = ["warp_logits", "check_generate_args"]
