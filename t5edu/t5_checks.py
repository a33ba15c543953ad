"""Input checks for the T5 models: clear errors instead of silent broadcasting or garbage."""

from __future__ import annotations

import torch

from t5edu.attention import check_mask_values


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"shape {tuple(t.shape)} and dtype {t.dtype}"
    return f"a {type(t).__name__}"


def check_ids(name: str, ids, vocab_size: int, allow_ignore: bool = False) -> None:
    """ValueError naming `name` unless ids is an integer `(batch, length)` tensor, length >= 1,
    with values in `[0, vocab_size)` (or -100 when `allow_ignore`, as labels)."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(
            f"{name} must be a (batch, length) tensor of token ids; got {_describe(ids)}"
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids; got dtype {ids.dtype}")
    if ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least one row and one position; got {_describe(ids)}"
        )
    valid = (ids >= 0) & (ids < vocab_size)
    if allow_ignore:
        valid |= ids == -100
    if not bool(valid.all()):
        bad = ids[~valid][0].item()
        allowed = f"[0, vocab_size={vocab_size})" + (" or -100" if allow_ignore else "")
        raise ValueError(f"{name} must be in {allowed}; got {bad}")


def check_embeds(name: str, embeds, d_model: int, dtype: torch.dtype) -> None:
    """ValueError naming `name` unless embeds is a `(batch, length, d_model)` tensor of the
    model's `dtype` (its embedding's), so a float64 or float16 input fails here, saying what to
    cast to, not in a matmul deep in the first layer. Under autocast a differing float dtype is
    left to autocast, which casts the matmul inputs itself.
    """
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or embeds.shape[-1] != d_model:
        raise ValueError(
            f"{name} must be (batch, length, d_model={d_model}); got {_describe(embeds)}"
        )
    if embeds.dtype == dtype:
        return
    if embeds.dtype.is_floating_point and torch.is_autocast_enabled(embeds.device.type):
        return
    hint = f"pass {name}.to({dtype})"
    if embeds.dtype.is_floating_point:
        hint += f" or convert the model with .to({embeds.dtype})"
    else:
        hint += " (token ids go in input_ids)"
    raise ValueError(
        f"{name} must have the model's dtype {dtype} (its embedding weight's); got dtype "
        f"{embeds.dtype}: {hint}"
    )


def check_mask(name: str, mask, shape: tuple) -> None:
    """ValueError naming `name` unless mask is None or a bool or 0/1 integer tensor of `shape`."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} must be (batch, length) = {tuple(shape)} with 1 = attend, 0 = padding; "
            f"got {_describe(mask)}"
        )
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(f"{name} must be bool or integer 0/1; got dtype {mask.dtype}")
    check_mask_values(mask, name)


def drop_full_mask(mask: torch.Tensor | None, shape: tuple) -> torch.Tensor | None:
    """None for a mask of `shape` holding only ones (nothing to hide), else the mask unchanged.

    Every attention layer then skips building and adding a `(B, H, Tq, Tk)` mask. A mask of
    another shape goes on to the attention, which names the mismatch."""
    if mask is None or tuple(mask.shape) != tuple(shape) or not bool((mask == 1).all()):
        return mask
    return None
