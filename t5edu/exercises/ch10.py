"""Exercises of chapter 10 (tokenizer and data). Expected outputs come from `t5edu.data`: the
span counts from the masks that `random_spans_noise_mask` draws (T5's counts, checked in
tests/test_span_corruption.py); the segmentation counts, boundary posteriors and encodings from
`t5edu.data.unigram`, which tests/test_unigram.py checks against enumerating every segmentation
and against sentencepiece.

T raw sequence length, n characters of a text; scores map a piece to its log-probability.
"""

from __future__ import annotations

import math
import unicodedata

import torch

from t5edu.data import random_spans_noise_mask, unigram
from t5edu.exercises._core import Exercise, register, seeded


class _Pieces(dict):
    """Scores whose repr in a verdict stays one short line (the reader receives a plain dict)."""

    def __repr__(self) -> str:
        return f"<{len(self)} scored pieces>"


class _Vocab(frozenset):
    def __repr__(self) -> str:
        shown = sorted(self, key=lambda p: (len(p), p))
        return "{" + ", ".join(map(repr, shown[:6])) + (", ...}" if len(self) > 6 else "}")


# --- ch10.noise_spans: how many noise tokens and spans for a length (exercise 2) --------------

_SPAN_SETTINGS = [
    (2, 0.15, 3.0),  # round(0.3) = 0: at least one noise token
    (3, 0.15, 3.0),
    (10, 0.15, 3.0),  # 1.5 rounds to 2
    (30, 0.15, 3.0),  # 4.5 rounds to 4: half to even
    (34, 0.15, 3.0),  # 5 noise tokens, 5 / 3 rounds up to 2 spans
    (100, 0.15, 3.0),
    (141, 0.15, 3.0),
    (568, 0.15, 3.0),
    (1137, 0.15, 3.0),
    (13, 0.5, 2.0),  # 6.5 rounds to 6
    (50, 0.3, 5.0),
]


def _noise_spans(length, noise_density, mean_noise_span_length):
    mask = random_spans_noise_mask(
        length, noise_density, mean_noise_span_length, generator=seeded(1000)
    )
    starts = mask & ~torch.cat([torch.zeros(1, dtype=torch.bool), mask[:-1]])  # (T,) span starts
    return int(mask.sum()), int(starts.sum())


def _noise_spans_solution(length, noise_density, mean_noise_span_length):
    noise = min(max(round(length * noise_density), 1), length - 1)
    return noise, max(round(noise / mean_noise_span_length), 1)


register(
    Exercise(
        id="ch10.noise_spans",
        task="noise_spans(length, noise_density, mean_noise_span_length) -> (num_noise_tokens, "
        "num_noise_spans), both ints, rounded half to even and clamped as T5 does",
        cases=lambda: [
            {"length": t, "noise_density": d, "mean_noise_span_length": m}
            for t, d, m in _SPAN_SETTINGS
        ],
        expected=lambda inputs: _noise_spans(**inputs),
        solution=lambda: _noise_spans_solution,
    )
)

# --- ch10.count_segmentations: the paths through a lattice (exercise 4) ------------------------


def _substrings(text: str, max_len: int) -> list[str]:
    subs = {
        text[s:e] for s in range(len(text)) for e in range(s + 1, min(len(text), s + max_len) + 1)
    }
    return sorted(subs)


def _random_vocab(text: str, gen: torch.Generator, keep: float = 0.5) -> set[str]:
    """Single characters of `text` and a random half of its longer substrings (up to 5)."""
    subs = _substrings(text, 5)
    draw = torch.rand(len(subs), generator=gen).tolist()
    return _Vocab(p for p, u in zip(subs, draw, strict=True) if len(p) == 1 or u < keep)


def _count_cases() -> list[dict]:
    gen = seeded(1010)
    full = _Vocab({"a", "b", "c", "ab", "bc", "abc"})
    return [
        {"text": "abc", "vocab": full},
        {"text": "tokenizer", "vocab": _random_vocab("tokenizer", gen)},
        {"text": "readlines", "vocab": _random_vocab("readlines", gen)},
        {"text": "abz", "vocab": _Vocab({"a", "b", "ab"})},  # 'z' is no piece: no segmentation
        {"text": "", "vocab": _Vocab({"a"})},  # one segmentation: no pieces at all
        {"text": "a" * 60, "vocab": _Vocab({"a", "aa", "aaa"})},  # 4.7e15: count, do not enumerate
    ]


def _count_solution(text, vocab):
    ways = [1] + [0] * len(text)  # ways[e]: segmentations of text[:e]
    for e in range(1, len(text) + 1):
        ways[e] = sum(ways[s] for s in range(e) if text[s:e] in vocab)
    return ways[-1]


register(
    Exercise(
        id="ch10.count_segmentations",
        task="count_segmentations(text, vocab) -> int, how many ways text splits into a sequence "
        "of pieces from the set vocab (1 for the empty text), without enumerating them",
        cases=_count_cases,
        expected=lambda inputs: unigram.count_segmentations(**inputs),
        solution=lambda: _count_solution,
    )
)

# --- ch10.boundary_posterior: where the pieces end, averaged over segmentations (exercise 5) ---


def _random_scores(text: str, gen: torch.Generator) -> dict[str, float]:
    """Log-probabilities in [-8, -0.5] for `_random_vocab(text)`; float32 values."""
    vocab = sorted(_random_vocab(text, gen, keep=0.6))
    draw = torch.rand(len(vocab), generator=gen).tolist()
    return _Pieces({p: -0.5 - 7.5 * u for p, u in zip(vocab, draw, strict=True)})


def _boundary_cases() -> list[dict]:
    gen = seeded(1020)
    texts = ["tokenizer", "readlines", "abcabc", "aaaaaa", "ab", "x"]
    return [{"text": t, "scores": _random_scores(t, gen)} for t in texts]


def _boundary_posterior(text, scores):
    alpha, beta = unigram.forward_backward(text, scores)
    z = alpha[-1]
    inner = [math.exp(alpha[i] + beta[i] - z) for i in range(1, len(text))]
    return torch.tensor(inner, dtype=torch.float64)  # (n - 1,)


def _boundary_solution(text, scores):
    n = len(text)
    fwd, bwd = [1.0] + [0.0] * n, [0.0] * n + [1.0]  # probabilities: the texts are short
    for e in range(1, n + 1):
        fwd[e] = sum(fwd[s] * math.exp(scores[text[s:e]]) for s in range(e) if text[s:e] in scores)
    for s in range(n - 1, -1, -1):
        bwd[s] = sum(
            math.exp(scores[text[s:e]]) * bwd[e] for e in range(s + 1, n + 1) if text[s:e] in scores
        )
    return torch.tensor([fwd[i] * bwd[i] / fwd[n] for i in range(1, n)], dtype=torch.float64)


register(
    Exercise(
        id="ch10.boundary_posterior",
        task="boundary_posterior(text, scores) -> (len(text) - 1,) float64 tensor: entry i - 1 "
        "is the probability that a piece ends after character i, P(segmentation | text) "
        "proportional to exp(sum of its scores)",
        cases=_boundary_cases,
        expected=lambda inputs: _boundary_posterior(**inputs),
        solution=lambda: _boundary_solution,
        atol=1e-6,
        why_tol="probabilities, to 1e-6: float32 sums of a few terms pass too",
    )
)

# --- ch10.sp_encode: SentencePiece's unigram encoding, unknown characters included (ex. 7) ------

_SP_PIECES = (
    [chr(c) for c in range(ord("a"), ord("z")) if chr(c) != "q"]  # no 'q', no 'z'
    + ["▁", "▁t", "▁the", "▁r", "▁re", "▁read", "ad", "er", "ers", "in", "ing", "▁f", "il"]
    + ["ile", "es", "▁a", "an", "nd", "▁l", "li", "ne", "▁ca", "fe", "▁n", "ai", ".", ","]
)
_SP_TEXTS = [
    "read the readers",
    "  reading   files\tand\nlines  ",  # whitespace: runs become one ▁, none at the ends
    "quiz buzz",  # 'q' and 'z' are unknown; 'zz' is one unknown piece
    "caf\u00e9 na\u00efve.",  # 'é' and 'ï' are unknown
    "\ufb01le, the end",  # NFKC turns the ligature 'ﬁ' into 'fi'
    "",
    "lines and readings",
]


def _sp_cases() -> list[dict]:
    draw = torch.rand(len(_SP_PIECES), generator=seeded(1030)).tolist()
    scores = _Pieces({p: -1.0 - 9.0 * u for p, u in zip(_SP_PIECES, draw, strict=True)})
    return [{"text": t, "scores": scores} for t in _SP_TEXTS]


def _sp_encode_solution(text, scores):
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    text = "▁" + text.replace(" ", "▁") if text else ""
    unk, n = min(scores.values()) - 10.0, len(text)
    best, back = [0.0] + [-math.inf] * n, [(0, False)] * (n + 1)  # (start, unknown)
    for s in range(n):
        ends = [e for e in range(s + 1, n + 1) if text[s:e] in scores]
        for e in ends:
            if best[s] + scores[text[s:e]] > best[e]:
                best[e], back[e] = best[s] + scores[text[s:e]], (s, False)
        if s + 1 not in ends and best[s] + unk > best[s + 1]:
            best[s + 1], back[s + 1] = best[s] + unk, (s, True)
    pieces, e = [], n
    while e > 0:
        s, is_unk = back[e]
        if is_unk and pieces and pieces[-1][1]:
            pieces[-1] = (text[s:e] + pieces[-1][0], True)  # join a run of unknowns
        else:
            pieces.append((text[s:e], is_unk))
        e = s
    return [p for p, _ in reversed(pieces)]


register(
    Exercise(
        id="ch10.sp_encode",
        task="sp_encode(text, scores) -> list of str, what sp.encode(text, out_type=str) gives: "
        "NFKC, whitespace runs to one '▁' plus one in front, the Viterbi path, a character with "
        "no one-character piece as an unknown piece scored min(scores) - 10, unknown runs joined",
        cases=_sp_cases,
        expected=lambda inputs: unigram.encode_as_pieces(**inputs),
        solution=lambda: _sp_encode_solution,
    )
)
