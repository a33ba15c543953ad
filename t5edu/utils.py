"""Notebook and script set-up shared by every chapter."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device() -> torch.device:
    """`cuda` when a GPU is visible, else `cpu`."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup(seed: int = 0, verbose: bool = True) -> torch.device:
    """A chapter's first call: seed everything, print versions and device, return the device."""
    import t5edu

    seed_everything(seed)
    device = get_device()
    if verbose:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        threads = torch.get_num_threads()
        print(
            f"t5edu {t5edu.__version__} | torch {torch.__version__} | device {device} ({name}, "
            f"{threads} threads) | seed {seed}"
        )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return device
