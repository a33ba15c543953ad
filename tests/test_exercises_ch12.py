"""Chapter 12's exercises: typical wrong answers are caught and named; the expected gradient
bytes, measured from autograd, equal the memory benchmark's analytic bound.

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

from __future__ import annotations

import statistics

import pytest

from t5edu.bench.attention import gradient_bytes
from t5edu.exercises import REGISTRY


def _ratio_of_medians(base_times, other_times):
    rs = [b / o for b, o in zip(base_times, other_times, strict=True)]
    return statistics.median(base_times) / statistics.median(other_times), min(rs), max(rs)


def _inverted(base_times, other_times):
    rs = [o / b for b, o in zip(base_times, other_times, strict=True)]
    return statistics.median(rs), min(rs), max(rs)


def _upper_median(base_times, other_times):
    rs = sorted(b / o for b, o in zip(base_times, other_times, strict=True))
    return rs[len(rs) // 2], rs[0], rs[-1]


def _grad_bytes(bias_per_row=False, float32_always=False, no_bias=False):
    def fn(batch, heads, seq_len, head_dim, dtype, bias_learned):
        bias = heads * seq_len**2 * (batch if bias_per_row else 1)
        n = 3 * batch * heads * seq_len * head_dim + (bias if bias_learned and not no_bias else 0)
        return n * (4 if float32_always else dtype.itemsize)

    return fn


def _decode_wrong(keys_off_by_one=False, no_head=False, no_first_step_kv=False, uncached=False):
    def fn(config, batch, src_len, past_len):
        c = config
        d, inner, f, v = c.d_model, c.num_heads * c.d_kv, c.d_ff, c.vocab_size
        ffn = (3 if c.is_gated_act else 2) * 2 * d * f
        keys = past_len if keys_off_by_one else past_len + 1
        t = past_len + 1 if uncached else 1  # rows run through the decoder this step
        self_attn = t * (4 * 2 * d * inner + 2 * 2 * keys * inner)
        cross = t * (2 * 2 * d * inner + 2 * 2 * src_len * inner)
        first = past_len == 0 or uncached
        cross_kv = 2 * 2 * d * inner * src_len if first and not no_first_step_kv else 0
        per_layer = self_attn + cross + t * ffn + cross_kv
        return batch * (c.num_decoder_layers * per_layer + (0 if no_head else t * 2 * d * v))

    return fn


WRONG = [
    ("ch12.score_outgrows_weights", 2750, "expected 2751, got 2750"),
    ("ch12.score_outgrows_weights", 7779, "expected 2751, got 7779"),
    ("ch12.score_outgrows_weights", 2048, "expected 2751, got 2048"),
    ("ch12.paired_ratio", _ratio_of_medians, "output[0]: expected"),
    ("ch12.paired_ratio", _inverted, "output[0]: expected"),
    ("ch12.paired_ratio", _upper_median, "output[0]: expected"),
    ("ch12.crossover_length", 512, "expected 2048, got 512"),
    ("ch12.crossover_length", 4096, "expected 2048, got 4096"),
    ("ch12.gradient_bytes", _grad_bytes(bias_per_row=True), "expected 40960, got 57344"),
    ("ch12.gradient_bytes", _grad_bytes(float32_always=True), "expected 27648, got 55296"),
    ("ch12.gradient_bytes", _grad_bytes(no_bias=True), "expected 229376, got 98304"),
    ("ch12.decode_step_flops", _decode_wrong(keys_off_by_one=True), "expected 120832, got 120320"),
    ("ch12.decode_step_flops", _decode_wrong(no_head=True), "expected 120832, got 105472"),
    ("ch12.decode_step_flops", _decode_wrong(no_first_step_kv=True), "case 2/4 (config=namespace("),
    ("ch12.decode_step_flops", _decode_wrong(uncached=True), "expected 120832, got 751616"),
]  # fmt: skip


@pytest.mark.parametrize("case", REGISTRY["ch12.gradient_bytes"].cases())
def test_measured_gradient_bytes_equal_the_benchmarks_bound(case):
    want = REGISTRY["ch12.gradient_bytes"].expected(case)
    args = [case[k] for k in ("batch", "heads", "seq_len", "head_dim")]
    assert want == gradient_bytes(*args, case["dtype"].itemsize, case["bias_learned"])
