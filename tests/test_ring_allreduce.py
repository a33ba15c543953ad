"""The ring all-reduce of chapter 13: its chunks, its schedule, its simulation and send/recv.

The simulation must give every rank the elementwise sum (exactly, on integers) and the bytes
the closed form gives; `ring_all_reduce_` on 3 gloo processes must agree with `dist.all_reduce`
and with the simulation's byte counts; chapter 13's demo must give DDP's gradient.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_group import free_port, join, rank_environment

from t5edu.train.distributed import cleanup
from t5edu.train.ring_allreduce import (
    ring_all_reduce_,
    ring_chunk_bounds,
    ring_steps,
    simulate_ring_all_reduce,
)

SIZES = [(0, 1), (5, 1), (8, 2), (9, 2), (10, 3), (2, 3), (3, 4), (1000, 7), (64, 64), (1, 5)]


@pytest.mark.parametrize(("numel", "world_size"), SIZES)
def test_chunks_are_those_of_tensor_split(numel, world_size):
    pieces = torch.arange(numel).tensor_split(world_size)
    bounds = ring_chunk_bounds(numel, world_size)
    assert [stop - start for start, stop in bounds] == [len(p) for p in pieces]
    for (start, stop), piece in zip(bounds, pieces, strict=True):
        assert torch.equal(torch.arange(start, stop), piece)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_each_rank_receives_what_its_left_neighbour_sends(world_size):
    n = world_size
    steps = [list(ring_steps(r, n)) for r in range(n)]
    assert all(len(s) == 2 * (n - 1) for s in steps)
    for r in range(n):
        left = steps[(r - 1) % n]
        for (phase, _, recv), (left_phase, left_send, _) in zip(steps[r], left, strict=True):
            assert phase == left_phase and recv == left_send
        # After reduce-scatter rank r owns chunk r + 1: the last chunk it added to.
        if n > 1:
            assert steps[r][n - 2][2] == (r + 1) % n


@pytest.mark.parametrize(("numel", "world_size"), SIZES)
def test_simulation_sums_exactly_and_counts_the_bytes(numel, world_size):
    gen = torch.Generator().manual_seed(numel + world_size)
    tensors = [torch.randint(-1000, 1000, (numel,), generator=gen) for _ in range(world_size)]
    results, sent = simulate_ring_all_reduce(tensors)
    want = torch.stack(tensors).sum(0)
    for got in results:
        assert torch.equal(got, want)
    sizes = [stop - start for start, stop in ring_chunk_bounds(numel, world_size)]
    n = world_size
    # Reduce-scatter sends every chunk but r + 1, all-gather every chunk but r + 2.
    closed = [8 * (2 * numel - sizes[(r + 1) % n] - sizes[(r + 2) % n]) * (n > 1) for r in range(n)]
    assert sent == closed
    if numel % world_size == 0:  # the textbook factor 2 (N - 1) / N
        assert all(s == 8 * 2 * (n - 1) * numel // n for s in sent)


def test_simulation_keeps_shapes_and_leaves_inputs_alone():
    tensors = [torch.full((2, 3), float(r)) for r in range(3)]
    results, _ = simulate_ring_all_reduce(tensors)
    assert all(t.shape == (2, 3) and torch.equal(t, torch.full((2, 3), 3.0)) for t in results)
    assert torch.equal(tensors[2], torch.full((2, 3), 2.0))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="need world_size >= 1"):
        ring_chunk_bounds(4, 0)
    with pytest.raises(ValueError, match="same shape and dtype"):
        simulate_ring_all_reduce([torch.zeros(3), torch.zeros(4)])
    with pytest.raises(ValueError, match="same shape and dtype"):
        simulate_ring_all_reduce([])
    with pytest.raises(ValueError, match="needs a contiguous tensor"):
        ring_all_reduce_(torch.zeros(4, 4).T)


def _ring_worker(rank: int, world: int, port: int, out: str) -> None:
    join(rank, world, port)
    try:
        results = {}
        for numel in (10, 2, 0, 7):  # uneven chunks, fewer elements than ranks, none at all
            gen = torch.Generator().manual_seed(100 * numel + rank)  # each rank its own values
            for dtype in (torch.int64, torch.float32):
                mine = (torch.randn(numel, generator=gen) * 100).to(dtype)
                ring, collective = mine.clone(), mine.clone()
                sent = ring_all_reduce_(ring)
                dist.all_reduce(collective)
                results[(numel, str(dtype))] = (mine, ring, collective, sent)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        cleanup()


def test_send_recv_ring_equals_all_reduce_and_the_simulation(tmp_path):
    world = 3
    mp.spawn(_ring_worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for key in ranks[0]:
        inputs = [ranks[r][key][0] for r in range(world)]
        simulated, simulated_sent = simulate_ring_all_reduce(inputs)
        for r in range(world):
            _, ring, collective, sent = ranks[r][key]
            assert sent == simulated_sent[r], key
            assert torch.equal(ring, simulated[r]), key  # the same sums in the same order
            if ring.dtype == torch.int64:
                assert torch.equal(ring, collective), key
            else:  # gloo may add the three in another order
                torch.testing.assert_close(ring, collective, atol=1e-4, rtol=1e-6)


def _demo_worker(rank: int, world: int, port: int, out: str) -> None:
    from t5edu.train import grad_sync_demo

    rank_environment(rank, world, port)
    grad_sync_demo.main([out])


def test_demo_gradients_equal_ddp_and_the_full_batch(tmp_path):
    from t5edu.train.grad_sync_demo import flat_grad, make_batch, make_model

    mp.spawn(_demo_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not torch.allclose(r0["local"], r1["local"])  # the halves' gradients differ
    for key in ("ring", "all_reduce", "ddp"):
        assert torch.equal(r0[key], r1[key]), key  # every rank holds the same
        # Two summands and a division by 2: exact whatever the order.
        assert torch.equal(r0[key], r0["ring"]), key
    assert torch.equal(r0["ring"], (r0["local"] + r1["local"]) / 2)
    full = flat_grad(make_model(), *make_batch())
    torch.testing.assert_close(r0["ring"], full, atol=1e-6, rtol=0)
    assert r0["ring_bytes_sent"] == r1["ring_bytes_sent"] == 4 * full.numel()  # 2 (N - 1) / N M
