"""Data parallelism for the trainer: DDP and FSDP2 (`fully_shard`), launched by `torchrun`.

- DDP keeps a full copy of the parameters, gradients and optimizer state on every process and
  all-reduces the gradients after backward (Li et al. 2020).
- FSDP2 shards all three across processes: each block's parameters are all-gathered just before
  its forward and backward and freed after, and gradients are reduce-scattered so each process
  keeps only its shard (Zhao et al. 2023; ZeRO-3 in Rajbhandari et al. 2020).

Both run on CPU with the `gloo` backend (tests, chapter 13) and on GPUs with `nccl`. The trainer
is the same script either way: `torchrun --nproc_per_node N -m t5edu.train --strategy fsdp`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from t5edu.device import get_device
from t5edu.train.activation_checkpointing import find_blocks

STRATEGIES = ("none", "ddp", "fsdp")


@dataclass
class DistInfo:
    """Where this process sits: `rank` of `world_size`, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device | str | None = None) -> DistInfo:
    """Join the process group `torchrun` set up (RANK, WORLD_SIZE, ... in the environment).

    Without those variables (a plain `python` run) this is a single process and nothing is
    initialised. Backend: `nccl` for CUDA, `gloo` for CPU; each process takes GPU `LOCAL_RANK`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device) if device is not None else None
    if device is None:
        device = get_device()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return DistInfo(rank, world_size, local_rank, device)


def wrap_model(model: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """Return `model` ready for `strategy`: unchanged, inside DDP, or sharded in place by FSDP2.

    FSDP2 shards each block found by `find_blocks` as one unit, then the root (embeddings, final
    norms, head), so only one block's full parameters exist at a time. A module's parameters are
    gathered when *that module* is called, so T5's relative-position tables get units of their
    own: block 0 owns the table but the bias it gives is shared by every block (t5edu's stacks
    call the table directly, outside block 0's forward).

    Raises:
        ValueError: for an unknown `strategy`, or ddp/fsdp without an initialised process group.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    if strategy == "none":
        return model
    if not dist.is_initialized():
        raise ValueError(
            f"strategy={strategy!r} needs a process group: launch with torchrun "
            "(e.g. torchrun --nproc_per_node 2 -m t5edu.train)"
        )
    if strategy == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "relative_attention_bias":  # HF's and t5edu's name
            # FSDP hooks the unit's output for backward; t5edu's table returns a permuted view
            # (which FSDP warns about), so hand FSDP a contiguous copy of the small bias. This
            # hook is registered first, so it runs before FSDP's own.
            module.register_forward_hook(_contiguous_output)
            fully_shard(module)
    for block in find_blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def _contiguous_output(module, args, output):
    if isinstance(output, torch.Tensor) and output._is_view():
        return output.clone(memory_format=torch.contiguous_format)
    return output


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP or `torch.compile` (FSDP2 shards in place: no wrapper)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def is_fsdp(model: nn.Module) -> bool:
    """True when FSDP2's `fully_shard` was applied to `model` (its class becomes FSDP<name>)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)


def reshard(model: nn.Module) -> None:
    """FSDP2: free the gathered parameters a forward without backward leaves behind.

    After an evaluation forward (no backward to trigger it) the root unit keeps its unsharded
    parameters registered; the optimizer and the state-dict functions expect the sharded ones.
    A no-op for other strategies.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in unwrap(model).modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce/reduce-scatter while accumulating (`enabled=False`).

    Each micro-batch but the last accumulates locally; the last one's backward communicates the
    summed gradient once, so accumulation costs no extra communication.
    """
    if enabled:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_fsdp(model):
        inner = unwrap(model)
        inner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)
    else:
        yield


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all processes in place (a no-op for one process); returns `t`."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    """Wait for every process (a no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """`obj` from process `src` on every process (itself for one process)."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def all_gather_object(obj) -> list:
    """`[obj of rank 0, obj of rank 1, ...]` (a one-element list for one process)."""
    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def cleanup() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
