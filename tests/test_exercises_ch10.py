"""Chapter 10's exercises: typical wrong answers are caught, and the verdict says what is wrong.

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

import math

import pytest
import torch

from t5edu.data import unigram
from t5edu.exercises import ch10 as ex10


def _spans(half_up=False, clamp=True, floor_spans=False):
    def fn(length, noise_density, mean_noise_span_length):
        x = length * noise_density
        noise = math.floor(x + 0.5) if half_up else round(x)
        if clamp:
            noise = min(max(noise, 1), length - 1)
        spans = (
            noise // mean_noise_span_length
            if floor_spans
            else round(noise / mean_noise_span_length)
        )
        return noise, max(int(spans), 1)

    return fn


def _spans_as_floats(length, noise_density, mean_noise_span_length):
    noise, spans = ex10._noise_spans_solution(length, noise_density, mean_noise_span_length)
    return noise / 1.0 + 0.5, spans  # a fraction of a token


def _count_every_cut(text, vocab):
    return 2 ** max(len(text) - 1, 0)  # every way to cut, whatever the vocabulary


def _count_empty_as_zero(text, vocab):
    return ex10._count_solution(text, vocab) if text else 0


def _count_longest_match(text, vocab):
    return 1 if unigram.count_segmentations(text, vocab) else 0  # one path found, or none


def _viterbi_boundaries(text, scores):
    """1 where the best segmentation cuts, 0 elsewhere: the mode, not the posterior."""
    pieces = unigram.viterbi(text, scores).pieces
    cuts = {sum(len(p) for p in pieces[:k]) for k in range(1, len(pieces))}
    return torch.tensor([float(i in cuts) for i in range(1, len(text))], dtype=torch.float64)


def _boundaries_with_ends(text, scores):
    inner = ex10._boundary_solution(text, scores)
    return torch.cat(
        [torch.ones(1, dtype=torch.float64), inner, torch.ones(1, dtype=torch.float64)]
    )


def _boundaries_unnormalised(text, scores):
    alpha, beta = unigram.forward_backward(text, scores)
    return torch.tensor(
        [math.exp(alpha[i] + beta[i]) for i in range(1, len(text))], dtype=torch.float64
    )


def _sp(no_prefix=False, merge_unknown=True):
    def fn(text, scores):
        norm = unigram.normalize(text)[1 if no_prefix else 0 :]
        seg = unigram.viterbi(norm, scores, unk_score=min(scores.values()) - 10.0)
        if not merge_unknown:
            return seg.pieces
        out = []
        for k, (piece, unk) in enumerate(zip(seg.pieces, seg.unknown, strict=True)):
            if unk and k and seg.unknown[k - 1]:
                out[-1] += piece
            else:
                out.append(piece)
        return out

    return fn


def _sp_longest_match(text, scores):
    """Longest piece first (WordPiece's rule), ignoring the scores."""
    norm, out, i = unigram.normalize(text), [], 0
    while i < len(norm):
        e = max((e for e in range(i + 1, len(norm) + 1) if norm[i:e] in scores), default=i + 1)
        out.append(norm[i:e])
        i = e
    return out


_UNMERGED = "case 3/7 (text='quiz buzz', scores=<51 scored pieces>): expected a tuple of 9, got 10"

WRONG = [
    ("ch10.noise_spans", _spans(half_up=True), "output[0]: expected 4, got 5"),
    ("ch10.noise_spans", _spans(clamp=False), "output[0]: expected 1, got 0"),
    ("ch10.noise_spans", _spans(floor_spans=True), "output[1]: expected 2, got 1"),
    ("ch10.noise_spans", _spans_as_floats, "output[0]: expected 1, got 1.5"),
    ("ch10.count_segmentations", _count_every_cut, "expected 55, got 256"),
    ("ch10.count_segmentations", _count_empty_as_zero, "expected 1, got 0"),
    ("ch10.count_segmentations", _count_longest_match, "expected 4, got 1"),
    ("ch10.boundary_posterior", _viterbi_boundaries, "wrong values"),
    ("ch10.boundary_posterior", _boundaries_with_ends, "expected shape (8,), got (10,)"),
    ("ch10.boundary_posterior", _boundaries_unnormalised, "wrong values"),
    ("ch10.sp_encode", _sp(no_prefix=True), "output[0]: expected '▁r', got 'r'"),
    ("ch10.sp_encode", _sp(merge_unknown=False), _UNMERGED),
    ("ch10.sp_encode", _sp_longest_match, "expected a tuple of 10, got 4 items"),
]  # fmt: skip


def test_sp_encode_cases_have_no_float32_ties():
    """The reader may add in float64, the expected value adds in float32 as sentencepiece does:
    the cases must have no near-tie that the two would break differently."""
    for case in ex10._sp_cases():
        norm = unigram.normalize(case["text"])
        if not norm:
            continue
        unk = min(case["scores"].values()) - 10.0
        f32 = unigram.viterbi(norm, case["scores"], unk_score=unk, float32=True).pieces
        assert f32 == unigram.viterbi(norm, case["scores"], unk_score=unk).pieces, case["text"]


def test_sp_encode_expected_equals_sentencepiece_on_the_exercise_vocabulary():
    """The exercise's expected values are those of a real sentencepiece model with its pieces."""
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2", reason="needs protobuf")
    import sentencepiece as spm

    from t5edu.tokenizer import train_tokenizer

    base = pb.ModelProto()
    base.ParseFromString(train_tokenizer(unigram.__doc__.splitlines(), 200).model_proto)
    scores = ex10._sp_cases()[0]["scores"]
    del base.pieces[3:]  # keep pad, eos, unk
    for piece, score in scores.items():
        base.pieces.add(piece=piece, score=score)
    sp = spm.SentencePieceProcessor(model_proto=base.SerializeToString())
    for case in ex10._sp_cases():
        assert unigram.encode_as_pieces(**case) == sp.encode(case["text"], out_type=str)
