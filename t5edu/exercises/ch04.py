"""Exercises of chapter 4 (generation). Expected outputs come from Hugging Face Transformers'
logits processors (`RepetitionPenaltyLogitsProcessor`, `MinPLogitsWarper`,
`NoRepeatNGramLogitsProcessor`, imported when a check runs) and from `t5edu.kv_cache.T5Cache`,
filled at check time (on the meta device where only sizes matter).

N rows (batch or batch * beams), T tokens so far, V vocab_size; B batch, H heads,
Dh head dim (d_kv), L decoder layers.
"""

from __future__ import annotations

import torch

from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.kv_cache import MIN_CAPACITY, T5Cache


def _kept_and_probs(logits):
    """A filtered `(N, V)` row as (kept: bool, softmax): -inf - -inf is NaN, so the filter's
    -inf entries are compared as a mask (exactly) and the rest through the probabilities."""
    return ~logits.isinf(), logits.softmax(-1)


# --- ch04.kv_cache_bytes: the memory a KV cache holds (exercise 2) -----------------------------

_CACHE_ARGS = ["num_layers", "num_heads", "d_kv", "target_len", "source_len", "batch", "dtype"]
_CACHE_SIZES = [  # num_layers, num_heads, d_kv, target_len, source_len, batch, dtype
    (12, 12, 64, 512, 0, 1, torch.float32),  # t5-base's decoder, self-attention only
    (2, 4, 16, 12, 10, 3, torch.float32),  # the chapter's model after 12 steps
    (6, 8, 64, 100, 37, 4, torch.bfloat16),
    (24, 16, 64, 2048, 512, 8, torch.float16),
]


def _cache_bytes(num_layers, num_heads, d_kv, target_len, source_len, batch, dtype):
    """Fill a T5Cache with meta tensors (sizes, no memory) as decoding would, then count."""
    cache = T5Cache(num_layers)

    def empty(length):
        return torch.empty(batch, num_heads, length, d_kv, dtype=dtype, device="meta")

    for i in range(num_layers):
        cache.update(i, empty(1), empty(1))  # the first step, then the rest appended
        cache.update(i, empty(target_len - 1), empty(target_len - 1))
        cache.set_cross(i, empty(source_len), empty(source_len))
    stores = cache.self_k + cache.self_v + cache.cross_k + cache.cross_v
    return sum(t.numel() * t.element_size() for t in stores)


def _cache_bytes_solution(num_layers, num_heads, d_kv, target_len, source_len, batch, dtype):
    per_position = 2 * num_layers * batch * num_heads * d_kv  # k and v, every layer
    return per_position * (target_len + source_len) * dtype.itemsize


register(
    Exercise(
        id="ch04.kv_cache_bytes",
        task="kv_cache_bytes(num_layers, num_heads, d_kv, target_len, source_len, batch, dtype) "
        "-> int: bytes of the self-attention (target_len positions) and cross-attention "
        "(source_len positions) keys and values of every decoder layer",
        cases=lambda: [dict(zip(_CACHE_ARGS, c, strict=True)) for c in _CACHE_SIZES],
        expected=lambda inputs: _cache_bytes(**inputs),
        solution=lambda: _cache_bytes_solution,
    )
)

# --- ch04.repetition_penalty: CTRL's penalty, as HF applies it (exercise 4) --------------------


def _penalty_cases() -> list[dict]:
    gen = seeded(401)
    cases = []
    for n, t, v, penalty in [(2, 6, 12, 1.2), (3, 10, 20, 2.0), (1, 1, 8, 1.5), (2, 8, 10, 0.7)]:
        ids = torch.randint(0, v, (n, t), generator=gen)
        ids[0, -1] = ids[0, 0]  # a token seen twice is penalised once, not twice
        cases.append({"input_ids": ids, "logits": 3 * randn(gen, n, v), "penalty": penalty})
    return cases


def _repetition_penalty(input_ids, logits, penalty):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    return RepetitionPenaltyLogitsProcessor(penalty)(input_ids, logits)


def _repetition_penalty_solution(input_ids, logits, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, input_ids, True)  # (N, V)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


register(
    Exercise(
        id="ch04.repetition_penalty",
        task="repetition_penalty(input_ids (N, T), logits (N, V), penalty) -> (N, V): every "
        "token id that occurs in its row of input_ids, once however often it occurs, gets "
        "logit * penalty if the logit is negative, logit / penalty otherwise",
        cases=_penalty_cases,
        expected=lambda inputs: _repetition_penalty(**inputs),
        solution=lambda: _repetition_penalty_solution,
        atol=1e-6,
    )
)

# --- ch04.min_p_filter: keep tokens at least min_p times as likely as the best (exercise 5) ----


def _min_p_cases() -> list[dict]:
    gen = seeded(402)
    cases = []
    for n, v, scale, min_p, keep in [
        (4, 20, 2.0, 0.1, 1),
        (3, 50, 4.0, 0.05, 1),
        (2, 12, 0.5, 0.9, 3),  # flat rows: few tokens pass, min_tokens_to_keep decides
        (2, 16, 3.0, 1.0, 1),  # only the most likely token (and exact ties with it)
        (2, 10, 1.0, 0.0, 1),  # nothing removed
    ]:
        logits = scale * randn(gen, n, v)
        logits[0, 1::3] = float("-inf")  # some tokens removed already (as after top-k)
        cases.append({"logits": logits, "min_p": min_p, "min_tokens_to_keep": keep})
    return cases


def _min_p(logits, min_p, min_tokens_to_keep):
    from transformers.generation.logits_process import MinPLogitsWarper

    return MinPLogitsWarper(min_p, min_tokens_to_keep=min_tokens_to_keep)(None, logits)


def _min_p_solution(logits, min_p, min_tokens_to_keep=1):
    probs = logits.softmax(-1)  # (N, V)
    remove = probs < min_p * probs.amax(-1, keepdim=True)
    best = probs.topk(min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    return logits.masked_fill(remove.scatter(-1, best, False), float("-inf"))


register(
    Exercise(
        id="ch04.min_p_filter",
        task="min_p_filter(logits (N, V), min_p, min_tokens_to_keep) -> (N, V): -inf where a "
        "token's probability is below min_p times its row's largest, keeping the "
        "min_tokens_to_keep most likely; checked as (kept mask, softmax)",
        cases=_min_p_cases,
        expected=lambda inputs: _kept_and_probs(_min_p(**inputs)),
        run=lambda answer, inputs: _kept_and_probs(answer(**inputs)),
        solution=lambda: _min_p_solution,
        atol=1e-6,
    )
)

# --- ch04.cache_append: write new keys at the cached length, doubling when full (exercise 6) ---

_APPEND_SETTINGS = [  # capacity of the storage (None: none yet), length, new positions, max_length
    (None, 0, 5, 100),  # the first step: storage of MIN_CAPACITY positions
    (16, 5, 1, 100),  # room left: written in place
    (16, 16, 1, 100),  # full: doubled to 32
    (16, 15, 3, 100),
    (32, 30, 40, 200),  # more new positions than doubling makes room for: exactly enough
    (64, 60, 8, 100),  # doubling would pass max_length: capped there
    (None, 0, 20, 40),  # a 20-token prefix at the first step
    (None, 0, 3, 8),  # max_length below MIN_CAPACITY
]


def _append_cases() -> list[dict]:
    gen = seeded(403)
    cases = []
    for capacity, length, t, max_length in _APPEND_SETTINGS:
        storage = None if capacity is None else randn(gen, 2, 3, capacity, 4)  # (B, H, cap, Dh)
        cases.append(
            {"storage": storage, "length": length, "new": randn(gen, 2, 3, t, 4),
             "max_length": max_length}
        )  # fmt: skip
    return cases


def _append(storage, length, new, max_length):
    """(capacity, visible keys) after the package's cache adds `new` at `length`."""
    cache = T5Cache(1, max_length=max_length)
    if storage is not None:
        cache.self_k[0], cache.self_v[0] = storage, storage.clone()
    cache.length = length
    k, _ = cache.update(0, new, new.clone())
    return cache.self_k[0].shape[2], k


def _capacity_and_visible(storage, visible):
    return storage.shape[2], visible


def _append_solution(storage, length, new, max_length):
    t = new.shape[2]
    capacity = 0 if storage is None else storage.shape[2]
    if length + t > capacity:
        capacity = min(max_length, max(length + t, 2 * capacity, MIN_CAPACITY))
        grown = new.new_empty(new.shape[0], new.shape[1], capacity, new.shape[3])
        if length:
            grown[:, :, :length] = storage[:, :, :length]  # the cached positions move over
        storage = grown
    storage[:, :, length : length + t] = new
    return storage, storage[:, :, : length + t]  # (B, H, length + t, Dh)


register(
    Exercise(
        id="ch04.cache_append",
        task="cache_append(storage (B, H, capacity, Dh) or None, length, new (B, H, t, Dh), "
        "max_length) -> (storage, storage[:, :, :length + t]) with new written at length; "
        "when length + t > capacity, a new storage of min(max_length, max(length + t, "
        f"2 * capacity, {MIN_CAPACITY})) positions holding the cached ones; checked as "
        "(capacity, visible)",
        cases=_append_cases,
        expected=lambda inputs: _append(**inputs),
        run=lambda answer, inputs: _capacity_and_visible(*answer(**inputs)),
        solution=lambda: _append_solution,
        atol=0.0,
        why_tol="copies only: bit-identical",
    )
)

# --- ch04.no_repeat_ngram: ban the tokens that would repeat an n-gram (exercise 7) -------------


def _ngram_cases() -> list[dict]:
    gen = seeded(404)
    cases = []
    for rows, n in [
        ([[5, 6, 7, 5, 6]], 3),  # (5, 6) came before, followed by 7: ban 7
        ([[5, 6, 7, 5, 6], [1, 1, 1, 1, 1]], 2),  # row 2: (1, 1) seen, ban 1
        ([[2, 3, 2, 4, 2]], 2),  # the prefix (2,) occurred 3 times: ban 3 and 4
        ([[4, 0, 4]], 1),  # n = 1: ban every token seen
        ([[3, 5]], 3),  # shorter than n: nothing to ban
        ([[1, 2, 1, 2, 1, 2]], 4),  # (2, 1, 2) seen once, followed by 1
    ]:
        ids = torch.tensor(rows)
        cases.append({"input_ids": ids, "logits": randn(gen, ids.shape[0], 8), "ngram_size": n})
    ids = torch.randint(0, 4, (3, 12), generator=gen)  # a small vocabulary: many repeats
    cases.append({"input_ids": ids, "logits": randn(gen, 3, 6), "ngram_size": 3})
    return cases


def _no_repeat(input_ids, logits, ngram_size):
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    return NoRepeatNGramLogitsProcessor(ngram_size)(input_ids, logits)


def _no_repeat_solution(input_ids, logits, ngram_size):
    logits, n = logits.clone(), ngram_size
    for row, ids in enumerate(input_ids.tolist()):
        prefix = ids[len(ids) - n + 1 :] if n > 1 else []  # the last n - 1 tokens
        for start in range(len(ids) - n + 1):  # every complete n-gram so far
            if ids[start : start + n - 1] == prefix:
                logits[row, ids[start + n - 1]] = float("-inf")
    return logits


register(
    Exercise(
        id="ch04.no_repeat_ngram",
        task="ban_repeated_ngrams(input_ids (N, T), logits (N, V), ngram_size) -> (N, V): -inf "
        "at every token that would complete an n-gram already in its row (the last n - 1 "
        "tokens followed by it); checked as (kept mask, softmax)",
        cases=_ngram_cases,
        expected=lambda inputs: _kept_and_probs(_no_repeat(**inputs)),
        run=lambda answer, inputs: _kept_and_probs(answer(**inputs)),
        solution=lambda: _no_repeat_solution,
        atol=1e-6,
    )
)
