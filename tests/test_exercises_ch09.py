"""Chapter 9's exercises: typical wrong answers fail, with a verdict that names what is wrong.

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

import torch

import t5edu.exercises as ex
from t5edu.exercises import REGISTRY


def _saved(probs_saved=1, lse=True):
    def fn(batch, heads, q_len, k_len, head_dim, backend):
        inputs = batch * heads * (q_len + 2 * k_len) * head_dim
        if backend == "naive":  # probs_saved=0: forgets P; 2: counts the scores as well
            return 4 * (inputs + probs_saved * batch * heads * q_len * k_len)
        return 4 * (inputs + batch * heads * q_len * (head_dim + (1 if lse else 0)))

    return fn


def _merge(rescale=True, inverted=False, absolute=False):
    def fn(m1, l1, o1, m2, l2, o2):
        m = torch.maximum(m1, m2)
        if absolute:  # exp(m) itself: overflows to inf at scores near 100, then inf / inf
            e1, e2 = torch.exp(m1), torch.exp(m2)
            return (
                m,
                (e1 * l1 + e2 * l2) / torch.exp(m),
                (e1[..., None] * o1 + e2[..., None] * o2) / torch.exp(m)[..., None],
            )
        if not rescale:
            return m, l1 + l2, o1 + o2
        a1, a2 = torch.exp(m1 - m), torch.exp(m2 - m)
        if inverted:
            a1, a2 = torch.exp(m - m1), torch.exp(m - m2)
        return m, a1 * l1 + a2 * l2, a1[..., None] * o1 + a2[..., None] * o2

    return fn


def _forward(top_left=False, rescale_output=True, lse_is_max=False, scale=True):
    def fn(q, k, v, causal, block_q, block_k):
        tq, tk = q.shape[2], k.shape[2]
        shift = 0 if top_left else tk - tq
        out, lse = torch.empty_like(q), torch.empty(q.shape[:-1])
        for i in range(0, tq, block_q):
            q_i = q[:, :, i : i + block_q]
            rows = torch.arange(i, i + q_i.shape[2])[:, None]
            m = torch.full(q_i.shape[:-1], -torch.inf)
            l, o = torch.zeros(q_i.shape[:-1]), torch.zeros_like(q_i)
            for j in range(0, tk, block_k):
                k_j, v_j = k[:, :, j : j + block_k], v[:, :, j : j + block_k]
                s = q_i @ k_j.mT * (q.shape[-1] ** -0.5 if scale else 1.0)
                if causal:
                    cols = torch.arange(j, j + k_j.shape[2])[None, :]
                    s = s.masked_fill(cols > rows + shift, float("-inf"))
                m_new = torch.maximum(m, s.amax(-1))
                p = torch.exp(s - m_new.nan_to_num(neginf=0.0)[..., None])
                alpha = torch.exp(m - m_new).nan_to_num(0.0)
                l = alpha * l + p.sum(-1)
                o = (alpha[..., None] * o if rescale_output else o) + p @ v_j
                m = m_new
            out[:, :, i : i + block_q] = o / l[..., None]
            lse[:, :, i : i + block_q] = m if lse_is_max else m + l.log()
        return out, lse

    return fn


def _table_grad_indexed_add_assign(ds, buckets, num_buckets):
    grad = torch.zeros(num_buckets, ds.shape[1])
    # Advanced-index `+=` reads, adds and writes back: of entries with the same bucket, the
    # last one written wins instead of all adding up.
    grad[buckets.flatten()] += ds.sum(0).flatten(1).t()
    return grad


def _table_grad_per_sequence(ds, buckets, num_buckets):
    grad = torch.zeros(ds.shape[0], ds.shape[1], num_buckets)
    grad.index_add_(2, buckets.flatten(), ds.flatten(2))
    return grad.transpose(1, 2)  # (B, NB, H): the batch not summed


WRONG = [
    ("ch09.saved_bytes", _saved(probs_saved=0), "expected 9961472, got 1572864"),
    ("ch09.saved_bytes", _saved(probs_saved=2), "expected 9961472, got 18350080"),
    ("ch09.saved_bytes", _saved(lse=False), "expected 2105344, got 2097152"),
    ("ch09.merge_partials", _merge(rescale=False), "wrong values"),
    ("ch09.merge_partials", _merge(inverted=True), "wrong values"),
    ("ch09.merge_partials", _merge(absolute=True), "holds NaN"),
    ("ch09.flash_forward", _forward(top_left=True), "output[0]: wrong values"),
    ("ch09.flash_forward", _forward(rescale_output=False), "output[0]: wrong values"),
    ("ch09.flash_forward", _forward(lse_is_max=True), "output[1]: wrong values"),
    ("ch09.flash_forward", _forward(scale=False), "output[0]: wrong values"),
    ("ch09.table_grad", _table_grad_indexed_add_assign, "wrong values"),
    ("ch09.table_grad", lambda **kw: ex.ch09._table_grad_solution(**kw).t(), "another order"),
    ("ch09.table_grad", _table_grad_per_sequence, "expected shape (32, 4), got (2, 32, 4)"),
]  # fmt: skip


def test_the_merge_cases_hold_rows_that_see_no_key_in_one_block():
    cases = REGISTRY["ch09.merge_partials"].cases()
    for case, block in [(cases[3], slice(None, 3)), (cases[4], slice(12, None))]:
        hidden = case["scores"][..., block].isinf().all(-1)  # (B, H, Tq)
        assert hidden.any() and not case["scores"].isinf().all(-1).any()


def test_the_saved_bytes_reference_counts_p_for_naive_only():
    # The (Tq, Tk) probabilities are what flash does not keep: the difference is exactly them
    # minus flash's output and log-sum-exp.
    naive, flash = (ex.ch09._saved_bytes(1, 2, 64, 64, 8, b) for b in ("naive", "flash"))
    assert naive - flash == 4 * (2 * 64 * 64 - 2 * 64 * 8 - 2 * 64)
