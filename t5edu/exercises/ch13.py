"""Exercises of chapter 13 (scaling out). Expected outputs come from `t5edu.num_parameters`
(tested against the built models), `torch.tensor_split` and `torch.chunk` (the splits of the
ring and of FSDP2's `fully_shard`; tests/test_exercises_ch13.py checks the latter on real gloo
processes), `t5edu.train.ring_allreduce.simulate_ring_all_reduce` (tested against send/recv on
gloo processes and `dist.all_reduce`) and autograd.

N world size (ranks), M elements, K micro-batches, B batch, T target length, V vocabulary,
D width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from t5edu.config import T5Config
from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.presets import num_parameters
from t5edu.t5_model import T5ForConditionalGeneration
from t5edu.train.ring_allreduce import simulate_ring_all_reduce

# --- ch13.xxl_fsdp_gib: the training state of T5-XXL on each of 8 GPUs (exercise 1) ----------

register(
    Exercise(
        id="ch13.xxl_fsdp_gib",
        task="GiB (2**30 bytes) per GPU of T5-XXL's fp32 weights, gradients and AdamW moments "
        "under FSDP on 8 GPUs",
        cases=lambda: [{}],
        expected=lambda inputs: 16 * num_parameters(T5Config.get_config("xxl")) / 8 / 2**30,
        solution=lambda: 16 * num_parameters(T5Config.get_config("xxl")) / 8 / 2**30,
        run=lambda answer, inputs: answer,
        value=True,
        atol=0.05,
        why_tol="to 0.05 GiB",
    )
)

# --- ch13.ring_chunks: where the ring cuts a flat buffer (exercise 3) -------------------------

_CHUNK_CASES = [(8, 2), (676, 2), (10, 4), (11, 3), (3, 4), (1000, 7), (0, 2), (5, 1)]


def _tensor_split_bounds(numel, world_size):
    sizes = [len(c) for c in torch.arange(numel).tensor_split(world_size)]
    stops = torch.tensor(sizes, dtype=torch.long).cumsum(0).tolist()
    return [(stop - size, stop) for size, stop in zip(sizes, stops, strict=True)]


def _chunk_bounds_solution(numel, world_size):
    base, extra = divmod(numel, world_size)
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


register(
    Exercise(
        id="ch13.ring_chunks",
        task="ring_chunks(numel, world_size) -> [(start, stop), ...] per rank, the split of "
        "torch.tensor_split: sizes differ by at most one, the longer chunks first",
        cases=lambda: [{"numel": m, "world_size": n} for m, n in _CHUNK_CASES],
        expected=lambda inputs: _tensor_split_bounds(**inputs),
        solution=lambda: _chunk_bounds_solution,
    )
)

# --- ch13.ring_bytes: the bytes each rank sends in a ring all-reduce (exercise 4) -------------

_DTYPES = {1: torch.uint8, 2: torch.bfloat16, 4: torch.float32, 8: torch.float64}
_BYTES_CASES = [(676, 2, 4), (1024, 4, 4), (1000, 3, 4), (10, 4, 2), (3, 4, 4), (999, 8, 8),
                (7, 1, 4)]  # fmt: skip


def _simulated_bytes(numel, world_size, element_size):
    zeros = [torch.zeros(numel, dtype=_DTYPES[element_size]) for _ in range(world_size)]
    return simulate_ring_all_reduce(zeros)[1]


def _bytes_solution(numel, world_size, element_size):
    n = world_size
    sizes = [stop - start for start, stop in _chunk_bounds_solution(numel, n)]
    # Rank r sends every chunk but (r + 1) mod N in reduce-scatter, every one but (r + 2) mod N
    # in all-gather.
    return [
        (2 * numel - sizes[(r + 1) % n] - sizes[(r + 2) % n]) * element_size if n > 1 else 0
        for r in range(n)
    ]


register(
    Exercise(
        id="ch13.ring_bytes",
        task="ring_bytes(numel, world_size, element_size) -> [bytes rank 0 sends, bytes rank 1 "
        "sends, ...] in a ring all-reduce of a flat buffer split like torch.tensor_split",
        cases=lambda: [
            {"numel": m, "world_size": n, "element_size": e} for m, n, e in _BYTES_CASES
        ],
        expected=lambda inputs: _simulated_bytes(**inputs),
        solution=lambda: _bytes_solution,
    )
)

# --- ch13.fsdp_shard: the values each rank holds under fully_shard (exercise 5) ---------------


def _tiny_shapes() -> list[tuple[int, ...]]:
    """The parameter shapes of the chapter's runs: the tiny preset, a 64-token vocabulary."""
    config = T5Config.get_config("tiny")
    config.vocab_size = 64
    with torch.device("meta"):  # shapes only: nothing allocated, nothing drawn
        model = T5ForConditionalGeneration(config)
    return [tuple(p.shape) for p in model.parameters()]


def _shard_cases() -> list[dict]:
    tiny = _tiny_shapes()
    return [
        {"shapes": shapes, "world_size": n}
        for shapes, n in [
            (tiny, 2),
            (tiny, 3),
            ([(5,), (3, 7), (1, 4), (10, 3, 2)], 4),  # fewer rows than ranks: empty shards
            ([(7, 5), (2,), (9, 1, 3)], 8),
            ([(6, 6)], 1),
        ]
    ]


def _chunked_numel(shapes, world_size):
    held = [0] * world_size
    for shape in shapes:
        # torch.chunk: ceil(d0 / N) rows per chunk, so fewer than N chunks can come back.
        for r, piece in enumerate(torch.empty(shape, device="meta").chunk(world_size, dim=0)):
            held[r] += piece.numel()
    return held


def _shard_solution(shapes, world_size):
    held = [0] * world_size
    for shape in shapes:
        rows, per_row = shape[0], math.prod(shape[1:])
        step = math.ceil(rows / world_size)
        for r in range(world_size):
            held[r] += max(0, min(step, rows - r * step)) * per_row
    return held


register(
    Exercise(
        id="ch13.fsdp_shard",
        task="fsdp_shard(shapes, world_size) -> [values rank 0 holds, ...]: fully_shard cuts "
        "each tensor along dim 0 like torch.chunk (ceil(d0 / N) rows per rank, in order)",
        cases=_shard_cases,
        expected=lambda inputs: _chunked_numel(**inputs),
        solution=lambda: _shard_solution,
    )
)

# --- ch13.combine_grads: micro-batch gradients to the full batch's (exercise 7) ---------------


def _loss(weight, x, labels):
    """Mean cross-entropy over the non-padding tokens of a linear model: x (B, T, D)."""
    logits = x @ weight.T  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def _grad(weight, x, labels):
    w = weight.clone().requires_grad_()
    _loss(w, x, labels).backward()
    return w.grad


def _combine_cases() -> list[dict]:
    gen = seeded(1301)
    cases = []
    for b, t, d, v, splits in [(8, 6, 16, 10, [4, 4]), (6, 5, 8, 7, [1, 2, 3]),
                               (4, 9, 8, 5, [1, 1, 1, 1]), (3, 4, 4, 6, [3])]:  # fmt: skip
        weight, x = randn(gen, v, d), randn(gen, b, t, d)
        labels = torch.randint(0, v, (b, t), generator=gen)
        lengths = torch.randint(1, t + 1, (b,), generator=gen)  # targets of different lengths
        labels[torch.arange(t)[None, :] >= lengths[:, None]] = -100  # padding
        grads, counts = [], []
        for rows in torch.arange(b).split(splits):
            grads.append(_grad(weight, x[rows], labels[rows]))
            counts.append(int((labels[rows] != -100).sum()))
        cases.append({"grads": torch.stack(grads), "token_counts": counts,  # (K, V, D)
                      "weight": weight, "x": x, "labels": labels})  # fmt: skip
    return cases


def _combine_solution(grads, token_counts):
    counts = torch.tensor(token_counts, dtype=grads.dtype)  # (K,)
    return (counts[:, None, None] * grads).sum(0) / counts.sum()  # (V, D)


register(
    Exercise(
        id="ch13.combine_grads",
        task="combine_grads(grads, token_counts) -> (V, D), the gradient of the mean loss over "
        "all tokens, from grads (K, V, D), micro-batch k's gradient of its own mean token loss",
        cases=_combine_cases,
        expected=lambda inputs: _grad(inputs["weight"], inputs["x"], inputs["labels"]),
        solution=lambda: _combine_solution,
        run=lambda answer, inputs: answer(inputs["grads"], inputs["token_counts"]),
        atol=1e-6,
        why_tol="float32 gradients of size about 0.1; the sums differ only in their order",
    )
)
