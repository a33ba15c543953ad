"""A unigram language-model tokenizer in pure Python: Viterbi, forward-backward, EM (chapter 10).

n characters of a text; position i (0..n) is the gap before character i, and a piece text[s:e]
is an edge s -> e of the text's lattice.

Kudo (2018), "Subword regularization", section 3: a vocabulary gives each piece x a
log-probability log p(x), the `scores`; a segmentation of a text scores the sum over its pieces.
`viterbi` finds the best segmentation (the max-sum path through the lattice), `forward_backward`
sums over all of them, `expected_counts` turns those sums into the E-step's expected piece counts
and `em_step` re-estimates the probabilities from them (plain maximum likelihood: the counts,
normalised; SentencePiece's trainer instead drops pieces expected fewer than 0.5 times and uses a
digamma "Bayesian" update, and interleaves EM with pruning, which is not reproduced here).

`encode_as_pieces` reproduces `SentencePieceProcessor.encode(text, out_type=str)` of a unigram
model piece for piece, given `sentencepiece_scores(sp)` (tests/test_unigram.py checks it on
every line of a corpus): the same lattice (every vocabulary piece that matches, and an unknown
piece of one character wherever no piece of one character starts, scored
`min(scores) - UNK_PENALTY`), the same float32 sums and tie-breaking as sentencepiece's
`unigram::Model::EncodeOptimized`, and runs of unknown characters merged into one piece as its
`PopulateSentencePieceText` does. Not covered: byte fallback (`<0xNN>` pieces), user-defined
symbols, and the parts of sentencepiece's `nmt_nfkc` normaliser beyond NFKC and whitespace (it
also drops control characters and turns a few invisible ones, such as U+200B, into spaces).
"""

from __future__ import annotations

import math
import struct
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

UNK_PENALTY = 10.0  # sentencepiece's kUnkPenalty: an unknown character scores min(scores) - 10
SPACE = "\u2581"  # "▁", SentencePiece's visible space


@dataclass
class Segmentation:
    """A segmentation of a text: `pieces` (joined, they give the text back), `score` (the sum of
    their scores, each unknown character counting `unk_score`) and `unknown` (per piece, True for
    a character outside the vocabulary)."""

    pieces: list[str]
    score: float
    unknown: list[bool]


def _f32(x: float) -> float:
    """`x` rounded to float32. A sum of two float32 numbers computed in float64 and then rounded
    is exactly their float32 sum (53 >= 2 * 24 + 2 bits), so this reproduces float32 addition."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _check_scores(scores: Mapping[str, float]) -> None:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty dict mapping pieces to log-probabilities")
    for piece, score in scores.items():
        if not isinstance(piece, str) or not piece:
            raise ValueError(f"scores: every piece must be a non-empty str; got {piece!r}")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"scores[{piece!r}] must be a number; got {score!r}")
        if not math.isfinite(score):  # NaN is never chosen and +inf wins every path: refuse
            raise ValueError(f"scores[{piece!r}] must be finite; got {score!r}")


def _check(text, scores: Mapping[str, float]) -> None:
    # O(1): each piece is checked by `max_piece_length`, which a caller segmenting many texts
    # runs once (passing max_length), instead of once per text
    if not isinstance(text, str):
        raise ValueError(f"text must be a str; got {type(text).__name__}")
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty dict mapping pieces to log-probabilities")


def max_piece_length(scores: Mapping[str, float]) -> int:
    """The longest piece, in characters: no lattice edge is longer.

    Raises:
        ValueError: for empty `scores`, a piece that is not a non-empty str, or a score that is
            not a finite number.
    """
    _check_scores(scores)
    return max(len(p) for p in scores)


def viterbi(
    text: str,
    scores: Mapping[str, float],
    *,
    unk_score: float | None = None,
    float32: bool = False,
    max_length: int | None = None,
) -> Segmentation:
    """The highest-scoring segmentation of `text` into pieces of `scores`.

    best[e], the best score of text[:e], is the max over pieces text[s:e] of best[s] + score:
    starts are visited left to right and a later start replaces an earlier one only with a
    strictly higher score, so ties keep the earliest start, as sentencepiece does.

    Args:
        scores: piece -> log-probability (any real score works).
        unk_score: None: only vocabulary pieces. A number: wherever no piece of one character
            starts, a one-character unknown piece with this score (sentencepiece's rule).
        float32: add the scores in float32, as sentencepiece does. Exact ties between paths
            with the same pieces in another order ("00" + "0000" against "0000" + "00") are then
            broken by float32 rounding exactly as sentencepiece breaks them.
        max_length: the longest piece (default `max_piece_length(scores)`; pass it when
            segmenting many texts with one vocabulary).

    Raises:
        ValueError: if `text` is not a str, `scores` is empty, or (with `unk_score=None`) no
            segmentation of `text` exists, naming the first character that cannot be reached.
    """
    _check(text, scores)
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise ValueError(f"max_length must be None or an int >= 1; got {max_length!r}")
    n, length = len(text), max_length or max_piece_length(scores)
    add = (lambda a, b: _f32(a + b)) if float32 else (lambda a, b: a + b)
    best: list[float | None] = [0.0] + [None] * n  # best score of text[:i], None: unreachable
    back = [(0, False)] * (n + 1)  # (start of the last piece, whether it is unknown)
    for s in range(n):
        if best[s] is None:
            continue
        single = False
        for e in range(s + 1, min(n, s + length) + 1):
            score = scores.get(text[s:e])
            if score is None:
                continue
            single |= e == s + 1
            cand = add(best[s], score)
            if best[e] is None or cand > best[e]:
                best[e], back[e] = cand, (s, False)
        if not single and unk_score is not None:
            cand = add(best[s], unk_score)
            if best[s + 1] is None or cand > best[s + 1]:
                best[s + 1], back[s + 1] = cand, (s, True)
    if best[n] is None:
        stuck = max(i for i in range(n + 1) if best[i] is not None)
        raise ValueError(
            f"text {text!r} has no segmentation into the pieces of scores: nothing reaches past "
            f"character {stuck} ({text[stuck]!r}); pass unk_score to allow unknown characters"
        )
    pieces, unknown, e = [], [], n
    while e > 0:
        s, unk = back[e]
        pieces.append(text[s:e])
        unknown.append(unk)
        e = s
    return Segmentation(pieces[::-1], best[n], unknown[::-1])


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def forward_backward(
    text: str, scores: Mapping[str, float], *, max_length: int | None = None
) -> tuple[list[float], list[float]]:
    """Log-sums over all segmentations: `alpha[i]` over those of text[:i], `beta[i]` of text[i:].

    Both lists have n + 1 entries (float64, -inf where nothing reaches); `alpha[n] == beta[0]` is
    log P(text), the log of the sum over every segmentation of the product of its piece
    probabilities, and `alpha[s] + scores[text[s:e]] + beta[e] - alpha[n]` is the log of the
    posterior probability that text[s:e] is one of the pieces.

    Raises:
        ValueError: if `text` is not a str or `scores` is empty.
    """
    _check(text, scores)
    n, length = len(text), max_length or max_piece_length(scores)
    alpha = [0.0] + [-math.inf] * n
    for e in range(1, n + 1):
        for s in range(max(0, e - length), e):
            if text[s:e] in scores:
                alpha[e] = _logaddexp(alpha[e], alpha[s] + scores[text[s:e]])
    beta = [-math.inf] * n + [0.0]
    for s in range(n - 1, -1, -1):
        for e in range(s + 1, min(n, s + length) + 1):
            if text[s:e] in scores:
                beta[s] = _logaddexp(beta[s], scores[text[s:e]] + beta[e])
    return alpha, beta


def expected_counts(
    word_counts: Mapping[str, float], scores: Mapping[str, float]
) -> tuple[Counter, float]:
    """The E-step: expected number of uses of each piece, and the corpus log-likelihood.

    word_counts: word -> how often it occurs. Each occurrence contributes, for every lattice
    edge text[s:e], its posterior probability (from `forward_backward`); the log-likelihood is
    the sum over words of count * log P(word).

    Raises:
        ValueError: if `word_counts` is empty or holds a count that is not a finite number > 0,
            or a word has no segmentation into the pieces of `scores`, naming it.
    """
    if not isinstance(word_counts, Mapping) or not word_counts:
        raise ValueError("word_counts must be a non-empty dict mapping words to counts > 0")
    for word, freq in word_counts.items():
        if isinstance(freq, bool) or not isinstance(freq, (int, float)) or not freq > 0:
            raise ValueError(f"word_counts[{word!r}] must be a number > 0; got {freq!r}")
        if not math.isfinite(freq):
            raise ValueError(f"word_counts[{word!r}] must be finite; got {freq!r}")
    length = max_piece_length(scores)
    counts, log_likelihood = Counter(), 0.0
    for word, freq in word_counts.items():
        alpha, beta = forward_backward(word, scores, max_length=length)
        z = alpha[-1]
        if z == -math.inf:
            raise ValueError(f"word {word!r} has no segmentation into the pieces of scores")
        log_likelihood += freq * z
        for s in range(len(word)):
            for e in range(s + 1, min(len(word), s + length) + 1):
                piece = word[s:e]
                if piece in scores:
                    counts[piece] += freq * math.exp(alpha[s] + scores[piece] + beta[e] - z)
    return counts, log_likelihood


def em_step(
    word_counts: Mapping[str, float], scores: Mapping[str, float]
) -> tuple[dict[str, float], float]:
    """One EM iteration: `(new scores, log-likelihood under the old scores)`.

    E-step `expected_counts`, M-step log(count / total). Pieces whose expected count is exactly
    0 (no word uses them, or their posterior underflows) leave the vocabulary.
    """
    counts, log_likelihood = expected_counts(word_counts, scores)
    log_total = math.log(sum(counts.values()))
    new = {p: math.log(c) - log_total for p, c in counts.items() if c > 0}
    return new, log_likelihood


def all_segmentations(text: str, vocab) -> Iterator[list[str]]:
    """Every segmentation of `text` into pieces of `vocab`, by brute force (for small texts)."""
    if not text:
        yield []
        return
    for e in range(1, len(text) + 1):
        if text[:e] in vocab:
            for rest in all_segmentations(text[e:], vocab):
                yield [text[:e], *rest]


def count_segmentations(text: str, vocab) -> int:
    """How many segmentations of `text` into pieces of `vocab` exist: ways[e] = sum over pieces
    text[s:e] of ways[s], the forward pass with (+, x) for (logsumexp, +)."""
    ways = [1] + [0] * len(text)
    for e in range(1, len(text) + 1):
        ways[e] = sum(ways[s] for s in range(e) if text[s:e] in vocab)
    return ways[-1]


def sentencepiece_scores(sp) -> tuple[dict[str, float], float]:
    """`(scores, unk_score)` of a sentencepiece unigram model: the score of every normal piece
    (control, unknown, unused and byte pieces are not matched in text) and the unknown score
    `min(scores) - UNK_PENALTY`."""
    scores = {}
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i)):
            scores[sp.id_to_piece(i)] = sp.get_score(i)
    return scores, min(scores.values()) - UNK_PENALTY


def normalize(text: str) -> str:
    """SentencePiece's default input handling, simplified: Unicode NFKC, runs of whitespace to
    one space, no space at either end, then one "▁" in front and every space as "▁"."""
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    return SPACE + text.replace(" ", SPACE) if text else ""


def encode_as_pieces(
    text: str,
    scores: Mapping[str, float],
    unk_score: float | None = None,
    *,
    max_length: int | None = None,
) -> list[str]:
    """The pieces sentencepiece's unigram model gives `text` (`sp.encode(text, out_type=str)`).

    `normalize`, then `viterbi` in float32 with unknown characters allowed (`unk_score`,
    default `min(scores) - UNK_PENALTY`), then each run of unknown characters joined into one
    piece (it is one `<unk>` id in sentencepiece's output).
    """
    _check(text, scores)
    if unk_score is None:
        unk_score = min(scores.values()) - UNK_PENALTY
    seg = viterbi(normalize(text), scores, unk_score=unk_score, float32=True, max_length=max_length)
    pieces: list[str] = []
    for i, (piece, unk) in enumerate(zip(seg.pieces, seg.unknown, strict=True)):
        if unk and i > 0 and seg.unknown[i - 1]:
            pieces[-1] += piece
        else:
            pieces.append(piece)
    return pieces
