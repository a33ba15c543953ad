"""Chapter 4's exercises: typical wrong answers fail, with a verdict that names what is wrong.

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

import torch

import t5edu.exercises as ex
from t5edu.exercises import REGISTRY


def _cache_bytes(kv=2, itemsize=None, cross=True):
    def fn(num_layers, num_heads, d_kv, target_len, source_len, batch, dtype):
        size = dtype.itemsize if itemsize is None else itemsize
        positions = target_len + (source_len if cross else 0)
        return kv * num_layers * batch * num_heads * d_kv * positions * size

    return fn


def _penalty(every_token=False, divide_all=False, per_occurrence=False):
    def fn(input_ids, logits, penalty):
        if per_occurrence:  # penalty ** count: a token seen twice is penalised twice
            out = logits.clone()
            for row, ids in enumerate(input_ids.tolist()):
                for t in ids:
                    x = out[row, t]
                    out[row, t] = x * penalty if x < 0 else x / penalty
            return out
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, input_ids, True)
        if every_token:
            seen[:] = True
        penalised = (
            logits / penalty
            if divide_all
            else torch.where(logits < 0, logits * penalty, logits / penalty)
        )
        return torch.where(seen, penalised, logits)

    return fn


def _min_p(absolute=False, ignore_min_keep=False):
    def fn(logits, min_p, min_tokens_to_keep=1):
        probs = logits.softmax(-1)
        threshold = min_p if absolute else min_p * probs.amax(-1, keepdim=True)
        remove = probs < threshold
        if not ignore_min_keep:
            best = probs.topk(min_tokens_to_keep, dim=-1).indices
            remove = remove.scatter(-1, best, False)
        return logits.masked_fill(remove, float("-inf"))

    return fn


def _append(no_doubling=False, concatenate=False, no_copy=False):
    def fn(storage, length, new, max_length):
        if concatenate:  # appends after the whole storage, ignoring length
            out = new if storage is None else torch.cat([storage, new], dim=2)
            return out, out
        t = new.shape[2]
        capacity = 0 if storage is None else storage.shape[2]
        if length + t > capacity:
            grow = length + t if no_doubling else max(length + t, 2 * capacity, 16)
            grown = new.new_zeros(new.shape[0], new.shape[1], min(max_length, grow), new.shape[3])
            if length and not no_copy:
                grown[:, :, :length] = storage[:, :, :length]
            storage = grown
        storage[:, :, length : length + t] = new
        return storage, storage[:, :, : length + t]

    return fn


def _ngram(prefix_len_n=False, first_match_only=False):
    def fn(input_ids, logits, ngram_size):
        logits, n = logits.clone(), ngram_size
        for row, ids in enumerate(input_ids.tolist()):
            p = n if prefix_len_n else n - 1  # the last n tokens instead of n - 1
            prefix = ids[len(ids) - p :] if p else []
            for start in range(len(ids) - n + 1):
                if ids[start : start + p] == prefix and start + p < len(ids):
                    logits[row, ids[start + p]] = float("-inf")
                    if first_match_only:
                        break
        return logits

    return fn


WRONG = [
    ("ch04.kv_cache_bytes", _cache_bytes(kv=1), "expected 37748736, got 18874368"),
    ("ch04.kv_cache_bytes", _cache_bytes(itemsize=4), "expected 6733824, got 13467648"),
    ("ch04.kv_cache_bytes", _cache_bytes(cross=False), "expected 67584, got 36864"),
    ("ch04.repetition_penalty", _penalty(divide_all=True), "wrong values"),
    ("ch04.repetition_penalty", _penalty(per_occurrence=True), "wrong values"),
    ("ch04.repetition_penalty", _penalty(every_token=True), "wrong values"),
    ("ch04.min_p_filter", _min_p(absolute=True), "output[0]:"),
    ("ch04.min_p_filter", _min_p(ignore_min_keep=True), "output[0]:"),
    ("ch04.min_p_filter", lambda logits, min_p, min_tokens_to_keep: logits, "entries differ"),
    ("ch04.cache_append", _append(no_doubling=True), "output[0]: expected 16, got 5"),
    ("ch04.cache_append", _append(concatenate=True), "output[0]: expected 16, got 17"),
    ("ch04.cache_append", _append(no_copy=True), "output[1]: wrong values"),
    ("ch04.no_repeat_ngram", _ngram(prefix_len_n=True), "entries differ"),
    ("ch04.no_repeat_ngram", _ngram(first_match_only=True), "entries differ"),
    ("ch04.no_repeat_ngram", lambda input_ids, logits, ngram_size: logits, "entries differ"),
]  # fmt: skip


def test_the_no_repeat_cases_ban_what_the_comments_say():
    # The first case's row [5, 6, 7, 5, 6] with n = 3 bans exactly token 7.
    case = REGISTRY["ch04.no_repeat_ngram"].cases()[0]
    banned = ex.ch04._no_repeat(**case).isinf()[0]
    assert banned.nonzero().flatten().tolist() == [7]


def test_the_min_p_case_where_min_tokens_to_keep_decides():
    case = REGISTRY["ch04.min_p_filter"].cases()[2]
    kept = (~_min_p(ignore_min_keep=True)(**case).isinf()).sum(-1)
    assert (kept < case["min_tokens_to_keep"]).any()
