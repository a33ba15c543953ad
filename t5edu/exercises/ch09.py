"""Exercises of chapter 9 (flash attention). Expected outputs come from torch at check time:
`torch.nn.functional.scaled_dot_product_attention` and `torch.logsumexp` on the full score
matrix, autograd through a gather of the bias table, the softmax statistics of a whole row, and
`t5edu.saved_tensor_bytes` counting what the package's backends really save for the backward.

B batch, H heads, Tq/Tk query/key length, Dh head dim, NB num_buckets; a partial softmax of a
block of keys is (m: max, l: sum of exp(s - m), o: sum of exp(s - m) v), unnormalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.fast_rmsnorm import saved_tensor_bytes
from t5edu.relative_position import relative_position_bucket

# --- ch09.saved_bytes: what naive and flash attention keep for the backward (exercise 2) -------

_SAVED_SIZES = [  # batch, heads, q_len, k_len, head_dim, backend
    (1, 2, 1024, 1024, 64, "naive"),  # the chapter's measurement
    (1, 2, 1024, 1024, 64, "flash"),
    (2, 3, 40, 56, 16, "naive"),
    (2, 3, 40, 56, 16, "flash"),
    (1, 8, 1, 300, 64, "naive"),  # one decoding query
    (4, 1, 64, 8, 32, "flash"),
]


def _saved_bytes(batch, heads, q_len, k_len, head_dim, backend):
    """Run the backend on float32 inputs that need gradients; count the storages it saves."""
    import t5edu

    q = torch.zeros(batch, heads, q_len, head_dim, requires_grad=True)
    k, v = (torch.zeros(batch, heads, k_len, head_dim, requires_grad=True) for _ in range(2))
    return saved_tensor_bytes(lambda: t5edu.attention(q, k, v, backend=backend))


def _saved_bytes_solution(batch, heads, q_len, k_len, head_dim, backend):
    inputs = batch * heads * (q_len + 2 * k_len) * head_dim  # q, k, v
    if backend == "naive":
        return 4 * (inputs + batch * heads * q_len * k_len)  # + the probabilities P
    return 4 * (inputs + batch * heads * q_len * head_dim + batch * heads * q_len)  # + O, L


register(
    Exercise(
        id="ch09.saved_bytes",
        task="saved_bytes(batch, heads, q_len, k_len, head_dim, backend) -> int: bytes of the "
        "float32 tensors t5edu.attention(q, k, v, backend=backend) saves for the backward "
        "(inputs included), backend 'naive' or 'flash', no mask or bias",
        cases=lambda: [
            dict(zip(["batch", "heads", "q_len", "k_len", "head_dim", "backend"], c, strict=True))
            for c in _SAVED_SIZES
        ],
        expected=lambda inputs: _saved_bytes(**inputs),
        solution=lambda: _saved_bytes_solution,
    )
)

# --- ch09.merge_partials: two blocks' online-softmax states into one (exercise 3) -------------


def _partial(scores, values):
    """(m, l, o) of keys `scores (B, H, Tq, n)`, `values (B, H, n, Dh)`; a row whose scores are
    all -inf (a masked block) gives (-inf, 0, 0)."""
    m = scores.amax(-1)  # (B, H, Tq)
    p = torch.exp(scores - torch.where(m.isinf(), 0.0, m)[..., None])  # exp(-inf) = 0
    return m, p.sum(-1), p @ values


def _merge_cases() -> list[dict]:
    gen = seeded(901)
    cases = []
    for b, h, tq, n, split, d, scale, masked in [
        (1, 2, 3, 10, 4, 8, 1.0, None),
        (2, 2, 5, 16, 8, 4, 3.0, None),
        (1, 1, 4, 12, 6, 8, 100.0, None),  # scores near 100: exp(m) alone would overflow
        (2, 3, 6, 9, 3, 4, 1.0, "first"),  # some rows see no key in the first block
        (1, 2, 4, 20, 12, 8, 2.0, "second"),  # ... or in the second (as a causal tile)
    ]:
        scores, values = scale * randn(gen, b, h, tq, n), randn(gen, b, h, n, d)
        if masked == "first":
            scores[:, :, ::2, :split] = float("-inf")
        elif masked == "second":
            scores[:, :, 1::2, split:] = float("-inf")
        cases.append({"scores": scores, "values": values, "split": split})
    return cases


def _merge_run(answer, inputs):
    s, v, n = inputs["scores"], inputs["values"], inputs["split"]
    return answer(*_partial(s[..., :n], v[:, :, :n]), *_partial(s[..., n:], v[:, :, n:]))


def _merge_solution(m1, l1, o1, m2, l2, o2):
    m = torch.maximum(m1, m2)  # (B, H, Tq)
    a1, a2 = torch.exp(m1 - m), torch.exp(m2 - m)  # <= 1; exp(-inf - m) = 0 for a masked block
    return m, a1 * l1 + a2 * l2, a1[..., None] * o1 + a2[..., None] * o2


register(
    Exercise(
        id="ch09.merge_partials",
        task="merge(m1, l1, o1, m2, l2, o2) -> (m, l, o): the partial softmax of both blocks' "
        "keys together, each block's sum and output rescaled by exp(m_block - m); a block "
        "a row sees no key of comes as (-inf, 0, 0); cases: scores and values split at `split`",
        cases=_merge_cases,
        expected=lambda inputs: _partial(inputs["scores"], inputs["values"]),
        run=_merge_run,
        solution=lambda: _merge_solution,
        atol=1e-5,
        rtol=1e-6,
        why_tol="relative 1e-6 on sums of up to 20 terms",
    )
)

# --- ch09.flash_forward: the tiled forward with a bottom-right causal mask (exercise 5) --------

_FORWARD_SETTINGS = [  # b, h, Tq, Tk, Dh, causal, block_q, block_k
    (1, 2, 40, 56, 16, True, 16, 16),
    (2, 1, 17, 17, 8, True, 8, 5),  # lengths that are not multiples of the tiles
    (1, 2, 8, 30, 8, False, 4, 7),
    (1, 1, 1, 9, 4, True, 1, 4),  # one decoding query sees every key
    (2, 2, 33, 33, 16, False, 16, 16),
    (1, 3, 5, 20, 8, True, 2, 3),
]


def _forward_cases() -> list[dict]:
    gen = seeded(902)
    return [
        {"q": randn(gen, b, h, tq, d), "k": randn(gen, b, h, tk, d), "v": randn(gen, b, h, tk, d),
         "causal": causal, "block_q": bq, "block_k": bk}
        for b, h, tq, tk, d, causal, bq, bk in _FORWARD_SETTINGS
    ]  # fmt: skip


def _visible(q_len, k_len, causal):
    """(Tq, Tk) bool: key j is visible to query i (bottom-right: j <= i + Tk - Tq)."""
    keep = torch.ones(q_len, k_len, dtype=torch.bool)
    return keep.tril(k_len - q_len) if causal else keep


def _forward(q, k, v, causal, block_q, block_k):
    keep = _visible(q.shape[2], k.shape[2], causal)
    scores = (q @ k.mT * q.shape[-1] ** -0.5).masked_fill(~keep, float("-inf"))  # (B, H, Tq, Tk)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return out, scores.logsumexp(-1)


def _forward_solution(q, k, v, causal, block_q, block_k):
    tq, tk, scale = q.shape[2], k.shape[2], q.shape[-1] ** -0.5
    out, lse = torch.empty_like(q), torch.empty(q.shape[:-1])
    for i in range(0, tq, block_q):
        q_i = q[:, :, i : i + block_q]  # (B, H, bq, Dh)
        rows = torch.arange(i, i + q_i.shape[2])[:, None]
        m = torch.full(q_i.shape[:-1], -torch.inf)
        l, o = torch.zeros(q_i.shape[:-1]), torch.zeros_like(q_i)
        last_key = min(tk, i + q_i.shape[2] + tk - tq) if causal else tk  # tiles beyond: hidden
        for j in range(0, last_key, block_k):
            k_j, v_j = k[:, :, j : j + block_k], v[:, :, j : j + block_k]
            s = q_i @ k_j.mT * scale  # (B, H, bq, bk)
            if causal:
                cols = torch.arange(j, j + k_j.shape[2])[None, :]
                s = s.masked_fill(cols > rows + tk - tq, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))  # finite: every row sees key 0 in tile 0
            p, alpha = torch.exp(s - m_new[..., None]), torch.exp(m - m_new)
            l, o, m = alpha * l + p.sum(-1), alpha[..., None] * o + p @ v_j, m_new
        out[:, :, i : i + block_q], lse[:, :, i : i + block_q] = o / l[..., None], m + l.log()
    return out, lse


register(
    Exercise(
        id="ch09.flash_forward",
        task="flash_forward(q (B, H, Tq, Dh), k, v (B, H, Tk, Dh), causal, block_q, block_k) -> "
        "(out (B, H, Tq, Dh), lse (B, H, Tq)): softmax(q k^T / sqrt(Dh)) v tile by tile with "
        "the online softmax, causal aligned bottom-right (key j visible to query i when "
        "j <= i + Tk - Tq), lse the log-sum-exp of each row's visible scores; Tq <= Tk",
        cases=_forward_cases,
        expected=lambda inputs: _forward(**inputs),
        solution=lambda: _forward_solution,
    )
)

# --- ch09.table_grad: the gradient of T5's bias table, by scatter-add (exercise 7) -------------

_TABLE_SETTINGS = [  # b, h, Tq, Tk, bidirectional, num_buckets, max_distance
    (2, 4, 12, 12, True, 32, 128),
    (1, 2, 1, 9, False, 8, 16),  # a decoding step's single row
    (3, 2, 10, 20, True, 8, 16),  # few buckets: many distances share one
    (2, 3, 7, 5, False, 32, 128),
]


def _table_cases() -> list[dict]:
    gen = seeded(903)
    cases = []
    for b, h, tq, tk, bidirectional, nb, max_distance in _TABLE_SETTINGS:
        rel = torch.arange(tk)[None, :] - torch.arange(tk - tq, tk)[:, None]  # (Tq, Tk): j - i
        buckets = relative_position_bucket(rel, bidirectional, nb, max_distance)
        cases.append({"ds": randn(gen, b, h, tq, tk), "buckets": buckets, "num_buckets": nb})
    return cases


def _table_grad(ds, buckets, num_buckets):
    """Autograd: the bias (B, H, Tq, Tk) gathered from a (NB, H) table, given gradient ds."""
    table = torch.zeros(num_buckets, ds.shape[1], dtype=torch.float64, requires_grad=True)
    bias = table[buckets].permute(2, 0, 1)[None].expand(ds.shape)  # (B, H, Tq, Tk)
    (grad,) = torch.autograd.grad(bias, table, ds.double())
    return grad.float()


def _table_grad_solution(ds, buckets, num_buckets):
    grad = torch.zeros(ds.shape[1], num_buckets)  # (H, NB)
    grad.index_add_(1, buckets.flatten(), ds.sum(0).flatten(1))  # duplicates add up
    return grad.t()  # (NB, H), the layout of RelativePositionBias.weight


register(
    Exercise(
        id="ch09.table_grad",
        task="table_grad(ds (B, H, Tq, Tk), buckets (Tq, Tk) long, num_buckets) -> (NB, H): "
        "dW[b, h] = the sum over the batch and over every (i, j) with buckets[i, j] = b of "
        "ds[:, h, i, j]",
        cases=_table_cases,
        expected=lambda inputs: _table_grad(**inputs),
        solution=lambda: _table_grad_solution,
        rtol=1e-6,
        why_tol="plus relative 1e-6: float32 sums of up to 60 entries, in any order",
    )
)
