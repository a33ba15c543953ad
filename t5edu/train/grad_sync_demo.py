"""Chapter 13's experiment: one gradient, synchronised three ways on N gloo processes.

    torchrun --standalone --nproc_per_node 2 -m t5edu.train.grad_sync_demo OUT_DIR

Every rank builds the same small MLP (seed 0) and the same batch (seed 1), and backpropagates
the mean-squared error of its 1/N of the batch. The local gradient, flattened into one buffer
as DDP's buckets are, is then averaged over the ranks twice: by `ring_all_reduce_` (send/recv)
and by `dist.all_reduce`, each followed by a division by N. DDP's own gradient for the same
model and shard is the third. Each rank saves the four flat gradients and the bytes its ring
sent to `OUT_DIR/rank{r}.pt`; the chapter compares them with one process's full-batch gradient.

B batch, N world size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from t5edu.train.distributed import cleanup, init_distributed
from t5edu.train.ring_allreduce import ring_all_reduce_

BATCH, D_IN, D_HIDDEN, D_OUT = 8, 16, 32, 4


def make_model() -> nn.Sequential:
    """The MLP every rank starts from: the same weights on every rank (seed 0)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, D_HIDDEN), nn.GELU(), nn.Linear(D_HIDDEN, D_OUT))


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, D_IN) and regression targets (B, D_OUT), the same on every rank (seed 1)."""
    gen = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, D_IN, generator=gen), torch.randn(BATCH, D_OUT, generator=gen)


def flat_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of the mean-squared error on (x, y), all parameters in one flat vector."""
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def main(argv: list[str] | None = None) -> None:
    out = Path((sys.argv[1:] if argv is None else argv)[0])
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        rank, n = info.rank, info.world_size
        if BATCH % n:
            raise ValueError(f"the batch of {BATCH} must split evenly over {n} processes")
        x, y = make_batch()
        # Equal shards, so the mean of the shards' mean losses is the full batch's mean loss.
        mine = slice(rank * BATCH // n, (rank + 1) * BATCH // n)
        local = flat_grad(make_model(), x[mine], y[mine])

        ring = local.clone()
        sent = ring_all_reduce_(ring)  # the sum over ranks ...
        ring /= n  # ... divided by N: the mean
        collective = local.clone()
        dist.all_reduce(collective, op=dist.ReduceOp.SUM)
        collective /= n

        ddp = nn.parallel.DistributedDataParallel(make_model())  # averages in its backward
        ddp_grad = flat_grad(ddp, x[mine], y[mine])
        result = {"local": local, "ring": ring, "all_reduce": collective, "ddp": ddp_grad,
                  "ring_bytes_sent": sent, "world_size": n}  # fmt: skip
        torch.save(result, out / f"rank{rank}.pt")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
