"""CPU processes joined into one gloo group, for the tests that spawn them (not a test file).

The spawned workers import this module by name: pytest puts `tests/` on `sys.path` (no
`__init__.py` there) and the spawned interpreters inherit it.
"""

import os
import socket

import torch

from t5edu.train.distributed import DistInfo, init_distributed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_environment(rank: int, world: int, port: int) -> None:
    """The variables torchrun would set for process `rank` of `world`."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
    )  # fmt: skip


def join(rank: int, world: int, port: int) -> DistInfo:
    """Process `rank` joins the gloo group, on one thread (the ranks share the CPU cores)."""
    rank_environment(rank, world, port)
    torch.set_num_threads(1)
    return init_distributed("cpu")
