"""Memory-efficient attention by chunking and checkpointing (Rabe & Staats 2021; chapter 9).

B batch, H heads, Tq/Tk query/key length, Dh head dim, qc/kc query/key chunk sizes.

Queries are processed `qc` at a time; for each query chunk every key chunk is summarised by
`(sum_j exp(s_j - m) v_j, sum_j exp(s_j - m), m)` with its own max m, and the summaries are merged
by rescaling to the largest max. Each summary runs under `torch.utils.checkpoint`, so autograd
keeps only the `(qc, Dh)` summaries and recomputes a chunk's `(qc, kc)` scores in backward.
Unlike `flash_attention` (one fused loop, hand-written backward), this is ordinary autograd code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from t5edu.attention import check_attention_inputs
from t5edu.flash_attention import (
    accumulation_dtype,
    as_4d,
    bias_tile,
    check_no_dropout,
    key_end,
)

# The paper uses 1024 queries x 4096 keys per chunk; smaller key chunks keep the recomputed
# (B, H, qc, kc) tile at 16 MiB for 8 heads in fp32.
QUERY_CHUNK = 512
KEY_CHUNK = 1024


def summarize_chunk(q, k, v, bias, pad, causal, i0, j0, offset, scale):
    """One key chunk's `(numerator (B, H, qc, Dh), denominator (B, H, qc), max (B, H, qc))`.

    `pad` is the chunk's `(B, 1, 1, kc)` padding mask or None; the causal triangle (keys
    j <= i + offset, offset = Tk - Tq) is rebuilt here from the chunk's first query i0 and key j0
    rather than passed in, so checkpointing saves no (qc, kc) tensor. Hidden keys get a finite
    fill (not -inf) and are zeroed after the exp, so a chunk, or a whole row, with no visible key
    (hidden, or every bias -inf) gives zeros and zero gradients rather than NaN.
    """
    acc = accumulation_dtype(q.dtype)
    s = torch.matmul(q, k.transpose(-1, -2)).to(acc) * scale  # (B, H, qc, kc)
    if bias is not None:
        s = s + bias.to(acc)
    keep = pad
    if causal:
        rows = torch.arange(i0, i0 + q.shape[2], device=q.device)[:, None]
        cols = torch.arange(j0, j0 + k.shape[2], device=q.device)[None, :]
        tri = cols <= rows + offset  # (qc, kc)
        keep = tri if keep is None else keep & tri
    if keep is not None:
        s = s.masked_fill(~keep, torch.finfo(acc).min)
    # The max only keeps exp() in range; the result does not depend on it (paper: stop_gradient).
    # A row whose every score is -inf (a -inf bias) would give exp(-inf - -inf) = NaN; its max
    # is clamped to finfo.min so exp gives 0 there, the chunk adds nothing and its weight in the
    # merge, exp(finfo.min - max), is 0 too. A row with no finite score anywhere gets zeros.
    m = s.amax(dim=-1, keepdim=True).detach().clamp_min(torch.finfo(acc).min)
    p = torch.exp(s - m)
    if keep is not None:
        p = p * keep
    return torch.matmul(p, v.to(acc)), p.sum(dim=-1), m.squeeze(-1)


def attend_query_chunk(q_i, k, v, bias4, mask, causal, scale, i0, key_chunk, q_len):
    """Attention output for queries i0..i0+qc: summarise key chunks, merge at the common max."""
    k_len = k.shape[2]
    i1 = i0 + q_i.shape[2]
    nums, dens, maxes = [], [], []
    for j0 in range(0, key_end(i1, q_len, k_len, causal), key_chunk):
        j1 = min(j0 + key_chunk, k_len)
        b = None if bias4 is None else bias_tile(bias4, i0, i1, j0, j1)
        pad = None if mask is None else mask[:, None, None, j0:j1]  # (B, 1, 1, kc)
        num, den, m = checkpoint(
            summarize_chunk, q_i, k[:, :, j0:j1], v[:, :, j0:j1], b, pad, causal, i0, j0,
            k_len - q_len, scale, use_reentrant=False,
        )  # fmt: skip
        nums.append(num)
        dens.append(den)
        maxes.append(m)
    if not nums:  # causal with q_len > k_len: the first queries see no key at all
        return torch.zeros_like(q_i)
    maxes = torch.stack(maxes)  # (chunks, B, H, qc)
    w = torch.exp(maxes - maxes.amax(dim=0))  # rescale every chunk to the common max
    num = (w[..., None] * torch.stack(nums)).sum(dim=0)  # (B, H, qc, Dh)
    den = (w * torch.stack(dens)).sum(dim=0)  # (B, H, qc)
    out = num / torch.where(den > 0, den, 1.0)[..., None]
    return out.to(q_i.dtype)


def memory_efficient_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    query_chunk_size: int = QUERY_CHUNK,
    key_chunk_size: int = KEY_CHUNK,
) -> torch.Tensor:
    """Attention in O(Tq * Dh * Tk / kc) memory: query/key chunks, each key chunk checkpointed.

    Arguments, result and errors as `t5edu.attention.scaled_dot_product_attention` (bias with
    gradient, HF padding mask, bottom-right causal, rows that see no key -> zeros), plus the chunk
    sizes (positive ints; lengths need not be multiples).

    Raises:
        ValueError: for inputs `check_attention_inputs` rejects, mask values other than 0/1,
            `dropout_p != 0` (no attention dropout here), or non-positive chunk sizes.

    Source: Rabe & Staats 2021, "Self-attention does not need O(n^2) memory", Fig. 1 (the
    chunked `summarize_chunk` / rescale-and-sum algorithm). Taught in chapter 9.
    """
    check_attention_inputs(q, k, v, bias, attention_mask)
    check_no_dropout(dropout_p, "memory_efficient")
    for name, size in (("query_chunk_size", query_chunk_size), ("key_chunk_size", key_chunk_size)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int; got {size!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    mask = None if attention_mask is None else attention_mask.bool()
    bias4, q_len = as_4d(bias), q.shape[2]
    outs = [
        attend_query_chunk(
            q[:, :, i0 : i0 + query_chunk_size],
            k,
            v,
            bias4,
            mask,
            causal,
            scale,
            i0,
            key_chunk_size,
            q_len,
        )
        for i0 in range(0, q_len, query_chunk_size)
    ]
    return torch.cat(outs, dim=2)  # (B, H, Tq, Dh)


class MemoryEfficientAttention(nn.Module):
    """Core attention (no projections) by Rabe & Staats' chunked, checkpointed algorithm.

    forward(q `(B, H, Tq, Dh)`, k, v `(B, H, Tk, Dh)`, *, bias, attention_mask, causal, scale)
    returns `(B, H, Tq, Dh)`, as `memory_efficient_attention` with this module's chunk sizes.
    Same call as `t5edu.FlashAttention`. Raises ValueError for bad input (see the function).
    """

    def __init__(self, query_chunk_size: int = QUERY_CHUNK, key_chunk_size: int = KEY_CHUNK):
        super().__init__()
        self.query_chunk_size, self.key_chunk_size = query_chunk_size, key_chunk_size

    def forward(self, q, k, v, *, bias=None, attention_mask=None, causal=False, scale=None):
        return memory_efficient_attention(
            q,
            k,
            v,
            bias=bias,
            attention_mask=attention_mask,
            causal=causal,
            scale=scale,
            query_chunk_size=self.query_chunk_size,
            key_chunk_size=self.key_chunk_size,
        )

    def extra_repr(self) -> str:
        return f"query_chunk_size={self.query_chunk_size}, key_chunk_size={self.key_chunk_size}"


__all__ = ["memory_efficient_attention", "MemoryEfficientAttention"]
