"""The SentencePiece T5 tokenizer: T5's ids, round trips, batches, files, and HF parity."""

import io

import pytest
import sentencepiece as spm
import torch

from t5edu.data import build_stdlib_corpus
from t5edu.tokenizer import T5Tokenizer, default_tokenizer, train_tokenizer

VOCAB = 700  # 600 SentencePiece pieces + 100 sentinels: trains in about a second

TEXTS = [
    "Return the value of x.",
    "hello <extra_id_0> world<extra_id_1>  foo",
    "def f(x):\n    return {x: 1}",
    "  spaces   here  ",
    "<extra_id_0> a",
    "a<extra_id_5> <extra_id_6>",
    "<extra_id_99><extra_id_100>",
    "",
]


@pytest.fixture(scope="module")
def corpus():
    return build_stdlib_corpus(max_modules=60)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus.texts("train"), VOCAB, max_sentences=4000)


@pytest.fixture(scope="module")
def hf_tok(tok, tmp_path_factory):
    pytest.importorskip("google.protobuf", reason="HF reads spiece.model with protobuf")
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("hf_tokenizer")
    tok.save_pretrained(d)
    return transformers.T5Tokenizer.from_pretrained(d)


def test_special_ids_and_sentinels(tok):
    assert len(tok) == tok.vocab_size == VOCAB
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    assert tok.sentinel_id(0) == VOCAB - 1 and tok.sentinel_id(99) == VOCAB - 100
    assert tok.num_pieces == VOCAB - 100
    assert tok.id_to_piece(VOCAB - 1) == "<extra_id_0>"
    assert tok.encode("<extra_id_0><extra_id_99>") == [VOCAB - 1, VOCAB - 100, 1]
    assert tok.is_sentinel(VOCAB - 100) and not tok.is_sentinel(VOCAB - 101)


@pytest.mark.parametrize(
    "text",
    ["Return the value of x.", "def f(x): return {x: 1}", "import os, sys", "a == b"],
)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert ids[-1] == 1 and 1 not in ids[:-1] and 0 not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids) == text + "</s>"
    assert tok.decode(torch.tensor(ids[:-1])) == text


def test_whitespace_is_normalised_like_t5(tok):
    # SentencePiece's nmt_nfkc normaliser, as in T5: runs of whitespace become one space.
    assert tok.decode(tok.encode("a   b\n    c "), skip_special_tokens=True) == "a b c"


def test_sentinels_round_trip(tok):
    text = "Thank you<extra_id_0> me to your party<extra_id_1> week."
    ids = tok.encode(text)
    assert ids.count(VOCAB - 1) == 1 and ids.count(VOCAB - 2) == 1
    assert tok.decode(ids, skip_special_tokens=False) == text + "</s>"
    assert tok.decode(ids, skip_special_tokens=True) == "Thank you me to your party week."


def test_unknown_characters_stay_visible(tok):
    ids = tok.encode("中文")
    assert 2 in ids
    assert "<unk>" in tok.decode(ids, skip_special_tokens=True)


def test_batch_padding(tok):
    texts = ["a b c d e f", "a"]
    batch = tok(texts)
    n0 = len(tok.encode(texts[0]))
    assert batch.input_ids.shape == (2, n0) and batch.input_ids.dtype == torch.long
    assert batch.input_ids[0].tolist() == tok.encode(texts[0])
    assert batch.input_ids[1].tolist() == tok.encode(texts[1]) + [0] * (n0 - 2)
    assert batch.attention_mask.tolist() == [[1] * n0, [1, 1] + [0] * (n0 - 2)]
    fixed = tok(texts, max_length=20, padding="max_length")
    assert fixed.input_ids.shape == (2, 20) and fixed.attention_mask.sum() == n0 + 2


def test_too_long_raises_unless_truncation(tok):
    text = "one two three four five six seven eight"
    n = len(tok.encode(text))
    with pytest.raises(ValueError, match=rf"texts\[1\] encodes to {n} tokens.*max_length=4"):
        tok(["a", text], max_length=4)
    cut = tok(["a", text], max_length=4, truncation=True)
    assert cut.input_ids[1].tolist() == tok.encode(text)[:3] + [1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(padding="max_length"), "max_length"),
        (dict(truncation=True), "max_length"),
        (dict(padding="left"), "padding"),
        (dict(max_length=1), "max_length"),
    ],
)
def test_bad_batch_arguments(tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tok(["a"], **kwargs)


def test_bad_texts_and_ids(tok):
    with pytest.raises(ValueError, match="texts"):
        tok([])
    with pytest.raises(ValueError, match="texts"):
        tok("a single string")
    with pytest.raises(ValueError, match="text"):
        tok.encode(123)
    with pytest.raises(ValueError, match="-100"):
        tok.decode([5, -100])
    with pytest.raises(ValueError, match="vocab_size"):
        tok.decode([VOCAB])
    with pytest.raises(ValueError, match="sentinel index"):
        tok.sentinel_id(100)


def test_save_load(tok, tmp_path):
    tok.save(tmp_path / "t.model")
    again = T5Tokenizer.load(tmp_path / "t.model")
    assert again.model_proto == tok.model_proto and again.vocab_size == tok.vocab_size
    tok.save_pretrained(tmp_path / "dir")
    assert T5Tokenizer.load(tmp_path / "dir").encode(TEXTS[0]) == tok.encode(TEXTS[0])


def test_load_rejects_bad_files(tmp_path):
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.model"):
        T5Tokenizer.load(tmp_path / "junk.model")
    with pytest.raises(ValueError, match="missing.model"):
        T5Tokenizer.load(tmp_path / "missing.model")
    # SentencePiece's own default ids (unk=0, bos=1, eos=2) are not T5's.
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b c d e f g h"] * 50),
        model_writer=proto,
        vocab_size=12,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match="pad=0, eos=1, unk=2"):
        T5Tokenizer(proto.getvalue())


def test_training_is_deterministic(corpus, tok):
    again = train_tokenizer(corpus.texts("train"), VOCAB, max_sentences=4000)
    assert again.model_proto == tok.model_proto


def test_training_errors():
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer([], 500)
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer(["", "  \n "], 500)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b c"], 110)
    with pytest.raises(ValueError, match="texts"):
        train_tokenizer("one string", 500)


def test_default_tokenizer_is_cached(tmp_path, corpus, monkeypatch):
    import t5edu.data.corpus

    # The full standard library takes seconds to read; the cache logic is the same on a part.
    monkeypatch.setattr(t5edu.data.corpus, "stdlib_corpus", lambda **kw: corpus)
    first = default_tokenizer(VOCAB, cache_dir=tmp_path, max_sentences=2000)
    files = sorted(p.name for p in tmp_path.glob("tokenizer-*.model"))
    assert len(files) == 1 and f"-v{VOCAB}-" in files[0]
    second = default_tokenizer(VOCAB, cache_dir=tmp_path, max_sentences=2000)
    assert second.model_proto == first.model_proto and second.vocab_size == VOCAB


# -- parity with Hugging Face's T5Tokenizer on the same spiece.model ---------------------------


def test_hf_parity_ids(tok, hf_tok):
    assert len(hf_tok) == len(tok)
    assert hf_tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [
        tok.sentinel_id(0),
        tok.sentinel_id(99),
    ]
    for text in TEXTS:
        assert tok.encode(text) == hf_tok(text).input_ids, text
    ids = list(range(len(tok)))
    assert tok.convert_ids_to_tokens(ids) == hf_tok.convert_ids_to_tokens(ids)


def test_hf_parity_decode(tok, hf_tok):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        ids = torch.randint(0, len(tok), (60,), generator=g)
        ids = ids[ids != 2].tolist()  # HF drops <unk> when skipping; we keep it (docstring)
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == hf_tok.decode(
                ids, skip_special_tokens=skip
            )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(max_length=6, truncation=True, padding="max_length"),
        dict(max_length=30, padding="max_length"),
    ],
)
def test_hf_parity_batches(tok, hf_tok, kwargs):
    texts = TEXTS[:6]
    ours = tok(texts, **kwargs)
    hf_kwargs = dict(kwargs, padding=kwargs.get("padding", True))
    theirs = hf_tok(texts, return_tensors="pt", **hf_kwargs)
    assert torch.equal(ours.input_ids, theirs.input_ids)
    assert torch.equal(ours.attention_mask, theirs.attention_mask)
