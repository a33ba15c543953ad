"""Notebook and script set-up shared by every chapter."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch

from t5edu._version import __version__
from t5edu.device import get_device


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, verbose: bool = True) -> torch.device:
    """A chapter's first call: seed everything, print versions and device, return the device."""
    seed_everything(seed)
    device = get_device()
    if verbose:
        names = {"cpu": "CPU", "mps": "Apple MPS"}
        name = torch.cuda.get_device_name() if device.type == "cuda" else names[device.type]
        threads = torch.get_num_threads()
        print(
            f"t5edu {__version__} | torch {torch.__version__} | device {device} ({name}, "
            f"{threads} threads) | seed {seed}"
        )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return device


def compare(name: str, got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    """Assert `|got - want| <= atol` everywhere and print the gap rounded up to a power of ten.

    The printed bound ("<= 1e-06") does not change from run to run the way the raw difference
    does, but it can move a decade between CPUs (the vector width sets a reduction's order), so
    nbval's sanitizer (`tests/nbval_sanitize.cfg`) compares only "bit-identical" and the
    tolerance; the assertion here is the check. Returns None, so that a call ending a notebook
    cell prints nothing more.

    Raises:
        ValueError: if the shapes differ. AssertionError: if the gap exceeds `atol`.
    """
    if got.shape != want.shape:
        raise ValueError(f"{name}: shapes differ, got {tuple(got.shape)} vs {tuple(want.shape)}")
    # on the CPU: MPS has no float64
    diff = (got.detach().cpu().double() - want.detach().cpu().double()).abs().max().item()
    if not diff <= atol:
        raise AssertionError(f"{name}: max |diff| = {diff:.3e} exceeds atol = {atol:.0e}")
    if diff == 0.0:
        print(f"{name}: bit-identical")
    else:
        bound = 10.0 ** math.ceil(math.log10(diff))
        print(f"{name}: max |diff| <= {bound:.0e} (tolerance {atol:.0e})")
