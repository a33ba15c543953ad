"""Chapter 11's exercises: typical wrong answers are caught and named.

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from t5edu.exercises import REGISTRY


def _micro_mean(x, y):
    return F.cross_entropy(x.flatten(0, 1), y.flatten(), ignore_index=-100)


def _mean_of_means(micro_logits, micro_labels):
    means = [_micro_mean(x, y) for x, y in zip(micro_logits, micro_labels, strict=True)]
    return torch.stack(means).mean()


def _nan_weighted(micro_logits, micro_labels):  # n_j / n weights, but 0 * NaN for empty ones
    counts = [(y != -100).sum() for y in micro_labels]
    total = sum(counts)
    parts = zip(micro_logits, micro_labels, counts, strict=True)
    return sum(_micro_mean(x, y) * n / total for x, y, n in parts)


def _padding_counted(micro_logits, micro_labels):  # divides by every position, padding too
    sums = [
        F.cross_entropy(x.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")
        for x, y in zip(micro_logits, micro_labels, strict=True)
    ]
    return sum(sums) / sum(y.numel() for y in micro_labels)


def _as_float(micro_logits, micro_labels):
    return REGISTRY["ch11.token_mean_loss"].solution()(micro_logits, micro_labels).item()


def _schedule(shift=0, sqrt=True, normalised=True, constant_as_linear=False):
    def fn(step, warmup_steps, warmup):
        k = warmup_steps
        if step < k:
            return (step + shift) / k if warmup == "linear" or constant_as_linear else 1.0
        if not normalised:
            return 1 / math.sqrt(step)
        return math.sqrt(k / step) if sqrt else k / step

    return fn


def _clip(per_tensor=False, always=False, norm_after=False, max_abs=False, swap=False):
    def fn(grads, max_norm):
        flat = torch.cat([g.flatten() for g in grads])
        norm = flat.abs().max() if max_abs else flat.norm()
        if per_tensor:
            out = [g * min(1.0, max_norm / (g.norm().item() + 1e-6)) for g in grads]
        else:
            scale = max_norm / norm.item() if always else min(1.0, max_norm / norm.item())
            out = [g * scale for g in grads]
        if norm_after:
            norm = torch.cat([g.flatten() for g in out]).norm()
        return (out, norm) if swap else (norm, out)

    return fn


WRONG = [
    ("ch11.lm_head_std", 1.0, "expected 0.0441942, got 1"),
    ("ch11.lm_head_std", 1 / 512, "exceeds the tolerance 1e-06"),
    ("ch11.lm_head_std", 128**-0.5, "expected 0.0441942, got 0.0883883"),
    ("ch11.token_mean_loss", _mean_of_means, "output[0]: wrong values"),
    ("ch11.token_mean_loss", _nan_weighted, "holds NaN"),
    ("ch11.token_mean_loss", _padding_counted, "output[0]: wrong values"),
    ("ch11.token_mean_loss", _as_float, "raised TypeError: return the loss as a tensor"),
    ("ch11.inverse_sqrt", _schedule(shift=1), "wrong values"),
    ("ch11.inverse_sqrt", _schedule(sqrt=False), "wrong values"),
    ("ch11.inverse_sqrt", _schedule(normalised=False), "wrong values"),
    ("ch11.inverse_sqrt", _schedule(constant_as_linear=True), "wrong values"),
    ("ch11.clip_grad_norm", _clip(per_tensor=True), "output[1][0]: wrong values"),
    ("ch11.clip_grad_norm", _clip(always=True), "output[1][0]: wrong values"),
    ("ch11.clip_grad_norm", _clip(norm_after=True), "output[0]: expected"),
    ("ch11.clip_grad_norm", _clip(max_abs=True), "output[0]: expected"),
    ("ch11.clip_grad_norm", _clip(swap=True), "output[0]: expected a number near"),
]  # fmt: skip
