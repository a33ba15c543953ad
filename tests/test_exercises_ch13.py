"""Chapter 13's exercises: typical wrong answers are caught and named; the FSDP shard rule the
`ch13.fsdp_shard` checker uses (torch.chunk along dim 0) is what `fully_shard` really does.

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

from __future__ import annotations

import math
import os

import torch
import torch.multiprocessing as mp
from gloo_group import free_port, join
from torch import nn

from t5edu.config import T5Config
from t5edu.exercises import REGISTRY
from t5edu.presets import num_parameters
from t5edu.train.distributed import cleanup


def _xxl_gib(bytes_per_parameter, n_gpus=8):
    return bytes_per_parameter * num_parameters(T5Config.get_config("xxl")) / n_gpus / 2**30


def _floor_bounds(numel, world_size):  # every chunk numel // N, the last takes the rest
    base = numel // world_size
    starts = [r * base for r in range(world_size)]
    return [(s, s + base) for s in starts[:-1]] + [(starts[-1], numel)]


def _ceil_bounds(numel, world_size):  # torch.chunk's split, not tensor_split's
    step = math.ceil(numel / world_size)
    return [(min(r * step, numel), min((r + 1) * step, numel)) for r in range(world_size)]


def _textbook_bytes(numel, world_size, element_size):  # right only when N divides M
    return [2 * (world_size - 1) * numel * element_size // world_size] * world_size


def _reduce_scatter_only(numel, world_size, element_size):
    return [(world_size - 1) * numel * element_size // world_size] * world_size


def _balanced_shards(shapes, world_size):  # tensor_split rows: not what fully_shard does
    held = [0] * world_size
    for shape in shapes:
        for r, piece in enumerate(torch.empty(shape, device="meta").tensor_split(world_size)):
            held[r] += piece.numel()
    return held


def _even_shards(shapes, world_size):  # P / N each: no rounding at all
    total = sum(math.prod(s) for s in shapes)
    return [total // world_size] * world_size


def _plain_mean(grads, token_counts):  # every micro-batch weighted alike
    return grads.mean(0)


def _weighted_sum(grads, token_counts):  # forgets to divide by the total
    counts = torch.tensor(token_counts, dtype=grads.dtype)
    return (counts[:, None, None] * grads).sum(0)


WRONG = [
    ("ch13.xxl_fsdp_gib", _xxl_gib(16, n_gpus=1), "wrong; task:"),
    ("ch13.xxl_fsdp_gib", _xxl_gib(8), "exceeds the tolerance 0.05"),
    ("ch13.xxl_fsdp_gib", "20.7 GiB", "expected a number near"),
    ("ch13.ring_chunks", _floor_bounds, "output[0][1]: expected 3, got 2"),
    ("ch13.ring_chunks", _ceil_bounds, "output[2][1]: expected 8, got 9"),
    ("ch13.ring_bytes", _textbook_bytes, "output[0]: expected 5336, got 5333"),
    ("ch13.ring_bytes", _reduce_scatter_only, "expected 2704, got 1352"),
    ("ch13.ring_bytes", lambda numel, world_size, element_size: 2 * numel, "expected a tuple"),
    ("ch13.fsdp_shard", _balanced_shards, "output[1]: expected 27, got 26"),
    ("ch13.fsdp_shard", _even_shards, "output[0]: expected"),
    ("ch13.combine_grads", _plain_mean, "wrong values"),
    ("ch13.combine_grads", _weighted_sum, "wrong values"),
    ("ch13.combine_grads", lambda grads, token_counts: grads, "expected shape"),
]  # fmt: skip


SHARD_SHAPES = [(5,), (3, 7), (1, 4), (10, 3, 2), (7, 5)]


def _shard_worker(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.fsdp import fully_shard

    join(rank, world, port)
    try:
        module = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in SHARD_SHAPES])
        fully_shard(module)
        held = [p.to_local().numel() for p in module.parameters()]
        torch.save(held, os.path.join(out, f"rank{rank}.pt"))
    finally:
        cleanup()


def test_fsdp_shard_reference_is_what_fully_shard_holds(tmp_path):
    world = 3  # more ranks than rows in two of the shapes: empty shards
    mp.spawn(_shard_worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    held = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    want = REGISTRY["ch13.fsdp_shard"].expected({"shapes": SHARD_SHAPES, "world_size": world})
    assert [sum(h) for h in held] == want
    for shape, *per_rank in zip(SHARD_SHAPES, *held, strict=True):
        pieces = torch.empty(shape, device="meta").chunk(world)
        assert list(per_rank) == [p.numel() for p in pieces] + [0] * (world - len(pieces))
