"""ALiBi, attention with linear biases (Press et al. 2022, "Train Short, Test Long") (chapter 8).

B batch, H heads, Tq/Tk query/key length, Dh head dim, D d_model.

ALiBi adds no position embedding; each head h adds -m_h * distance(i, j) to its scores, with
head-specific slopes m_h in a geometric sequence, so far keys are penalised linearly and the
penalty is defined at any length (the source of its length extrapolation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from t5edu.backends import attention
from t5edu.multi_head_attention import MultiHeadAttention


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The paper's slopes, float32 `(num_heads,)` (Press et al. 2022, section 3).

    For n = 2^k heads: m_h = 2^(-8h/n), h = 1..n (1/2, 1/4, ..., 1/256 for 8 heads). For a head
    count H that is not a power of two, n = the largest power of two below H gives the first n
    slopes, and the remaining H - n are the odd-numbered slopes of 2n heads, 2^(-8h/(2n)) for
    h = 1, 3, 5, ...: they fall between the first ones. Each value is 2^(exact exponent) rounded
    once to float32. Equals HF BLOOM's `_get_alibi_slopes` (tested for 1..64 heads).

    Raises:
        ValueError: when num_heads < 1.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1; got num_heads={num_heads}")
    n = 2 ** math.floor(math.log2(num_heads))
    exponents = [-8 * h / n for h in range(1, n + 1)]
    exponents += [-8 * h / (2 * n) for h in range(1, 2 * (num_heads - n), 2)]
    return torch.tensor([2.0**e for e in exponents], dtype=torch.float64).float()


class ALiBi(nn.Module):
    """The ALiBi bias for `num_heads` heads with the paper's fixed slopes.

    `.slopes`: float32 `(heads,)`. `.bias(q_len, k_len, causal=False, device=None)` (also
    `alibi(q_len, k_len, causal)`): float32 `(heads, q_len, k_len)` on `device` (default: the
    module's), aligned bottom-right like the causal mask of `t5edu.attention`: query i sits at
    position i + k_len - q_len, so `bias(1, past + 1)` is the last row of
    `bias(past + 1, past + 1)`, what decoding with a KV cache needs.
    - causal=True: m * (j - i), the paper's form: -m * distance for the keys j <= i a causal
      query sees. Entries with j > i are positive and meaningless; hiding the future is the
      attention's job (`causal=True` there), not the bias's.
    - causal=False: -m * |i - j|, the symmetric form for bidirectional (encoder) attention.
    HF BLOOM's `build_alibi_tensor` adds m * j instead of m * (j - i); they differ by m * i, the
    same for every key of a row, which softmax ignores, so attention outputs are equal.

    Raises:
        ValueError: num_heads < 1, or lengths < 1.
    """

    def __init__(self, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        # A buffer, so `.to(device)` moves it; not persistent, as num_heads fixes it.
        self.register_buffer("paper_slopes", alibi_slopes(num_heads), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # `.half()` / `.to(dtype)` would round the fixed slopes: keep them exact in float32.
        self.paper_slopes = alibi_slopes(self.num_heads).to(self.paper_slopes.device)
        return self

    @property
    def slopes(self) -> torch.Tensor:
        return self.paper_slopes

    def bias(self, q_len: int, k_len: int, causal: bool = False, device=None) -> torch.Tensor:
        if q_len < 1 or k_len < 1:
            raise ValueError(f"q_len and k_len must be >= 1; got q_len={q_len}, k_len={k_len}")
        slopes = self.slopes.float()
        if device is not None:
            slopes = slopes.to(device)
        i = torch.arange(k_len - q_len, k_len, device=slopes.device)[:, None]  # (Tq, 1) positions
        j = torch.arange(k_len, device=slopes.device)[None, :]  # (1, Tk)
        rel = (j - i).float()  # (Tq, Tk) signed offset of the key from the query
        dist = rel if causal else -rel.abs()
        return slopes[:, None, None] * dist  # (H, Tq, Tk)

    def forward(self, q_len: int, k_len: int, causal: bool = False, device=None) -> torch.Tensor:
        return self.bias(q_len, k_len, causal, device)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


class AdaptiveALiBi(ALiBi):
    """ALiBi whose slopes are trained: m_h = exp(s_h), s initialised to log of the paper's slopes.

    Learning log-slopes keeps every slope positive (a negative slope would reward distance) and
    makes steps relative to a slope's size, fitting slopes that span 1/2 .. 1/256. `.slopes` is
    differentiable; bias and shapes as `ALiBi`.
    """

    def __init__(self, num_heads: int):
        super().__init__(num_heads)
        self.log_slopes = nn.Parameter(self.paper_slopes.log())

    @property
    def slopes(self) -> torch.Tensor:
        return self.log_slopes.exp()


class ALiBiAttention(MultiHeadAttention):
    """Multi-head self-attention with ALiBi biases and no position embedding.

    Args as `t5edu.MultiHeadAttention` (d_model, num_heads, d_kv, bias (default False), dropout,
    backend) plus `adaptive` (trainable slopes, `AdaptiveALiBi`). Scores are scaled by
    1/sqrt(d_kv). Bidirectional: the symmetric -m|i - j| bias, no mask (an encoder's attention).

    forward(x `(B, T, D)`, attention_mask `(B, T)` 1 = attend) returns `(B, T, D)`.
    """

    causal = False

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_kv: int | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        backend: str = "naive",
        adaptive: bool = False,
    ):
        super().__init__(d_model, num_heads, d_kv, bias, dropout, backend)
        self.alibi = AdaptiveALiBi(num_heads) if adaptive else ALiBi(num_heads)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = (
            self.split_heads(self.q(x)),
            self.split_heads(self.k(x)),
            self.split_heads(self.v(x)),
        )
        t = x.shape[1]
        out = attention(
            q,
            k,
            v,
            bias=self.alibi.bias(t, t, self.causal, x.device)[None],  # (1, H, T, T)
            attention_mask=attention_mask,
            causal=self.causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )  # (B, H, T, Dh)
        return self.o(out.transpose(1, 2).reshape(x.shape[0], t, -1))  # (B, T, D)


class CausalALiBiAttention(ALiBiAttention):
    """Causal (decoder) self-attention with ALiBi: the m * (j - i) bias and the causal mask.

    Press et al. 2022's setting, and BLOOM's. Args and shapes as `ALiBiAttention`.
    """

    causal = True
