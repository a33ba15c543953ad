"""The pure-Python unigram tokenizer: brute force on small lattices, sentencepiece on a corpus."""

import itertools
import math
import random

import pytest

from t5edu.data import build_stdlib_corpus, unigram
from t5edu.tokenizer import train_tokenizer

WORDS = ["tokenizer", "readlines", "aaaaaa", "abcabc", "x", ""]


def _random_scores(word: str, seed: int, max_len: int = 4) -> dict[str, float]:
    """Random log-probabilities for the substrings of `word` up to `max_len`, single characters
    always included (so every word has a segmentation)."""
    rng = random.Random(seed)
    subs = {
        word[s:e] for s in range(len(word)) for e in range(s + 1, min(len(word), s + max_len) + 1)
    }
    keep = {p for p in subs if len(p) == 1 or rng.random() < 0.6}
    return {p: -rng.uniform(0.5, 8.0) for p in sorted(keep)}


def _score(pieces, scores):
    return sum(scores[p] for p in pieces)


@pytest.mark.parametrize(("word", "seed"), list(itertools.product(WORDS, range(4))))
def test_viterbi_is_the_best_of_all_segmentations(word, seed):
    scores = _random_scores(word, seed) or {"a": -1.0}
    every = list(unigram.all_segmentations(word, scores))
    seg = unigram.viterbi(word, scores)
    assert "".join(seg.pieces) == word and not any(seg.unknown)
    assert seg.pieces in every
    assert math.isclose(seg.score, max(_score(p, scores) for p in every), abs_tol=1e-12)
    assert math.isclose(seg.score, _score(seg.pieces, scores), abs_tol=1e-12)


@pytest.mark.parametrize(("word", "seed"), list(itertools.product(WORDS, range(4))))
def test_forward_backward_and_counts_match_brute_force(word, seed):
    scores = _random_scores(word, seed) or {"a": -1.0}
    every = list(unigram.all_segmentations(word, scores))
    alpha, beta = unigram.forward_backward(word, scores)
    log_z = math.log(sum(math.exp(_score(p, scores)) for p in every))
    assert len(alpha) == len(beta) == len(word) + 1
    assert math.isclose(alpha[-1], log_z, abs_tol=1e-12) and math.isclose(
        beta[0], log_z, abs_tol=1e-12
    )
    assert unigram.count_segmentations(word, scores) == len(every)
    if not word:
        return
    counts, ll = unigram.expected_counts({word: 3}, scores)
    brute = {p: 0.0 for p in scores}
    for seg in every:
        for p in seg:
            brute[p] += 3 * math.exp(_score(seg, scores) - log_z)
    assert math.isclose(ll, 3 * log_z, abs_tol=1e-12)
    for p in scores:
        assert math.isclose(counts.get(p, 0.0), brute[p], abs_tol=1e-12), p


def test_count_segmentations_is_exponential_where_brute_force_cannot_go():
    # Pieces "a", "aa", "aaa": the tribonacci numbers 1, 1, 2, 4, 7, 13, ...
    trib = [1, 1, 2]
    for _ in range(60):
        trib.append(trib[-1] + trib[-2] + trib[-3])
    assert unigram.count_segmentations("a" * 60, {"a", "aa", "aaa"}) == trib[60]
    assert unigram.count_segmentations("abc", {"a", "c"}) == 0


def test_em_raises_the_likelihood_and_normalises():
    counts = {"token": 20, "tokens": 12, "tokenize": 8, "read": 15, "reader": 7, "reads": 5}
    scores = {}
    for w in counts:
        for s in range(len(w)):
            for e in range(s + 1, min(len(w), s + 5) + 1):
                scores[w[s:e]] = 0.0
    scores = {p: -math.log(len(scores)) for p in scores}  # uniform: probabilities summing to 1
    lls = []
    for _ in range(6):
        scores, ll = unigram.em_step(counts, scores)
        lls.append(ll)
        assert math.isclose(sum(math.exp(v) for v in scores.values()), 1.0, abs_tol=1e-9)
    assert (
        all(b >= a - 1e-9 for a, b in zip(lls[:-1], lls[1:], strict=True)) and lls[-1] > lls[0] + 10
    )


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"text 'abz' has no segmentation.*past character 2"):
        unigram.viterbi("abz", {"a": -1.0, "b": -1.0})
    with pytest.raises(ValueError, match="text must be a str; got list"):
        unigram.viterbi(["a"], {"a": -1.0})
    with pytest.raises(ValueError, match="scores must be a non-empty dict"):
        unigram.forward_backward("a", {})
    with pytest.raises(ValueError, match="word 'abz' has no segmentation"):
        unigram.expected_counts({"abz": 1}, {"a": -1.0, "b": -1.0})


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: unigram.em_step({}, {"a": -1.0}), "word_counts must be a non-empty dict"),
        (lambda: unigram.expected_counts({"ab": -1}, {"a": -1.0, "b": -1.0}),
         "word_counts['ab'] must be a number > 0; got -1"),
        (lambda: unigram.expected_counts({"ab": math.inf}, {"a": -1.0, "b": -1.0}),
         "word_counts['ab'] must be finite"),
        (lambda: unigram.max_piece_length({}), "scores must be a non-empty dict"),
        (lambda: unigram.viterbi("ab", {"a": math.nan, "b": -1.0}), "scores['a'] must be finite"),
        (lambda: unigram.viterbi("ab", {"a": math.inf, "b": -1.0}), "scores['a'] must be finite"),
        (lambda: unigram.viterbi("ab", {"": -1.0, "a": -1.0}), "every piece must be a non-empty"),
        (lambda: unigram.viterbi("ab", {"a": "x", "b": -1.0}), "scores['a'] must be a number"),
        (lambda: unigram.viterbi("ab", {"a": -1.0}, max_length=-1),
         "max_length must be None or an int >= 1; got -1"),
        (lambda: unigram.viterbi("ab", {"a": -1.0}, max_length=0),
         "max_length must be None or an int >= 1; got 0"),
    ],
)  # fmt: skip
def test_bad_vocabularies_and_counts_are_refused_by_name(call, words):
    """Before: a math domain error, an empty max(), a misleading "no segmentation", NaN scores
    silently never chosen, and negative counts with a positive log-likelihood."""
    with pytest.raises(ValueError) as err:
        call()
    assert words in str(err.value)


def test_unknown_characters_follow_sentencepiece_rule():
    scores = {"a": -1.0, "b": -2.0, "ab": -2.5}
    seg = unigram.viterbi("azzb", scores, unk_score=-12.0)
    assert seg.pieces == ["a", "z", "z", "b"] and seg.unknown == [False, True, True, False]
    assert seg.score == -1.0 - 12.0 - 12.0 - 2.0
    # Only where no one-character piece starts: "ab" exists but "a" does not, so "a" is unknown.
    seg = unigram.viterbi("ab", {"ab": -30.0, "b": -1.0}, unk_score=-5.0)
    assert seg.pieces == ["a", "b"] and seg.unknown == [True, False]


def test_normalize():
    assert unigram.normalize("  Hello\t\n world  ") == "▁Hello▁world"
    assert unigram.normalize("ﬁle ＡＢ") == "▁file▁AB"  # NFKC
    assert unigram.normalize(" \n ") == ""


# -- against sentencepiece ---------------------------------------------------------------------

EXTRA = [
    "",
    "   ",
    "  spaces   and\ttabs\nnewlines  ",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m \u2603\u2603 \U0001f600 \u4e2d\u6587\u5b57",
    "\ufb01le \uff21\uff22",  # NFKC: ligature, full-width letters
    "Decimal('-1.00000004') 10000000000 0.000001",
    "def f(x):\n    return {k: v for k, v in x.items()}",
]


@pytest.fixture(scope="module")
def corpus():
    return build_stdlib_corpus(max_modules=60)


@pytest.fixture(scope="module")
def sp(corpus):
    return train_tokenizer(corpus.texts("train"), 700, max_sentences=4000).sp


def test_encode_as_pieces_equals_sentencepiece_on_a_corpus(corpus, sp):
    scores, unk_score = unigram.sentencepiece_scores(sp)
    assert unk_score == min(scores.values()) - 10.0 and "<unk>" not in scores
    length = unigram.max_piece_length(scores)
    lines = [ln for t in corpus.texts("validation") for ln in t.splitlines() if ln.strip()]
    assert len(lines) > 300
    with_unknown = 0
    for text in lines + EXTRA:
        want = sp.encode(text, out_type=str)
        assert unigram.encode_as_pieces(text, scores, unk_score, max_length=length) == want, text
        assert unigram.normalize(text) == sp.normalize(text), text
        with_unknown += sp.unk_id() in sp.encode(text)
    assert with_unknown >= 1  # the rule for unknown characters was exercised


def test_float32_breaks_ties_as_sentencepiece(sp):
    """Paths with the same pieces in another order tie in exact arithmetic; sentencepiece adds in
    float32, whose rounding decides. Search seeded scores for a tie that float64 breaks the other
    way, and check that float32 agrees with sentencepiece."""
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2", reason="needs protobuf")
    import sentencepiece as spm

    base = pb.ModelProto()
    base.ParseFromString(sp.serialized_model_proto())
    rng, found = random.Random(0), 0
    for _ in range(500):
        scores = {p: unigram._f32(-rng.uniform(1, 9)) for p in ["▁", "1", "0", "00", "0000"]}
        text = "1000000"
        ours32 = unigram.encode_as_pieces(text, scores)
        ours64 = unigram.viterbi(unigram.normalize(text), scores).pieces
        if ours32 == ours64:
            continue
        model = pb.ModelProto()
        model.CopyFrom(base)
        del model.pieces[3:]  # keep pad, eos, unk
        for piece, score in scores.items():
            model.pieces.add(piece=piece, score=score)
        ref = spm.SentencePieceProcessor(model_proto=model.SerializeToString())
        assert ours32 == ref.encode(text, out_type=str) != ours64
        found += 1
    assert found >= 3
