"""One dispatcher for every attention module: pick an attention backend by name (chapters 1, 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim.

Every backend takes exactly the arguments of `t5edu.attention.scaled_dot_product_attention`
and must equal it (see tests/test_backends.py). New backends register with `@register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from t5edu.attention import check_attention_inputs, scaled_dot_product_attention, visible_keys

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
    single `attn_mask`); rows with no visible key are zeroed afterwards so they give zeros, not
    NaN, as the reference does.
    """
    check_attention_inputs(q, k, v, bias, attention_mask)
    tq, tk = q.shape[2], k.shape[2]
    keep = visible_keys(attention_mask, causal, tq, tk, q.device)
    mask = None if bias is None else bias.to(q.dtype)
    if keep is not None:
        fill = torch.finfo(q.dtype).min
        neg = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, fill)
        mask = neg if mask is None else (mask + neg).clamp_min(fill)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    if keep is not None:
        out = out * keep.any(dim=-1, keepdim=True).to(out.dtype)  # (B, 1, Tq, 1)
    return out


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
            backend raises for bad input.
    """
    try:
        fn = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}; got {backend!r}") from None
    return fn(
        q,
        k,
        v,
        bias=bias,
        attention_mask=attention_mask,
        causal=causal,
        scale=scale,
        dropout_p=dropout_p,
    )
