"""Scaled dot-product attention, the reference every faster backend must equal (chapter 1).

B batch, H heads, Tq/Tk query/key length, Dh head dim, D d_model.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)} and dtype {t.dtype}"


def check_attention_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> None:
    """Validate the attention contract shared by every backend.

    Raises:
        ValueError: naming the argument, the shape received and the shape expected, when q, k, v
            are not 4-D `(batch, heads, len, head_dim)` of one floating dtype with matching batch,
            heads and head dims (v shaped exactly like k),
            when `bias` cannot broadcast to `(batch, heads, q_len, k_len)` (each of its trailing
            dims must be 1 or equal, it has 2 to 4 dims), or when `attention_mask` is not a bool or
            integer `(batch, k_len)` tensor holding only 0 and 1.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be (batch, heads, len, head_dim); got {_describe(t)}")
    if not (q.dtype.is_floating_point and q.dtype == k.dtype == v.dtype):
        raise ValueError(
            f"q, k and v must share one floating-point dtype; got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    b, h, tq, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[-1] != d:
        raise ValueError(
            f"k must be (batch={b}, heads={h}, k_len, head_dim={d}) to match q; got shape "
            f"{tuple(k.shape)} (q has shape {tuple(q.shape)})"
        )
    if v.shape != k.shape:
        raise ValueError(
            f"v must be (batch, heads, k_len, head_dim) = {tuple(k.shape)} like k; got shape "
            f"{tuple(v.shape)}"
        )
    tk = k.shape[2]
    if bias is not None:
        full = (b, h, tq, tk)
        ok = 2 <= bias.dim() <= 4 and all(
            s in (1, f) for s, f in zip(bias.shape[::-1], full[::-1], strict=False)
        )
        if not ok:
            raise ValueError(
                f"bias must broadcast to (batch, heads, q_len, k_len) = {full} (each dim 1 or "
                f"equal, 2 to 4 dims); got shape {tuple(bias.shape)}"
            )
    if attention_mask is not None:
        if attention_mask.shape != (b, tk):
            raise ValueError(
                f"attention_mask must be (batch, k_len) = {(b, tk)} with 1/True for keys to "
                f"attend to; got shape {tuple(attention_mask.shape)}"
            )
        if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
            raise ValueError(
                f"attention_mask must be bool or an integer 0/1 tensor; got dtype "
                f"{attention_mask.dtype} (an additive float mask belongs in `bias`)"
            )
        check_mask_values(attention_mask)


def check_scale_and_dropout(scale, dropout_p) -> None:
    """Raise ValueError unless `scale` is None or a positive finite number and 0 <= dropout_p <= 1.

    A string or a tensor scale would otherwise fail deep inside a matmul (or broadcast silently),
    and a negative dropout probability would be ignored without a word.
    """
    if scale is not None and (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale <= 0
    ):
        raise ValueError(f"scale must be None or a positive finite number; got scale={scale!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise ValueError(f"dropout_p must be a number in [0, 1]; got dropout_p={dropout_p!r}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1]; got dropout_p={dropout_p}")


def check_mask_values(attention_mask: torch.Tensor | None, name: str = "attention_mask") -> None:
    """Raise ValueError naming `name` unless every entry of an integer mask is 0 or 1.

    A mask holding e.g. 2 or -1 is almost always a bug (token ids passed by mistake), and
    `mask.bool()` would silently treat it as 1. Bool masks need no check (no device sync). The
    test of an integer mask is a host sync, so under `torch.compiler.is_compiling()` it is
    skipped (a graph cannot raise on a value): compiled callers pass bool masks or are trusted.
    """
    if (
        attention_mask is None
        or attention_mask.dtype == torch.bool
        or torch.compiler.is_compiling()
    ):
        return
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bad.any():
        values = torch.unique(attention_mask[bad])[:5].tolist()
        raise ValueError(f"{name} must hold only 0/1 (1 = attend); got values such as {values}")


def visible_keys(
    attention_mask: torch.Tensor | None, causal: bool, q_len: int, k_len: int, device
) -> torch.Tensor | None:
    """Boolean `(batch or 1, 1, q_len, k_len)` tensor of the keys each query may see, or None.

    The causal mask is aligned bottom-right: query i sees key j when j <= i + (k_len - q_len),
    so the last query sees every key (what decoding with a KV cache needs), as in PyTorch's
    `torch.nn.attention.bias.causal_lower_right`.
    """
    keep = None
    if attention_mask is not None:
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
    if causal:
        i = torch.arange(q_len, device=device)[:, None]
        j = torch.arange(k_len, device=device)[None, :]
        tri = (j <= i + (k_len - q_len))[None, None]  # (1, 1, Tq, Tk)
        keep = tri if keep is None else keep & tri
    return keep


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(scale * q k^T + bias, masked) v, materialising the full score matrix.

    Args:
        q: `(batch, heads, q_len, head_dim)`; k, v: `(batch, heads, k_len, head_dim)`.
        bias: additive, broadcastable to `(batch, heads, q_len, k_len)` (T5's relative bias, ALiBi).
        attention_mask: `(batch, k_len)`, bool or integer 0/1, 1/True for keys to attend to (HF).
        causal: hide future keys, aligned bottom-right when `q_len != k_len`.
        scale: multiplies q k^T; default `head_dim ** -0.5`. T5 passes 1.0 (its scale is folded
            into the initialisation of the query projection).
        dropout_p: dropout on the attention probabilities (training only; callers pass 0 in eval).

    Returns:
        `(batch, heads, q_len, head_dim)` in q's dtype. The softmax runs in float32 or wider (as
        HF's T5). A query that sees no key (every key hidden by `attention_mask` or `causal`, or
        given a `-inf` bias) gets zeros and zero gradients (q, k, v, bias), never NaN: the rule
        of every backend, as torch's SDPA (HF's eager T5 gives NaN there). A finite bias, even
        `finfo.min` (HF's mask value), is a score like any other.

    Raises:
        ValueError: see `check_attention_inputs` and `check_scale_and_dropout`.

    Reference: Vaswani et al. 2017, eq. 1; equals
    `torch.nn.functional.scaled_dot_product_attention`.
    """
    check_attention_inputs(q, k, v, bias, attention_mask)
    check_scale_and_dropout(scale, dropout_p)
    return reference_attention_unchecked(q, k, v, bias, attention_mask, causal, scale, dropout_p)


def reference_attention_unchecked(q, k, v, bias, attention_mask, causal, scale, dropout_p):
    """`scaled_dot_product_attention` without its input checks, for callers that checked at
    their boundary (a T5 model checks its input once per forward, not in every layer)."""
    tq, tk = q.shape[2], k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2))  # (B, H, Tq, Tk)
    if scale != 1.0:
        scores = scores * scale
    # Half-precision softmax loses the small weights; float64 input keeps its precision.
    acc = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(acc)
    no_key = None
    if bias is not None:
        bias = bias.to(acc)
        # A row whose bias is -inf at every key has no finite score: softmax would give 0/0 = NaN,
        # forward and backward. It sees no key, so it gets the masked rows' zeros: its bias is
        # zeroed (softmax stays finite) and its output below. Testing the bias, not the scores,
        # costs a pass over the smaller tensor, and no host sync; other rows are bit-unchanged.
        no_key = bias.amax(dim=-1, keepdim=True) == float("-inf")  # (..., Tq, 1)
        scores = scores + bias.masked_fill(no_key, 0.0)
    keep = visible_keys(attention_mask, causal, tq, tk, q.device)
    if keep is not None:
        # A finite fill (not -inf) keeps fully masked rows free of NaN; they are zeroed below.
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if keep is not None:
        probs = probs * keep
    probs = probs.to(v.dtype)
    if dropout_p > 0.0:
        probs = nn.functional.dropout(probs, p=dropout_p)
    out = torch.matmul(probs, v)  # (B, H, Tq, Dh)
    # Zeroing the output (not the probabilities) also zeroes every gradient of those rows.
    return out if no_key is None else out.masked_fill(no_key, 0.0)


__all__ = [
    "scaled_dot_product_attention",
    "check_attention_inputs",
    "check_mask_values",
    "visible_keys",
]
