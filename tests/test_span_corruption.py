"""Span corruption against T5's reference behaviour (t5/data/preprocessors.py)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from t5edu.data import (
    compute_input_and_target_lengths,
    noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel,
    random_spans_helper,
    random_spans_noise_mask,
    span_corruption,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def runs(mask):
    """(value, length) of each run of equal values: an independent span counter."""
    out = []
    for v in mask.tolist():
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def t5_counts(length, density, mean):
    """T5's token and span counts, computed here with NumPy float32 like its TF code."""
    length = max(length, 2)
    noise = int(np.round(np.float32(length) * np.float32(density)))
    noise = min(max(noise, 1), length - 1)
    spans = max(int(np.round(np.float32(noise) / np.float32(mean))), 1)
    return noise, spans


# -- lengths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs_length, want",
    [
        (512, (568, 114)),  # T5's own numbers
        # Hand-checked: 141 tokens -> 21 noise (round 21.15) in 7 spans, 120 kept: 120+7+1 = 128
        # inputs, 21+7+1 = 29 targets; 142 tokens would give 129 inputs.
        (128, (141, 29)),
        # 70 -> 10 noise (10.5 rounds to even), 3 spans: 60+3+1 = 64; 71 -> 11 noise, 4 spans: 65.
        (64, (70, 14)),
        # 284 -> 43 noise (42.6), 14 spans: 241+14+1 = 256, 43+14+1 = 58; 285 -> 257 inputs.
        (256, (284, 58)),
    ],
)
def test_compute_input_and_target_lengths(inputs_length, want):
    assert compute_input_and_target_lengths(inputs_length, 0.15, 3.0) == want


def test_random_spans_helper_density_half_hack():
    # Hand-checked: 11 tokens -> 6 noise (5.5 to even), 2 spans: inputs 5+2+1 = 8, targets
    # 6+2+1 = 9 > 8, so T5 drops one token: (10, 8).
    assert random_spans_helper(8, 0.5, 3.0, 1, 1) == (10, 8)
    # 14 tokens -> 7 noise, 2 spans: inputs 7+2+1 = 10, targets 10: no adjustment.
    assert random_spans_helper(10, 0.5, 3.0, 1, 1) == (14, 10)


def test_short_inputs_use_the_masks_counts():
    # T5's helper says 8 raw tokens for inputs_length=8 (1 noise token, round(1/3) = 0 spans),
    # but its mask always makes at least one span, giving 9 inputs. Ours: 7 tokens -> 1 noise
    # token in 1 span: 6 + 1 + 1 = 8 inputs, 1 + 1 + 1 = 3 targets.
    assert compute_input_and_target_lengths(8) == (7, 3)


def t5_helper_float64(inputs_length, density=0.15, mean=3.0):
    """T5's `random_spans_helper` as its Python computes it: float64, no clamps (eos included)."""

    def lengths(n):
        noise = int(round(n * density))
        spans = int(round(noise / mean))
        return n - noise + spans + 1, noise + spans + 1

    n = inputs_length - 1
    while lengths(n + 1)[0] <= inputs_length:
        n += 1
    return n, lengths(n)[1]


@pytest.mark.parametrize(
    "inputs_length, t5_helper, ours",
    [
        # 190 * 0.15 = 28.5: float64 rounds 28.499999999999996 down (28 noise, 9 spans, 38
        # targets); T5's float32 mask rounds 28.500000954 up (29 noise, 10 spans, 40 targets).
        (172, (190, 38), (190, 40)),
        (316, (350, 70), (350, 72)),  # 350 * 0.15 = 52.5, the same rounding split
        (8, (8, 2), (7, 3)),  # the clamps: T5's helper counts 0 spans, its mask makes 1
        (512, (568, 114), (568, 114)),  # agree
        (256, (284, 58), (284, 58)),  # agree
    ],
)
def test_helper_follows_t5s_float32_mask_not_its_float64_helper(inputs_length, t5_helper, ours):
    assert t5_helper_float64(inputs_length) == t5_helper
    assert compute_input_and_target_lengths(inputs_length) == ours
    # What T5's mask does at that raw length (float32 counts): the targets we promise.
    noise, spans = t5_counts(ours[0], 0.15, 3.0)
    assert (ours[0] - noise + spans + 1, noise + spans + 1) == (inputs_length, ours[1])
    out = span_corruption(torch.arange(3, 3 + ours[0]), 32100, generator=gen(0))
    assert (len(out.input_ids), len(out.labels)) == (inputs_length, ours[1])


@pytest.mark.parametrize("density, mean", [(0.15, 3.0), (0.3, 2.0), (0.15, 1.0), (0.5, 3.0)])
def test_corrupted_lengths_are_exact(density, mean):
    # The counts do not depend on the seed, so one seed per length checks the promise. At
    # density 0.5 T5 may drop one raw token so targets do not outgrow inputs: each length can
    # then be one short (padding), never long.
    for inputs_length in list(range(4, 200)) + [256, 511, 512, 1024]:
        tokens_length, targets_length = compute_input_and_target_lengths(
            inputs_length, density, mean
        )
        tokens = torch.arange(3, 3 + tokens_length)
        out = span_corruption(
            tokens,
            32100,
            noise_density=density,
            mean_noise_span_length=mean,
            num_sentinels=None,
            generator=gen(inputs_length),
        )
        if density == 0.5:  # T5's adjustment: both lengths are bounds, at most one over
            assert inputs_length - 1 <= len(out.input_ids) <= inputs_length
            assert targets_length - 1 <= len(out.labels) <= targets_length
        else:
            assert len(out.input_ids) == inputs_length, (inputs_length, tokens_length)
            assert len(out.labels) == targets_length


# -- the noise mask ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2, 3, 10, 31, 100, 568])
@pytest.mark.parametrize("density, mean", [(0.15, 3.0), (0.3, 2.0), (0.5, 3.0), (0.15, 1.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_mask_counts_and_layout(length, density, mean, seed):
    mask = random_spans_noise_mask(length, density, mean, generator=gen(seed))
    assert mask.dtype == torch.bool and mask.shape == (length,)
    noise, spans = t5_counts(length, density, mean)
    assert int(mask.sum()) == noise
    r = runs(mask)
    assert [v for v, _ in r] == [False, True] * spans  # alternate, start non-noise, end noise
    assert all(n >= 1 for _, n in r)


def test_noise_mask_matches_t5_outputs():
    # T5's TF function, run for length 30 (Birch-san/rand-play README, from
    # t5/data/preprocessors.py at 84f8bcc): 4 noise tokens in one span, always at the end.
    for seed in range(5):
        mask = random_spans_noise_mask(30, 0.15, 3.0, generator=gen(seed))
        assert "".join(str(int(x)) for x in mask) == "0" * 26 + "1111"
    # Hand-checked short cases: 10 -> 2 noise (1.5 to even) in 1 span; 1 -> computed at 2, cut.
    assert random_spans_noise_mask(10, 0.15, 3.0, gen(0)).tolist() == [False] * 8 + [True] * 2
    assert random_spans_noise_mask(1, 0.15, 3.0, gen(0)).tolist() == [False]


def test_noise_mask_is_deterministic_under_seed():
    a = random_spans_noise_mask(200, 0.15, 3.0, generator=gen(7))
    b = random_spans_noise_mask(200, 0.15, 3.0, generator=gen(7))
    c = random_spans_noise_mask(200, 0.15, 3.0, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_masks_are_uniform():
    # length 12, density 0.5, mean 2: 6 noise and 6 kept tokens, each in 3 non-empty runs:
    # C(5,2) * C(5,2) = 100 masks, all equally likely in T5. A chi-square over 3000 fixed
    # seeds (deterministic, so it cannot flake) must be far from the ~1e-6 tail (99 dof).
    counts = {}
    for s in range(3000):
        key = tuple(random_spans_noise_mask(12, 0.5, 2.0, generator=gen(s)).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 100
    expected = 30.0
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 190, chi2


def test_span_lengths_average_to_mean():
    lengths = []
    for s in range(200):
        mask = random_spans_noise_mask(568, 0.15, 3.0, generator=gen(s))
        lengths += [n for v, n in runs(mask) if v]
    assert len(lengths) == 200 * 28  # 85 noise tokens / 3 = 28 spans each
    assert sum(lengths) / len(lengths) == pytest.approx(85 / 28)


# -- sentinels -------------------------------------------------------------------------------


def reference_sentinels(tokens, mask, vocab_size):
    """A loop version of T5's noise_span_to_unique_sentinel, for comparison."""
    out, sentinel, prev = [], vocab_size - 1, False
    for t, m in zip(tokens, mask, strict=True):
        if m and not prev:
            out.append(sentinel)
            sentinel -= 1
        elif not m:
            out.append(t)
        prev = m
    return out


def test_sentinel_layout_hand_example():
    tokens = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17])
    mask = torch.tensor([0, 0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    assert noise_span_to_unique_sentinel(tokens, mask, 100).tolist() == [10, 11, 99, 14, 98, 16, 17]
    assert nonnoise_span_to_unique_sentinel(tokens, mask, 100).tolist() == [99, 12, 13, 98, 15, 97]


def test_token_zero_is_data():
    tokens = torch.tensor([0, 0, 5, 0, 0, 0, 7, 0])
    mask = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1], dtype=torch.bool)
    assert noise_span_to_unique_sentinel(tokens, mask, 50).tolist() == [0, 49, 0, 0, 48, 7, 47]
    assert nonnoise_span_to_unique_sentinel(tokens, mask, 50).tolist() == [49, 0, 5, 48, 0, 47, 0]
    out = span_corruption(
        torch.zeros(100, dtype=torch.long), 50, num_sentinels=10, generator=gen(0)
    )
    assert (out.input_ids[:-1] == 0).sum() == 100 - int(out.noise_mask.sum())


def reconstruct(inputs, targets, vocab_size, num_sentinels):
    """Put each target span back in place of its sentinel (both without eos)."""
    spans, current = {}, None
    for t in targets:
        if t >= vocab_size - num_sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += spans[t] if t >= vocab_size - num_sentinels else [t]
    return out


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 39), min_size=1, max_size=40),
    bits=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_sentinels_match_reference_and_reconstruct(tokens, bits):
    t = torch.tensor(tokens)
    mask = torch.tensor(bits[: len(tokens)])
    got = noise_span_to_unique_sentinel(t, mask, 64, num_sentinels=24)
    assert got.tolist() == reference_sentinels(tokens, mask.tolist(), 64)
    target = nonnoise_span_to_unique_sentinel(t, mask, 64, num_sentinels=24)
    assert target.tolist() == reference_sentinels(tokens, (~mask).tolist(), 64)
    if not mask[0]:  # T5's layout: inputs' sentinels are the targets' in order
        assert reconstruct(got.tolist(), target.tolist(), 64, 24) == tokens


@pytest.mark.parametrize("seed", range(5))
def test_span_corruption_layout_and_eos(seed):
    tokens = torch.randint(3, 900, (141,), generator=gen(100 + seed))
    out = span_corruption(tokens, 1000, eos_token_id=1, generator=gen(seed))
    spans = t5_counts(141, 0.15, 3.0)[1]
    assert out.input_ids[-1] == 1 and out.labels[-1] == 1
    assert out.labels[0] == 999  # the target starts with <extra_id_0>
    sentinels_in = [int(x) for x in out.input_ids if x >= 900]
    sentinels_out = [int(x) for x in out.labels if x >= 900]
    assert sentinels_in == list(range(999, 999 - spans, -1)) == sentinels_out
    rebuilt = reconstruct(out.input_ids[:-1].tolist(), out.labels[:-1].tolist(), 1000, 100)
    assert rebuilt == tokens.tolist()


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.0, 1.0, -0.1, 1.5])
def test_bad_noise_density(density):
    with pytest.raises(ValueError, match="noise_density"):
        random_spans_noise_mask(100, density, 3.0)
    with pytest.raises(ValueError, match="noise_density"):
        compute_input_and_target_lengths(128, density, 3.0)


def test_bad_mean_span_length_and_length():
    with pytest.raises(ValueError, match="mean_noise_span_length"):
        random_spans_noise_mask(100, 0.15, 0.5)
    for length in [0, -3, 2.5, True]:
        with pytest.raises(ValueError, match="length"):
            random_spans_noise_mask(length, 0.15, 3.0)
    with pytest.raises(ValueError, match="inputs_length"):
        compute_input_and_target_lengths(1)


def test_infeasible_span_count():
    # 10 tokens at density 0.9, mean 1: 9 noise spans, 1 kept token cannot separate them.
    with pytest.raises(ValueError, match="noise spans"):
        random_spans_noise_mask(10, 0.9, 1.0)


def test_bad_tokens_and_masks():
    tokens = torch.arange(5)
    mask = torch.tensor([0, 1, 0, 1, 1], dtype=torch.bool)
    with pytest.raises(ValueError, match="noise_mask"):
        noise_span_to_unique_sentinel(tokens, mask[:4], 100)
    with pytest.raises(ValueError, match="noise_mask"):
        noise_span_to_unique_sentinel(tokens, mask.long(), 100)
    with pytest.raises(ValueError, match="tokens"):
        noise_span_to_unique_sentinel(tokens.float(), mask, 100)
    with pytest.raises(ValueError, match="tokens"):
        noise_span_to_unique_sentinel(tokens[None], mask[None], 100)
    with pytest.raises(ValueError, match="vocab_size"):
        noise_span_to_unique_sentinel(tokens + 98, mask, 100)
    with pytest.raises(ValueError, match="sentinel ids"):
        noise_span_to_unique_sentinel(tokens + 90, mask, 100, num_sentinels=10)
    with pytest.raises(ValueError, match="num_sentinels=1"):
        noise_span_to_unique_sentinel(tokens, mask, 100, num_sentinels=1)
    with pytest.raises(ValueError, match="tokens"):
        span_corruption([1, 2, 3], 100)


@pytest.mark.parametrize(
    "call, match",
    [
        # float ids: the message names the dtype, not only the (valid) 1-D shape
        (
            lambda: span_corruption(torch.arange(20.0), 32100),
            r"tokens must be a 1-D integer tensor of ids; got a float32 tensor of shape \(20,\)",
        ),
        (
            lambda: span_corruption(torch.ones(5, dtype=torch.bool), 32100),
            r"tokens must be .*; got a bool tensor",
        ),
        # a vocabulary with no room for the 100 sentinels: the message names vocab_size
        (
            lambda: span_corruption(torch.arange(3, 40), 100),
            r"vocab_size must exceed num_sentinels=100 .*got vocab_size=100",
        ),
        (
            lambda: span_corruption(torch.arange(3, 40), 50),
            r"vocab_size must exceed num_sentinels=100 .*got vocab_size=50",
        ),
        # room for the sentinels but not for these ids: both readings are named
        (
            lambda: span_corruption(torch.arange(3, 40), 120),
            r"tokens must not contain sentinel ids: ids below vocab_size - num_sentinels = 20 "
            r".*got max 39.*"
            r"vocab_size=120",
        ),
        (
            lambda: span_corruption(torch.arange(3, 40), 32100.0),
            r"vocab_size must be an int >= 1; got float 32100.0",
        ),
        (
            lambda: span_corruption(torch.arange(3, 40), 32100, eos_token_id=40000),
            r"eos_token_id must be in \[0, vocab_size=32100\); got 40000",
        ),
        (
            lambda: noise_span_to_unique_sentinel(torch.arange(5), torch.ones(5), 100),
            r"noise_mask must be a bool tensor .*got a float32 tensor of shape \(5,\)",
        ),
        (  # no num_sentinels check asked for, but the sentinel ids would go negative
            lambda: noise_span_to_unique_sentinel(
                torch.zeros(6, dtype=torch.long), torch.tensor([0, 1, 0, 1, 0, 1]).bool(), 2
            ),
            r"vocab_size must be >= the number of noise spans \(3\)",
        ),
    ],
)
def test_bad_arguments_name_their_cause(call, match):
    with pytest.raises(ValueError, match=match):
        call()
