"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer") (chapter 7).

B batch, H heads, T/Tq/Tk sequence/query/key length, Dh head dim, D d_model.

RoPE rotates each pair of channels (x_2i, x_2i+1) of a query or key at position m by the angle
m * theta_i, theta_i = base^(-2i/Dh) (Su et al. 2021, eq. 34). Since rotations compose, the score
<R(m) q, R(n) k> = <q, R(n - m) k> depends on the offset n - m only: relative positions with no
bias matrix. Two pairings of the channels are in use:
- interleaved (the paper, GPT-J, Meta's LLaMA checkpoints): pairs (0, 1), (2, 3), ...;
- half-split (GPT-NeoX, HF LLaMA): pairs (i, i + Dh/2).
They are the same rotation up to the channel permutation `half_split_index(Dh)`: permuting the
projections' output rows turns a model of one convention into one of the other.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from t5edu.backends import attention
from t5edu.multi_head_attention import MultiHeadAttention

SCALING_TYPES = ("linear", "ntk")


def half_split_index(dim: int) -> torch.Tensor:
    """Permutation p with `x[..., p]` = the half-split layout of an interleaved x `(..., dim)`.

    p = (0, 2, 4, ..., 1, 3, 5, ...): the first channel of every pair, then the second, so pair
    (2i, 2i+1) lands on (i, i + dim/2). Its inverse is `torch.argsort(p)`.
    """
    _check_dim(dim)
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


def to_half_split(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim from interleaved pairs to half-split pairs (see `half_split_index`)."""
    return x[..., half_split_index(x.shape[-1]).to(x.device)]


def to_interleaved(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim from half-split pairs to interleaved ones (undoes to_half_split)."""
    return x[..., torch.argsort(half_split_index(x.shape[-1])).to(x.device)]


def _check_dim(dim: int) -> None:
    if dim < 2 or dim % 2:
        raise ValueError(f"RoPE rotates channel pairs: dim must be even and >= 2; got dim={dim}")


def rope_inv_freq(
    dim: int, base: float = 10000.0, scaling: dict | None = None, device=None
) -> torch.Tensor:
    """The rotation frequencies theta_i = base^(-2i/dim), i < dim/2, float32 `(dim/2,)`.

    scaling (for running past the trained length), a dict `{"type": ..., "factor": s}` (HF's
    `"rope_type"` is accepted for `"type"`):
    - "linear" (position interpolation, Chen et al. 2023): theta_i / s, i.e. positions squeezed
      s-fold back into the trained range; equals HF's "linear" rope type.
    - "ntk" (NTK-aware, bloc97 2023): base * s^(dim/(dim-2)); the fastest pair (i=0) keeps its
      frequency, the slowest is divided by exactly s, and those between are interpolated less the
      faster they turn.

    Raises:
        ValueError: odd `dim`, `base` <= 1, an unknown scaling type or a factor below 1.
    """
    _check_dim(dim)
    if not base > 1.0:
        raise ValueError(f"base must be > 1; got base={base}")
    kind, factor = _parse_scaling(scaling)
    if kind == "ntk":
        if dim == 2:
            raise ValueError(
                "NTK-aware scaling needs dim > 2 (it rescales base by s^(dim/(dim-2)))"
            )
        base = base * factor ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))
    return inv_freq / factor if kind == "linear" else inv_freq


def _parse_scaling(scaling: dict | None) -> tuple[str | None, float]:
    if scaling is None:
        return None, 1.0
    if not isinstance(scaling, dict):
        raise ValueError(
            f"scaling must be None or a dict {{'type': 'linear' | 'ntk', 'factor': float}}; "
            f"got {scaling!r}"
        )
    kind = scaling.get("type", scaling.get("rope_type"))
    if kind not in SCALING_TYPES or "factor" not in scaling:
        raise ValueError(
            f"scaling must be {{'type': one of {list(SCALING_TYPES)}, 'factor': float}}; "
            f"got {scaling!r}"
        )
    factor = float(scaling["factor"])
    if not factor >= 1.0:
        raise ValueError(f"scaling factor must be >= 1; got {factor}")
    return kind, factor


def _rotate_pairs(x: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """(x_a, x_b) -> (-x_b, x_a) for every channel pair: times i in the complex plane."""
    if interleaved:
        return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)  # (..., Dh)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class RoPE(nn.Module):
    """Rotary position embedding for queries and keys `(batch, heads, seq, dim)`.

    Args:
        dim: head dim Dh (even). max_seq_length: length of the cos/sin cache built up front; a
            longer input grows it (doubling) instead of failing. base: 10000 in the paper.
        interleaved: pair channels (2i, 2i+1) as the paper/GPT-J; default False pairs (i, i+Dh/2)
            as GPT-NeoX/HF LLaMA. learnable: make the frequencies a trainable parameter
            (initialised to the paper's; cos/sin are then recomputed each call).
        scaling: None or {"type": "linear" | "ntk", "factor": s}; see `rope_inv_freq`.

    `q_rot, k_rot = rope(q, k, offset=0)`: keys get positions offset .. offset + Tk - 1 and
    queries the last Tq of those, offset + Tk - Tq .. offset + Tk - 1 (bottom-right, as the
    causal mask of `t5edu.attention`); with Tq == Tk both start at `offset`. With a KV cache,
    rotate only the new q and k with `offset=past_len` and append k_rot to the cache.

    The cos/sin table is float32 whatever the input dtype (bf16 angles are wrong by whole
    radians at position 1000); the rotation runs in float32 and returns the input dtype.
    Parity: equals HF LLaMA's `apply_rotary_pos_emb` within 1e-6 in float32, directly for the
    half-split convention and after `to_half_split` for the interleaved one.

    Raises:
        ValueError: odd `dim`, bad `scaling` or `base` (see `rope_inv_freq`), `max_seq_length`
            < 1, inputs that are not `(batch, heads, seq, dim)`, `Tq > Tk`, or a negative offset.
    """

    def __init__(
        self,
        dim: int,
        max_seq_length: int = 2048,
        base: float = 10000.0,
        interleaved: bool = False,
        learnable: bool = False,
        scaling: dict | None = None,
    ):
        super().__init__()
        inv_freq = rope_inv_freq(dim, base, scaling)
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be >= 1; got {max_seq_length}")
        self.dim, self.base, self.scaling = dim, base, scaling
        self.interleaved, self.learnable = interleaved, learnable
        if learnable:
            self.inv_freq = nn.Parameter(inv_freq)
        else:
            # Not a buffer: `model.half()` would round it (and the cache) to 16 bits. The table is
            # rebuilt from the exact frequencies on the input's device when needed.
            self._cos, self._sin = self._table(torch.arange(max_seq_length), inv_freq)

    def _table(self, positions: torch.Tensor, inv_freq: torch.Tensor):
        freqs = positions.float()[:, None] * inv_freq.float()[None, :]  # (T, Dh/2) angles m*theta_i
        if self.interleaved:
            angles = freqs.repeat_interleave(2, dim=-1)  # (T, Dh): theta_0, theta_0, theta_1, ...
        else:
            angles = torch.cat(
                (freqs, freqs), dim=-1
            )  # (T, Dh): theta_0, theta_1, ..., theta_0, ...
        return angles.cos(), angles.sin()

    def cos_sin(self, seq_len: int, offset: int = 0, device=None):
        """float32 cos and sin `(seq_len, dim)` for positions offset .. offset + seq_len - 1."""
        if isinstance(offset, bool) or not isinstance(offset, (int, torch.SymInt)) or offset < 0:
            raise ValueError(
                f"offset must be an int >= 0 (a token position); got offset={offset!r}"
            )
        end = offset + seq_len
        if self.learnable:
            positions = torch.arange(offset, end, device=self.inv_freq.device)
            cos, sin = self._table(positions, self.inv_freq)
            return (cos, sin) if device is None else (cos.to(device), sin.to(device))
        device = self._cos.device if device is None else torch.device(device)
        cached = self._cos.shape[0]
        if end > cached or self._cos.device != device:
            length = (
                cached if end <= cached else max(end, 2 * cached)
            )  # doubling: O(log T) rebuilds
            inv_freq = rope_inv_freq(self.dim, self.base, self.scaling, device=device)
            self._cos, self._sin = self._table(torch.arange(length, device=device), inv_freq)
        return self._cos[offset:end], self._sin[offset:end]

    @property
    def cached_length(self) -> int:
        """Positions the cos/sin cache currently covers (0 when the frequencies are learnable)."""
        return 0 if self.learnable else self._cos.shape[0]

    def rotate(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate x `(..., seq, dim)` as positions offset .. offset + seq - 1; x's dtype out."""
        if x.dim() < 2 or x.shape[-1] != self.dim:
            raise ValueError(f"RoPE expects (..., seq, dim={self.dim}); got shape {tuple(x.shape)}")
        cos, sin = self.cos_sin(x.shape[-2], offset, x.device)  # (T, Dh) each, float32
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        return (xf * cos + _rotate_pairs(xf, self.interleaved) * sin).to(x.dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0):
        for name, t in (("q", q), ("k", k)):
            if t.dim() != 4 or t.shape[-1] != self.dim:
                raise ValueError(
                    f"{name} must be (batch, heads, seq, dim={self.dim}); got shape "
                    f"{tuple(t.shape)}"
                )
        tq, tk = q.shape[2], k.shape[2]
        if tq > tk:
            raise ValueError(
                f"q may not be longer than k (queries take the last Tq key positions); got "
                f"q_len={tq}, k_len={tk}"
            )
        return self.rotate(q, offset + tk - tq), self.rotate(k, offset)

    def extra_repr(self) -> str:
        return (
            f"{self.dim}, base={self.base}, interleaved={self.interleaved}, "
            f"learnable={self.learnable}, scaling={self.scaling}"
        )


class RoPEAttention(MultiHeadAttention):
    """Multi-head self-attention with RoPE on queries and keys (RoFormer; LLaMA's attention).

    Args as `t5edu.MultiHeadAttention` (d_model, num_heads, d_kv, bias (default False, as
    LLaMA), dropout, backend) plus RoPE's (max_seq_length, base, interleaved, scaling). The
    scores are scaled by 1/sqrt(d_kv).

    forward(x `(B, T, D)`, attention_mask `(B, T)` 1 = attend, causal, offset: position of
    x[:, 0], bias broadcastable to `(B, H, T, T)`) returns `(B, T, D)`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_kv: int | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        backend: str = "naive",
        max_seq_length: int = 2048,
        base: float = 10000.0,
        interleaved: bool = False,
        scaling: dict | None = None,
    ):
        super().__init__(d_model, num_heads, d_kv, bias, dropout, backend)
        self.rope = RoPE(self.d_kv, max_seq_length, base, interleaved, scaling=scaling)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        causal: bool = False,
        offset: int = 0,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = (
            self.split_heads(self.q(x)),
            self.split_heads(self.k(x)),
            self.split_heads(self.v(x)),
        )
        q, k = self.rope(q, k, offset=offset)  # (B, H, T, Dh) each
        out = attention(
            q,
            k,
            v,
            bias=bias,
            attention_mask=attention_mask,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )  # (B, H, T, Dh)
        b, _, t, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(b, t, -1))  # (B, T, D)


def rope_wavelengths(dim: int, base: float = 10000.0) -> torch.Tensor:
    """Positions per full turn of each channel pair, 2*pi/theta_i, float32 `(dim/2,)`."""
    return 2 * math.pi / rope_inv_freq(dim, base)
