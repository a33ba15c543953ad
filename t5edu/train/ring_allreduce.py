"""Ring all-reduce from point-to-point messages: the algorithm behind DDP's gradient sum.

N ranks each hold a tensor of M elements, split into N chunks (`torch.tensor_split`: the first
M mod N chunks one element longer). The ranks form a ring, rank r sending to r + 1 and receiving
from r - 1 (mod N), and every rank sends one chunk per step:

- reduce-scatter, N - 1 steps: at step s rank r sends chunk (r - s) mod N and adds the chunk it
  receives, (r - s - 1) mod N, to its own. After them rank r holds the full sum of chunk
  (r + 1) mod N.
- all-gather, N - 1 steps: at step s rank r sends chunk (r + 1 - s) mod N and overwrites its
  chunk (r - s) mod N with the one it receives. After them every rank holds every summed chunk.

Each rank sends 2(N - 1) chunks, about 2 (N - 1) / N * M elements, whatever N: bandwidth
optimal (Patarasuk and Yuan 2009; the schedule of Baidu's ring all-reduce and of NCCL's ring).
Chapter 13 runs `ring_all_reduce_` on two gloo processes and simulates it with
`simulate_ring_all_reduce`.

N world size, M elements, r rank, s step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist


def ring_chunk_bounds(numel: int, world_size: int) -> list[tuple[int, int]]:
    """`[(start, stop), ...]`, one per rank: how a flat tensor of `numel` elements is chunked.

    The split of `torch.tensor_split(t, world_size)`: sizes differ by at most one, the longer
    chunks first; with `numel < world_size` the last chunks are empty.

    Raises:
        ValueError: for `world_size < 1` or `numel < 0`.
    """
    if world_size < 1 or numel < 0:
        raise ValueError(f"need world_size >= 1 and numel >= 0; got {world_size} and {numel}")
    base, extra = divmod(numel, world_size)
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def ring_steps(rank: int, world_size: int) -> Iterator[tuple[str, int, int]]:
    """`(phase, send_chunk, recv_chunk)` for each of rank's 2(N - 1) steps, in order.

    phase is "reduce-scatter" (add the received chunk) or "all-gather" (copy it). The chunk a
    rank receives at step s is the one its left neighbour sends at step s.
    """
    n = world_size
    for s in range(n - 1):
        yield "reduce-scatter", (rank - s) % n, (rank - s - 1) % n
    for s in range(n - 1):
        yield "all-gather", (rank + 1 - s) % n, (rank - s) % n


def simulate_ring_all_reduce(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """Run the ring schedule in one process: `tensors[r]` is rank r's tensor.

    Returns every rank's result (each the elementwise sum of all `tensors`, summed in ring
    order) and the bytes each rank sent. All steps happen at once: every message of a step is
    taken before any rank updates.

    Raises:
        ValueError: for an empty list or tensors of different shapes or dtypes.
    """
    if not tensors or any(t.shape != tensors[0].shape or t.dtype != tensors[0].dtype
                          for t in tensors):  # fmt: skip
        raise ValueError("need one or more tensors of the same shape and dtype")
    n = len(tensors)
    flat = [t.detach().flatten().clone() for t in tensors]  # (M,) per rank
    chunks = [f.tensor_split(n) for f in flat]  # views into flat
    sent = [0] * n
    schedules = [list(ring_steps(r, n)) for r in range(n)]
    for step in range(2 * (n - 1)):
        # What rank r sends at this step: a copy taken before anyone updates.
        messages = [chunks[r][schedules[r][step][1]].clone() for r in range(n)]
        for r in range(n):
            phase, send, recv = schedules[r][step]
            sent[r] += messages[r].numel() * messages[r].element_size()
            incoming = messages[(r - 1) % n]  # from the left neighbour
            if phase == "reduce-scatter":
                chunks[r][recv].add_(incoming)
            else:
                chunks[r][recv].copy_(incoming)
    return [f.view(tensors[0].shape) for f in flat], sent


def ring_all_reduce_(tensor: torch.Tensor, group=None) -> int:
    """Sum `tensor` over the ranks of `group` in place with send/recv; returns bytes sent.

    The same schedule as `simulate_ring_all_reduce`, over the initialised process group (any
    backend with point-to-point messages: gloo on CPUs, nccl on GPUs). Empty chunks (fewer
    elements than ranks) are skipped on both ends of their message.

    Raises:
        ValueError: if `tensor` is not contiguous (its chunks must be views).
    """
    if not tensor.is_contiguous():
        raise ValueError("ring_all_reduce_ needs a contiguous tensor (chunks are views into it)")
    rank, n = dist.get_rank(group), dist.get_world_size(group)
    chunks = tensor.view(-1).tensor_split(n)  # views: updating a chunk updates `tensor`
    right = dist.get_global_rank(group, (rank + 1) % n) if group else (rank + 1) % n
    left = dist.get_global_rank(group, (rank - 1) % n) if group else (rank - 1) % n
    sent = 0
    for phase, send, recv in ring_steps(rank, n):
        incoming = torch.empty_like(chunks[recv])
        # Send without waiting, then receive: with a blocking send first, every rank of the
        # ring would wait for its right neighbour to receive, and none would.
        request = dist.isend(chunks[send], right, group) if chunks[send].numel() else None
        if incoming.numel():
            dist.recv(incoming, left, group)
        if request is not None:
            request.wait()
            sent += chunks[send].numel() * chunks[send].element_size()
        if phase == "reduce-scatter":
            chunks[recv].add_(incoming)
        else:
            chunks[recv].copy_(incoming)
    return sent
