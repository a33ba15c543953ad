"""Exercises of chapter 1 (attention). Expected outputs come from `t5edu.attention`.

B batch, H heads, Tq/Tk query/key length, Dh head dim, D d_model.
"""

from __future__ import annotations

import torch

from t5edu.attention import scaled_dot_product_attention, visible_keys
from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.multi_head_attention import MultiHeadAttention

# --- ch01.score_memory: bytes of one sequence's score matrix (exercise 2) ---------------------


def _score_bytes(inputs: dict) -> int:
    # Allocated on the meta device: the size of the real tensor, with no memory behind it.
    scores = torch.empty(1, 8, 2048, 2048, dtype=torch.float32, device="meta")  # (B, H, T, T)
    return scores.numel() * scores.element_size()


register(
    Exercise(
        id="ch01.score_memory",
        task="bytes of the (1, 8, 2048, 2048) float32 score matrix of one sequence, as an int",
        cases=lambda: [{}],
        expected=_score_bytes,
        solution=lambda: 8 * 2048**2 * 4,
        run=lambda answer, inputs: answer,
        value=True,
    )
)

# --- ch01.causal_mask: bottom-right causal mask (exercise 4) ----------------------------------

_MASK_SHAPES = [(4, 4), (3, 8), (1, 7), (5, 9), (1, 1), (6, 6)]


def _mask_cases() -> list[dict]:
    return [{"q_len": q, "k_len": k} for q, k in _MASK_SHAPES]


def _causal_mask(q_len: int, k_len: int) -> torch.Tensor:
    return visible_keys(None, True, q_len, k_len, "cpu")[0, 0]  # (Tq, Tk) bool


register(
    Exercise(
        id="ch01.causal_mask",
        task="causal_mask(q_len, k_len) -> bool (q_len, k_len), True where query i may see "
        "key j, aligned bottom-right (j <= i + k_len - q_len)",
        cases=_mask_cases,
        expected=lambda inputs: _causal_mask(**inputs),
        solution=lambda: _causal_mask,
    )
)

# --- ch01.masked_attention: scale, padding, causal, fully masked rows (exercise 5) ------------


def _attention_cases() -> list[dict]:
    gen = seeded(101)
    cases = []
    for b, h, tq, tk, d, causal, pad, scale in [
        (2, 2, 5, 5, 16, False, None, None),  # plain, default 1/sqrt(16)
        (2, 3, 4, 4, 8, True, None, None),  # causal, square
        (1, 2, 3, 7, 8, True, None, None),  # causal, Tq < Tk: bottom-right
        (2, 2, 5, 6, 8, False, [6, 3], 1.0),  # padding, T5's scale
        (2, 1, 3, 4, 4, True, [4, 0], None),  # sequence 1 has no visible key: zeros
    ]:
        q, k, v = randn(gen, b, h, tq, d), randn(gen, b, h, tk, d), randn(gen, b, h, tk, d)
        mask = None
        if pad is not None:
            mask = (torch.arange(tk)[None, :] < torch.tensor(pad)[:, None]).long()  # (B, Tk)
        cases.append(
            {"q": q, "k": k, "v": v, "attention_mask": mask, "causal": causal, "scale": scale}
        )
    return cases


def _attention(q, k, v, attention_mask=None, causal=False, scale=None):
    return scaled_dot_product_attention(
        q, k, v, attention_mask=attention_mask, causal=causal, scale=scale
    )


register(
    Exercise(
        id="ch01.masked_attention",
        task="masked_attention(q, k, v, attention_mask=None, causal=False, scale=None) -> "
        "(B, H, Tq, Dh): scale defaults to Dh**-0.5, attention_mask (B, Tk) 1 = attend, causal "
        "aligned bottom-right, a query with no visible key gives zeros",
        cases=_attention_cases,
        expected=lambda inputs: _attention(**inputs),
        solution=lambda: _attention,
        atol=1e-5,
    )
)

# --- ch01.multi_head_attention: project, split heads, attend, merge (exercise 6) --------------


def _mha_cases() -> list[dict]:
    gen = seeded(102)
    cases = []
    for b, t, d, h in [(2, 5, 16, 4), (1, 7, 12, 3), (3, 4, 8, 1), (2, 6, 16, 8)]:
        x = randn(gen, b, t, d)
        w = {name: randn(gen, d, d) * d**-0.5 for name in ("w_q", "w_k", "w_v", "w_o")}
        cases.append({"x": x, **w, "num_heads": h})
    return cases


def _mha(x, w_q, w_k, w_v, w_o, num_heads):
    d = x.shape[-1]
    mha = MultiHeadAttention(d, num_heads, bias=False)
    with torch.no_grad():
        for lin, w in zip((mha.q, mha.k, mha.v, mha.o), (w_q, w_k, w_v, w_o), strict=True):
            lin.weight.copy_(w)
    return mha(x).detach()


def _mha_solution(x, w_q, w_k, w_v, w_o, num_heads):
    b, t, d = x.shape
    dh = d // num_heads

    def split(y):  # (B, T, D) -> (B, H, T, Dh)
        return y.view(b, t, num_heads, dh).transpose(1, 2)

    q, k, v = split(x @ w_q.T), split(x @ w_k.T), split(x @ w_v.T)
    weights = (q @ k.transpose(-1, -2) * dh**-0.5).softmax(-1)  # (B, H, T, T)
    return (weights @ v).transpose(1, 2).reshape(b, t, d) @ w_o.T  # (B, T, D)


register(
    Exercise(
        id="ch01.multi_head_attention",
        task="multi_head_attention(x, w_q, w_k, w_v, w_o, num_heads) -> (B, T, D): x (B, T, D), "
        "weights (D, D) in nn.Linear's (out, in) layout, no bias, no mask, scores scaled by "
        "(D / num_heads)**-0.5",
        cases=_mha_cases,
        expected=lambda inputs: _mha(**inputs),
        solution=lambda: _mha_solution,
        atol=1e-5,
    )
)
