"""Input checks for the T5 models: clear errors instead of silent broadcasting or garbage.

They run once, where input enters (`T5Model.forward`, `generate`, a stack called on its own),
never in a stack, block, layer or decoding step. The shape and dtype checks are plain Python
on shapes (free, and traced away by `torch.compile`); the value checks (ids in range, masks
0/1) need the device's answer, so `check_values` gathers all of them into one host sync per
forward, and skips them under `torch.compiler.is_compiling()` (a compiled graph cannot raise
on a value without a sync; compile-time users get the shape and dtype errors only).
"""

from __future__ import annotations

import torch

from t5edu.attention import check_mask_values


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"shape {tuple(t.shape)} and dtype {t.dtype}"
    return f"a {type(t).__name__}"


def check_ids_structure(name: str, ids) -> None:
    """ValueError naming `name` unless ids is an integer `(batch, length)` tensor, length >= 1.

    No device sync: the values are `check_values`'s."""
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


def _valid_ids(ids: torch.Tensor, vocab_size: int, allow_ignore: bool) -> torch.Tensor:
    valid = (ids >= 0) & (ids < vocab_size)
    return valid | (ids == -100) if allow_ignore else valid


def _raise_bad_ids(name, ids, vocab_size, allow_ignore) -> None:
    bad = ids[~_valid_ids(ids, vocab_size, allow_ignore)][0].item()
    allowed = f"[0, vocab_size={vocab_size})" + (" or -100" if allow_ignore else "")
    raise ValueError(f"{name} must be in {allowed}; got {bad}")


def check_ids(name: str, ids, vocab_size: int, allow_ignore: bool = False) -> None:
    """ValueError naming `name` unless ids is an integer `(batch, length)` tensor, length >= 1,
    with values in `[0, vocab_size)` (or -100 when `allow_ignore`, as labels).

    The value test is one host sync; it is skipped under `torch.compiler.is_compiling()`."""
    check_ids_structure(name, ids)
    if torch.compiler.is_compiling():
        return
    if not bool(_valid_ids(ids, vocab_size, allow_ignore).all()):
        _raise_bad_ids(name, ids, vocab_size, allow_ignore)


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


def check_mask_structure(name: str, mask, shape: tuple) -> None:
    """ValueError naming `name` unless mask is None or a bool or integer tensor of `shape`.

    No device sync: the 0/1 values are `check_values`'s."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} must be (batch, length) = {tuple(shape)} with 1 = attend, 0 = padding; "
            f"got {_describe(mask)}"
        )
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(f"{name} must be bool or integer 0/1; got dtype {mask.dtype}")


def check_mask(name: str, mask, shape: tuple) -> None:
    """ValueError naming `name` unless mask is None or a bool or 0/1 integer tensor of `shape`.

    The 0/1 test (integer masks only) is one host sync; skipped under compile."""
    check_mask_structure(name, mask, shape)
    check_mask_values(mask, name)


def drop_full_mask(mask: torch.Tensor | None, shape: tuple) -> torch.Tensor | None:
    """None for a mask of `shape` holding only ones (nothing to hide), else the mask unchanged.

    Every attention layer then skips building and adding a `(B, H, Tq, Tk)` mask. A mask of
    another shape goes on to the attention, which names the mismatch. The test is a host sync:
    under `torch.compiler.is_compiling()` the mask is kept (same outputs, one mask more)."""
    if mask is None or tuple(mask.shape) != tuple(shape) or torch.compiler.is_compiling():
        return mask
    if not bool((mask == 1).all()):
        return mask
    return None


def check_values(
    ids: list[tuple[str, torch.Tensor, bool]],
    vocab_size: int,
    masks: list[tuple[str, torch.Tensor | None]] = (),
) -> list[torch.Tensor | None]:
    """Check token-id ranges and mask values with one host sync; return the masks' final form.

    Args:
        ids: `(name, ids, allow_ignore)` triples whose structure `check_ids_structure` passed;
            each must hold values in `[0, vocab_size)` (or -100 when allow_ignore, as labels).
        masks: `(name, mask or None)` pairs whose structure `check_mask_structure` passed.

    Returns:
        Each mask as the layers use it: None when absent or all ones (nothing to hide: no layer
        builds a `(B, H, Tq, Tk)` mask), else bool. Under `torch.compiler.is_compiling()` no
        value is read (no sync, no check): every given mask comes back as bool.

    Raises:
        ValueError: naming the first offending argument (in the order given) and a bad value,
            exactly as `check_ids` / `check_mask` would.
    """
    if torch.compiler.is_compiling():
        return [None if m is None else m.bool() for _, m in masks]
    flags = [_valid_ids(t, vocab_size, allow).all() for _, t, allow in ids]
    given = [(name, m) for name, m in masks if m is not None]
    for _, m in given:
        if m.dtype != torch.bool:
            flags.append(((m == 0) | (m == 1)).all())
        flags.append((m != 0).all())  # a full mask: dropped
    if not flags:
        return [None for _ in masks]
    dev = flags[0].device
    answers = torch.stack([f.to(dev) for f in flags]).tolist()  # the one host sync
    for name, t, allow in ids:
        if not answers.pop(0):
            _raise_bad_ids(name, t, vocab_size, allow)
    full = {}
    for name, m in given:
        if m.dtype != torch.bool and not answers.pop(0):
            check_mask_values(m, name)  # raises, listing the bad values
        full[name] = answers.pop(0)
    return [None if m is None or full[name] else m.bool() for name, m in masks]
