"""One dispatcher for every attention module: pick an attention backend by name (chapters 1, 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim.

Every backend takes exactly the arguments of `t5edu.attention.scaled_dot_product_attention`
and must equal it (see tests/test_backends.py). New backends register with `@register_backend`.

Backends (dropout: whether `dropout_p > 0` works):
- `naive`: the reference, full score matrix. Dropout. Any device.
- `sdpa`: `torch.nn.functional.scaled_dot_product_attention`, bias as a float mask. Dropout.
- `flash`: tiled FlashAttention in PyTorch (`t5edu.flash_attention`). Any device.
- `memory_efficient`: Rabe & Staats chunking with checkpointing. Any device.
- `triton`: the Triton kernels of `t5edu.kernels`. CUDA (CPU only under TRITON_INTERPRET=1).
- `flex`: `torch.nn.attention.flex_attention`, the bias looked up in a `score_mod`. CUDA; on the
  CPU forward only.
- `t5_flash`: in a T5 model, self-attention with T5's relative bias computes the bias per tile
  from its `(num_buckets, H)` table (`t5edu.t5_flash_attention`, O(N) memory, the table's
  gradient included; see `t5edu.t5_attention.T5Attention`). Called here, through `attention`,
  there is no table, only a materialised bias: it runs `flash` with that bias (same result,
  bias gradient included), so it is a drop-in name anywhere. Any device.
- `auto`: the fastest correct one for the inputs; `resolve_backend` names it. Dropout.

A backend without dropout raises ValueError when `dropout_p > 0` (`auto` then picks `sdpa`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from t5edu.attention import (
    check_attention_inputs,
    check_scale_and_dropout,
    reference_attention_unchecked,
    scaled_dot_product_attention,
    visible_keys,
)
from t5edu.flash_attention import check_no_dropout, flash_attention, flash_attention_unchecked
from t5edu.memory_efficient import memory_efficient_attention

logger = logging.getLogger(__name__)

BACKENDS: dict[str, Callable[..., torch.Tensor]] = {}


def register_backend(name: str):
    """Decorator adding an attention function to `BACKENDS` under `name`."""

    def wrap(fn):
        BACKENDS[name] = fn
        return fn

    return wrap


register_backend("naive")(scaled_dot_product_attention)


@register_backend("sdpa")
def sdpa_attention(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    """PyTorch's fused `scaled_dot_product_attention`, with T5's bias passed as a float mask.

    Padding, causality and bias are folded into one additive float mask (PyTorch's kernels take a
    single `attn_mask`), hidden keys at -inf. A row with no finite entry sees no key: it is given
    a zero mask row and its output is zeroed afterwards, so it gets zeros and zero gradients as
    in every backend. Torch's math kernel would give zeros by itself, but its fused CUDA kernels
    have returned NaN for such rows (pytorch/pytorch#110213), so this does not rely on them.
    """
    check_attention_inputs(q, k, v, bias, attention_mask)
    return sdpa_attention_unchecked(
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale,
        dropout_p=dropout_p,
    )  # fmt: skip


def sdpa_attention_unchecked(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    """`sdpa_attention` without its input checks (see `attention_unchecked`)."""
    tq, tk = q.shape[2], k.shape[2]
    keep = visible_keys(attention_mask, causal, tq, tk, q.device)
    mask = None if bias is None else bias.to(q.dtype)
    if keep is not None:
        if mask is None:
            mask = torch.zeros(keep.shape, dtype=q.dtype, device=q.device)
        mask = mask.masked_fill(~keep, float("-inf"))
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    no_key = mask.amax(dim=-1, keepdim=True) == float("-inf")  # (..., Tq, 1), no host sync
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask.masked_fill(no_key, 0.0), dropout_p=dropout_p, scale=scale
    )
    return out.masked_fill(no_key, 0.0)


register_backend("flash")(flash_attention)
register_backend("memory_efficient")(memory_efficient_attention)


@register_backend("t5_flash")
def t5_flash_backend(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    """The `flash` backend, for callers that hold a materialised bias (or none).

    `t5_flash`'s point is T5's bias computed inside the tiles from its bucket table, which this
    registry signature cannot carry: T5's self-attention layers call `t5edu.t5_flash_attention`
    with the table themselves (`T5Attention`), and everything that reaches this function
    (cross-attention, RoPE/ALiBi models, a bias passed by hand) runs `flash_attention`
    unchanged. Falling back rather than raising keeps the registry's contract (every backend
    takes the reference's arguments and equals it) and lets a whole T5 run under one name.

    Raises:
        ValueError: for `dropout_p != 0` (no attention dropout), and what `flash` rejects.
    """
    check_no_dropout(dropout_p, "t5_flash")
    return flash_attention(
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale
    )


def _t5_flash_unchecked(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    check_no_dropout(dropout_p, "t5_flash")
    return flash_attention_unchecked(
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale
    )


@register_backend("triton")
def triton_attention(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    """The Triton FlashAttention kernels (`t5edu.kernels`), imported on first use.

    Raises:
        ImportError: without the `triton` package. RuntimeError: for CPU tensors unless
        TRITON_INTERPRET=1 was set before the kernels were first imported. ValueError: bad input,
        `dropout_p != 0`, unsupported dtype or head_dim > 128.
    """
    from t5edu.kernels import triton_flash_attention

    return triton_flash_attention(
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale,
        dropout_p=dropout_p,
    )  # fmt: skip


_compiled_flex = None


def _flex_fn(device: torch.device):
    """flex_attention compiled on CUDA (a fused kernel); eager elsewhere (its reference path)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


@register_backend("flex")
def flex_attention_backend(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    """PyTorch's FlexAttention, the bias added by a `score_mod` that looks up the bias tensor.

    Padding and causality become FlexAttention's `mask_mod` (a block mask, so hidden blocks are
    skipped); rows with no visible key give zeros, as the reference. On CUDA the call is compiled
    (`torch.compile`) into a fused kernel; on the CPU it runs FlexAttention's eager path, which
    materialises the scores and, in torch 2.13, has no backward.

    Raises:
        ValueError: bad input, `dropout_p != 0` (FlexAttention has no dropout).
        NotImplementedError: on the CPU when any of q, k, v, bias requires a gradient.
        RuntimeError: when this torch has no `torch.nn.attention.flex_attention` (torch < 2.5).
    """
    check_attention_inputs(q, k, v, bias, attention_mask)
    check_no_dropout(dropout_p, "flex")
    try:
        from torch.nn.attention.flex_attention import create_block_mask
    except ImportError as err:
        raise RuntimeError(
            f"the flex backend needs torch >= 2.5; got torch {torch.__version__}"
        ) from err
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, bias)
    )
    if q.device.type == "cpu" and needs_grad:
        raise NotImplementedError(
            f"the flex backend has no backward on the CPU (FlexAttention in torch "
            f"{torch.__version__}); use backend='flash' or 'sdpa', or run under torch.no_grad()"
        )
    b, h, q_len, _ = q.shape
    k_len = k.shape[2]
    score_mod = None
    if bias is not None:
        bias4 = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))  # (B|1, H|1, Tq|1, Tk|1)
        wide = [n > 1 for n in bias4.shape]  # index 0 along broadcast dims

        def score_mod(score, bi, hi, qi, ki):
            idx = [x if w else 0 for x, w in zip((bi, hi, qi, ki), wide, strict=True)]
            return score + bias4[idx[0], idx[1], idx[2], idx[3]].to(score.dtype)

    block_mask = None
    if attention_mask is not None or causal:
        keep = None if attention_mask is None else attention_mask.bool()

        def mask_mod(bi, hi, qi, ki):
            ok = ki <= qi + (k_len - q_len) if causal else ki >= 0
            return ok & keep[bi, ki] if keep is not None else ok

        block_mask = create_block_mask(
            mask_mod, b if keep is not None else None, None, q_len, k_len, device=q.device
        )
    with warnings.catch_warnings():  # eager on CPU is deliberate: FlexAttention's note is noise
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return _flex_fn(q.device)(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def check_backend(backend: str, arg: str = "backend") -> None:
    """Raise ValueError naming `arg` unless `backend` is a registered name (listing them)."""
    if backend not in BACKENDS:
        raise ValueError(f"{arg} must be one of {sorted(BACKENDS)}; got {backend!r}")


def resolve_backend(
    backend: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> str:
    """The backend name `attention(..., backend=backend)` will run: `backend` itself, or for
    `"auto"` the fastest correct one for these inputs.

    `auto`: on CUDA with a bias, no dropout, fp16/bf16/fp32 and head_dim <= 128, the Triton kernel
    (fused bias with gradient; PyTorch's SDPA must take the bias as a dense float mask and falls
    back to its slower kernels); everything else `sdpa` (PyTorch's fused kernels: on the CPU, the
    tiled backends run a Python loop and cannot beat it; measured in `python -m t5edu.bench
    attention`).

    Raises:
        ValueError: for an unknown backend name (the message lists the known ones).
    """
    check_backend(backend)
    if backend != "auto":
        return backend
    choice = "sdpa"
    if (
        q.device.type == "cuda"
        and bias is not None
        and dropout_p == 0.0
        and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
        and q.shape[-1] <= 128
        and _triton_compiled()
    ):
        choice = "triton"
    logger.debug("auto attention backend -> %s", choice)
    return choice


def _triton_compiled() -> bool:
    """True when the Triton kernels import and are compiled (not under the interpreter)."""
    from t5edu.kernels import triton_available

    if not triton_available():
        return False
    try:
        from t5edu.kernels.triton_attention import INTERPRETED
    except Exception:  # a broken Triton install: fall back to sdpa rather than fail
        return False
    return not INTERPRETED


@register_backend("auto")
def auto_attention(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    """Run the backend `resolve_backend("auto", ...)` picks for these inputs (see there)."""
    name = resolve_backend(
        "auto", q, k, v, bias=bias, attention_mask=attention_mask, causal=causal,
        dropout_p=dropout_p,
    )  # fmt: skip
    return BACKENDS[name](
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale,
        dropout_p=dropout_p,
    )  # fmt: skip


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "naive",
) -> torch.Tensor:
    """Run attention with the named backend; arguments and result as the reference's.

    Raises:
        ValueError: for an unknown `backend` (the message lists the known ones), and whatever the
            backend raises for bad input; a `scale` that is not a positive finite number or a
            `dropout_p` outside [0, 1].
    """
    check_backend(backend)
    check_scale_and_dropout(scale, dropout_p)
    return BACKENDS[backend](
        q,
        k,
        v,
        bias=bias,
        attention_mask=attention_mask,
        causal=causal,
        scale=scale,
        dropout_p=dropout_p,
    )


# Backends whose input checks can be skipped by a caller that checked at its boundary; the
# others (memory_efficient, triton, flex, auto) check shapes only, in plain Python, and a bool
# mask needs no value test, so they add no host sync either.
def _naive_unchecked(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    return reference_attention_unchecked(q, k, v, bias, attention_mask, causal, scale, dropout_p)


def _flash_unchecked(
    q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None, dropout_p=0.0
) -> torch.Tensor:
    return flash_attention_unchecked(
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale,
        dropout_p=dropout_p,
    )  # fmt: skip


_UNCHECKED: dict[str, Callable[..., torch.Tensor]] = {
    "naive": _naive_unchecked,
    "sdpa": sdpa_attention_unchecked,
    "flash": _flash_unchecked,
    "t5_flash": _t5_flash_unchecked,
}


def attention_unchecked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "naive",
) -> torch.Tensor:
    """`attention` for callers that validated their input once, at their boundary.

    A T5 model checks its ids and masks where they enter (`T5Model.forward`, `generate`) and
    hands its layers bool masks (or None), its own bias and q, k, v of its own making; its
    layers call this, so no layer re-checks shapes or reads a mask value (a host sync on a
    GPU). `backend` must be a registered name (the model checked it at construction). Same
    arguments and results as `attention`; anything invalid fails in torch, not with a message.
    """
    fn = _UNCHECKED.get(backend)
    if fn is None:
        fn = BACKENDS[backend]
    return fn(
        q, k, v, bias=bias, attention_mask=attention_mask, causal=causal, scale=scale,
        dropout_p=dropout_p,
    )  # fmt: skip
