"""Activation checkpointing per Transformer block, and finding those blocks in any model.

A block's forward is re-run during backward instead of keeping its intermediate activations:
memory for activations drops from O(layers x per-layer activations) to O(layers x block input)
plus one block's worth, for about one extra forward pass of compute (Chen et al. 2016).
Chapter 11 measures it; tests check the gradients are unchanged.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of `model`: the elements of its outermost `nn.ModuleList`s.

    For a T5 (HF's or t5edu's) these are the encoder's and decoder's blocks; a ModuleList nested
    inside a block (HF's `T5Block.layer`) is not descended into, so each block is found once.
    The same units are what FSDP shards one at a time (`t5edu.train.distributed`).
    """
    blocks: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                blocks.extend(child)
            else:
                visit(child)

    visit(model)
    return blocks


def _checkpointed_forward(forward, *args, **kwargs):
    # Non-reentrant checkpointing handles keyword arguments and inputs that need no grad, and
    # restores the RNG state on recomputation, so dropout masks match the first pass.
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module, blocks: list[nn.Module] | None = None) -> int:
    """Wrap each block's `forward` in `torch.utils.checkpoint.checkpoint` (non-reentrant).

    Gradients are unchanged (same math, recomputed); only what autograd stores differs. The
    model must not write a key/value cache during a checkpointed training forward (pass
    `use_cache=False` to HF models; the trainer does). Returns how many blocks were wrapped.

    Raises:
        ValueError: if `model` has no blocks to wrap, or a block is already wrapped.
    """
    blocks = find_blocks(model) if blocks is None else blocks
    if not blocks:
        raise ValueError(
            f"apply_activation_checkpointing: found no nn.ModuleList of blocks in "
            f"{type(model).__name__}; pass blocks=[...] explicitly"
        )
    for block in blocks:
        if getattr(block, "_t5edu_checkpointed", False):
            raise ValueError(f"block {type(block).__name__} is already checkpointed")
        block.forward = functools.partial(_checkpointed_forward, block.forward)
        block._t5edu_checkpointed = True
    return len(blocks)


def saved_activation_bytes(fn, model: nn.Module | None = None) -> int:
    """Bytes of the tensors autograd saves for backward while `fn()` runs (a deterministic count).

    Counts every tensor packed by autograd's saved-tensor hooks, leaving out `model`'s own
    parameters (saved by reference, they cost nothing extra). Inside a checkpointed block the
    checkpoint's own hooks take over and keep nothing, which is exactly the saving. A measure of
    activation memory that, unlike the allocator's peak, is the same on every machine.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()} if model else set()
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        if t.untyped_storage().data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total
