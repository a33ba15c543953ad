"""Exercises of chapter 2 (relative position bias). Expected outputs come from
`t5edu.relative_position`, which equals HF's `T5Attention` bit for bit.

H heads, Tq/Tk query/key length.
"""

from __future__ import annotations

import torch

from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.relative_position import RelativePositionBias, relative_position_bucket

# --- ch02.bucket_40: two buckets by hand (exercise 1) -----------------------------------------


def _bucket_40(inputs: dict) -> tuple[int, int]:
    encoder = relative_position_bucket(torch.tensor([40]))  # key 40 after the query
    decoder = relative_position_bucket(torch.tensor([-40]), bidirectional=False)
    return int(encoder.item()), int(decoder.item())


register(
    Exercise(
        id="ch02.bucket_40",
        task="(encoder bucket of a key 40 tokens after the query, decoder bucket of a key 40 "
        "tokens before it), default settings, as a tuple of two ints",
        cases=lambda: [{}],
        expected=_bucket_40,
        solution=lambda: (28, 23),
        run=lambda answer, inputs: answer,
        value=True,
    )
)

# --- ch02.bucket: the bucketing function (exercise 4) -----------------------------------------

_SETTINGS = [(True, 32, 128), (False, 32, 128), (True, 64, 256), (False, 8, 20), (True, 8, 20)]


def _bucket_cases() -> list[dict]:
    rel = torch.arange(-300, 301)  # every distance, both directions, past max_distance
    return [
        {"relative_position": rel, "bidirectional": b, "num_buckets": n, "max_distance": m}
        for b, n, m in _SETTINGS
    ]


register(
    Exercise(
        id="ch02.bucket",
        task="relative_position_bucket(relative_position, bidirectional, num_buckets, "
        "max_distance) -> int64 bucket ids of relative_position's shape (key - query; the log "
        "computed in float32, as HF)",
        cases=_bucket_cases,
        expected=lambda inputs: relative_position_bucket(**inputs),
        solution=lambda: relative_position_bucket,
    )
)

# --- ch02.position_bias: the bias matrix, with a cache offset (exercise 5) --------------------


def _bias_cases() -> list[dict]:
    gen = seeded(201)
    cases = []
    for q_len, k_len, offset, bidirectional, heads in [
        (5, 5, 0, True, 4),  # encoder, square
        (6, 6, 0, False, 2),  # decoder, square
        (1, 8, 7, False, 3),  # one new query after 7 cached keys
        (2, 7, 5, False, 4),  # two new queries after 5 cached keys
        (3, 300, 150, True, 2),  # distances past max_distance
    ]:
        weight = randn(gen, 32, heads)  # (num_buckets, H)
        cases.append(
            {"weight": weight, "q_len": q_len, "k_len": k_len, "offset": offset,
             "bidirectional": bidirectional}
        )  # fmt: skip
    return cases


def _position_bias(weight, q_len, k_len, offset, bidirectional):
    bias = RelativePositionBias(32, 128, weight.shape[1], bidirectional)
    with torch.no_grad():
        bias.weight.copy_(weight)
    return bias(q_len, k_len, offset).detach()  # (1, H, Tq, Tk)


def _position_bias_solution(weight, q_len, k_len, offset, bidirectional):
    query = torch.arange(offset, offset + q_len)[:, None]  # (Tq, 1) positions
    key = torch.arange(k_len)[None, :]  # (1, Tk)
    buckets = relative_position_bucket(key - query, bidirectional)  # (Tq, Tk)
    return weight[buckets].permute(2, 0, 1)[None]  # (1, H, Tq, Tk)


register(
    Exercise(
        id="ch02.position_bias",
        task="position_bias(weight, q_len, k_len, offset, bidirectional) -> (1, H, q_len, "
        "k_len): weight (32, H) per bucket, max_distance 128, query i at position offset + i, "
        "key j at position j",
        cases=_bias_cases,
        expected=lambda inputs: _position_bias(**inputs),
        solution=lambda: _position_bias_solution,
        atol=0.0,
        why_tol="a lookup: the values must be the table's, exactly",
    )
)

# --- ch02.bucket_starts: which distances share a bucket (exercise 6) --------------------------


def _starts_cases() -> list[dict]:
    # No bucket bound of these settings lies within 0.01 of an integer, where float rounding
    # (float32 in HF's formula) would decide between two answers that are both fair.
    settings = [(32, 128), (16, 64), (8, 20), (64, 1000)]
    return [{"num_buckets": n, "max_distance": m} for n, m in settings]


def _bucket_starts(num_buckets, max_distance):
    distance = torch.arange(0, 4 * max_distance)  # keys back, far past max_distance
    buckets = relative_position_bucket(-distance, False, num_buckets, max_distance)
    # Buckets grow with the distance, so the first distance of each is where it changes.
    starts = torch.full((num_buckets,), -1, dtype=torch.long)
    first = torch.ones_like(buckets, dtype=torch.bool)
    first[1:] = buckets[1:] != buckets[:-1]
    starts[buckets[first]] = distance[first]
    return starts


register(
    Exercise(
        id="ch02.bucket_starts",
        task="bucket_starts(num_buckets, max_distance) -> int64 (num_buckets,): for each "
        "decoder (causal) bucket, the smallest distance back that falls in it (-1 if none)",
        cases=_starts_cases,
        expected=lambda inputs: _bucket_starts(**inputs),
        solution=lambda: _bucket_starts,
    )
)
