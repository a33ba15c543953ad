"""Exercises of chapter 11 (training). Expected outputs come from `t5edu.t5_model.lm_head_init_std`,
`torch.nn.functional.cross_entropy` on the whole batch at once (with autograd for its gradient),
`t5edu.train.InverseSqrtSchedule` (checked against HF's schedule in tests/test_train.py) and
`torch.nn.utils.clip_grad_norm_`.

B_j / T_j batch and target length of micro-batch j, V vocabulary; -100 marks a padded label.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from t5edu.config import T5Config
from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.t5_model import lm_head_init_std
from t5edu.train.schedules import InverseSqrtSchedule

IGNORE = -100


class _Tensors(list):
    """A list of tensors that a failed case names by their shapes, not by every entry."""

    def __repr__(self) -> str:
        def one(t):
            dtype = "" if t.dtype == torch.float32 else " " + str(t.dtype)[len("torch.") :]
            return f"{tuple(t.shape)}{dtype}"

        return "[" + ", ".join(one(t) for t in self) + "]"


# --- ch11.lm_head_std: the fan-in init of the untied head (exercise 1) ------------------------

register(
    Exercise(
        id="ch11.lm_head_std",
        task="the init std of the untied LM head of the `small` preset with lm_head_init='fan_in'",
        cases=lambda: [{}],
        expected=lambda inputs: lm_head_init_std(
            T5Config.get_config("small", lm_head_init="fan_in")
        ),
        solution=lambda: 512**-0.5,
        run=lambda answer, inputs: answer,
        value=True,
        atol=1e-6,
    )
)

# --- ch11.token_mean_loss: one loss from micro-batch means (exercise 3) -----------------------


def _loss_cases() -> list[dict]:
    gen = seeded(1101)
    cases = []
    # (B_j, T_j, padded labels per row) per micro-batch; rows are padded at their end
    for micro, vocab in [
        ([(2, 5, [0, 2]), (2, 5, [4, 0])], 11),  # same shapes, different token counts
        ([(3, 4, [1, 0, 3]), (1, 7, [0]), (2, 2, [1, 1])], 16),  # lengths differ too
        ([(2, 6, [0, 0])], 9),  # one micro-batch: the plain mean
        ([(2, 3, [3, 3]), (2, 4, [1, 2]), (1, 5, [0])], 7),  # one micro-batch is all padding
    ]:
        logits, labels = [], []
        for b, t, pads in micro:
            logits.append(randn(gen, b, t, vocab) * 2)
            y = torch.randint(0, vocab, (b, t), generator=gen)
            for row, pad in enumerate(pads):
                if pad:
                    y[row, t - pad :] = IGNORE
            labels.append(y)
        cases.append({"micro_logits": _Tensors(logits), "micro_labels": _Tensors(labels)})
    return cases


def _with_grads(loss_fn, micro_logits, micro_labels):
    """(loss, gradient of the loss for each micro-batch's logits), through autograd."""
    logits = [x.clone().requires_grad_() for x in micro_logits]
    loss = loss_fn(micro_logits=logits, micro_labels=micro_labels)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        raise TypeError(
            "return the loss as a tensor autograd can differentiate (no .item(), no float): "
            f"its gradient is what accumulation adds up; got {type(loss).__name__}"
        )
    loss.backward()
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in logits]
    return loss.detach(), grads


def _whole_batch_loss(micro_logits, micro_labels):
    # The reference: one cross-entropy over every target token of the batch at once.
    logits = torch.cat([x.flatten(0, 1) for x in micro_logits])  # (sum_j B_j T_j, V)
    labels = torch.cat([y.flatten() for y in micro_labels])
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def _token_mean_solution(micro_logits, micro_labels):
    counts = [int((y != IGNORE).sum()) for y in micro_labels]
    total = sum(counts)
    loss = 0.0
    for x, y, n in zip(micro_logits, micro_labels, counts, strict=True):
        if n == 0:  # an all-padding micro-batch: its mean is 0/0, its weight 0
            continue
        mean = F.cross_entropy(x.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        loss = loss + mean * n / total
    return loss


register(
    Exercise(
        id="ch11.token_mean_loss",
        task="token_mean_loss(micro_logits, micro_labels) -> 0-d tensor: the mean cross-entropy "
        "over every label != -100 of all micro-batches (lists of (B_j, T_j, V) and (B_j, T_j)), "
        "built from the micro-batch means; differentiable",
        cases=_loss_cases,
        expected=lambda inputs: _with_grads(_whole_batch_loss, **inputs),
        solution=lambda: _token_mean_solution,
        run=lambda answer, inputs: _with_grads(answer, **inputs),
        atol=1e-5,
    )
)

# --- ch11.inverse_sqrt: T5's learning-rate schedule (exercise 4) ------------------------------


def _schedule_cases() -> list[dict]:
    return [
        {"warmup_steps": 10, "warmup": "linear", "steps": range(0, 40)},
        {"warmup_steps": 10, "warmup": "constant", "steps": range(0, 40)},
        {"warmup_steps": 1, "warmup": "linear", "steps": range(0, 12)},
        {"warmup_steps": 200, "warmup": "linear", "steps": range(0, 2000, 7)},
        {"warmup_steps": 10_000, "warmup": "constant", "steps": range(0, 10**6, 9973)},
    ]


def _factors(schedule, warmup_steps, warmup, steps):
    return torch.tensor(
        [float(schedule(step=s, warmup_steps=warmup_steps, warmup=warmup)) for s in steps],
        dtype=torch.float64,
    )


def _t5edu_schedule(step, warmup_steps, warmup):
    return InverseSqrtSchedule(warmup_steps, warmup)(step)


def _inverse_sqrt_solution(step, warmup_steps, warmup):
    if step < warmup_steps:
        return step / warmup_steps if warmup == "linear" else 1.0
    return math.sqrt(warmup_steps / step)


register(
    Exercise(
        id="ch11.inverse_sqrt",
        task="inverse_sqrt(step, warmup_steps, warmup) -> float: step/k ('linear') or 1 "
        "('constant') for step < k, then sqrt(k / step); the checker calls it for every step",
        cases=_schedule_cases,
        expected=lambda inputs: _factors(_t5edu_schedule, **inputs),
        solution=lambda: _inverse_sqrt_solution,
        run=lambda answer, inputs: _factors(answer, **inputs),
        atol=1e-7,
        why_tol="factors lie in [0, 1]; 1e-7 lets a float32 answer pass",
    )
)

# --- ch11.clip_grad_norm: global-norm clipping (exercise 5) -----------------------------------


def _clip_cases() -> list[dict]:
    gen = seeded(1105)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    cases = [
        ([randn(gen, *s) for s in shapes], 1.0),  # norm about 4.9: clipped
        ([randn(gen, *s) for s in shapes], 100.0),  # below the threshold: untouched
        ([randn(gen, *s) * 10 for s in shapes], math.inf),  # clipping off, as grad_clip=0 does
        ([randn(gen, 16) * 3, torch.zeros(3, 3), randn(gen, 2) * 0.01], 0.5),
        ([randn(gen, 6, 6) * 0.1], 1.0),  # one small tensor: untouched
    ]
    return [{"grads": _Tensors(grads), "max_norm": max_norm} for grads, max_norm in cases]


def _torch_clip(grads, max_norm):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.item(), [p.grad for p in params]


def _clip_solution(grads, max_norm):
    norm = torch.cat([g.flatten() for g in grads]).norm()
    scale = min(1.0, max_norm / (norm.item() + 1e-6))
    return norm, [g * scale for g in grads]


register(
    Exercise(
        id="ch11.clip_grad_norm",
        task="clip_grad_norm(grads, max_norm) -> (total_norm, clipped): the L2 norm of all the "
        "tensors of `grads` together, and the list rescaled by min(1, max_norm / total_norm)",
        cases=_clip_cases,
        expected=lambda inputs: _torch_clip(**inputs),
        solution=lambda: _clip_solution,
        atol=1e-5,
        why_tol="float32; torch divides by total_norm + 1e-6, which moves no entry by 1e-6",
    )
)
