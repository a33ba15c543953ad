"""Learning-rate schedules: inverse square root (T5) and cosine (nanoT5), each with warm-up.

Each schedule is a small callable `factor(step) -> float` that multiplies the optimizer's peak lr;
`build_scheduler` wraps it in `torch.optim.lr_scheduler.LambdaLR`, so the scheduler's state (just
the step count) checkpoints like any other. `step` counts the optimizer steps already taken: the
lr used by update number s + 1 is `peak * factor(s)`, the convention of HF's schedule functions.
Chapter 11 plots them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("cosine", "inverse_sqrt", "constant")


@dataclass
class InverseSqrtSchedule:
    """T5's schedule: warm-up for `warmup_steps`, then decay as 1/sqrt(step).

    factor(s) = s / k for s < k (`warmup="linear"`) or 1 (`warmup="constant"`), then sqrt(k / s).
    The constant form is the T5 paper's lr = 1 / sqrt(max(s, k)) with k = 10^4 (Raffel et al.
    2020, section 3.1.2) normalised by its peak 1/sqrt(k); the linear form is HF's
    `get_inverse_sqrt_schedule` with `timescale = warmup_steps`.
    """

    warmup_steps: int  # k >= 1: the decay is measured relative to the end of warm-up
    warmup: str = "linear"  # "linear" ramps from 0; "constant" holds the peak (T5 paper)

    def __post_init__(self):
        if self.warmup_steps < 1:
            raise ValueError(f"inverse_sqrt needs warmup_steps >= 1; got {self.warmup_steps}")
        if self.warmup not in ("linear", "constant"):
            raise ValueError(f"warmup must be 'linear' or 'constant'; got {self.warmup!r}")

    def __call__(self, step: int) -> float:
        k = self.warmup_steps
        if step < k:
            return step / k if self.warmup == "linear" else 1.0
        return math.sqrt(k / step)


@dataclass
class CosineSchedule:
    """Linear warm-up to the peak, then half a cosine down to `min_ratio` of it at `total_steps`.

    factor(s) = s / k for s < k; then with p = (s - k) / (T - k) clipped to [0, 1],
    factor(s) = r + (1 - r) (1 + cos(pi p)) / 2 (Loshchilov & Hutter 2017, without restarts).
    With r = 0 it equals HF's `get_cosine_schedule_with_warmup`; with r > 0 HF's
    `get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=r)`. nanoT5 decays to lr 1e-5.
    """

    warmup_steps: int  # k >= 0
    total_steps: int  # T > k: where the cosine reaches its floor
    min_ratio: float = 0.0  # r: floor as a fraction of the peak lr

    def __post_init__(self):
        if self.warmup_steps < 0 or self.total_steps <= self.warmup_steps:
            raise ValueError(
                "cosine needs 0 <= warmup_steps < total_steps; got "
                f"warmup_steps={self.warmup_steps}, total_steps={self.total_steps}"
            )
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"min_ratio must lie in [0, 1]; got {self.min_ratio}")

    def __call__(self, step: int) -> float:
        k, r = self.warmup_steps, self.min_ratio
        if step < k:
            return step / k
        p = min(1.0, (step - k) / (self.total_steps - k))
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass
class ConstantSchedule:
    """Linear warm-up over `warmup_steps`, then the peak lr for ever."""

    warmup_steps: int = 0

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        return step / self.warmup_steps if step < self.warmup_steps else 1.0


def make_schedule(name: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """The schedule callable named `name` (one of `SCHEDULES`); ValueError naming it if unknown."""
    if name == "cosine":
        return CosineSchedule(warmup_steps, total_steps, min_ratio)
    if name == "inverse_sqrt":
        return InverseSqrtSchedule(warmup_steps)
    if name == "constant":
        return ConstantSchedule(warmup_steps)
    raise ValueError(f"schedule name must be one of {SCHEDULES}; got {name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "cosine",
    warmup_steps: int = 0,
    total_steps: int = 1,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """`LambdaLR` applying the schedule `name` to every parameter group's peak lr.

    Raises:
        ValueError: for an unknown `name` or inconsistent step counts (see each schedule).
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_schedule(name, warmup_steps, total_steps, min_ratio)
    )
