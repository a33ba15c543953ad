"""The standard-library corpus, its splits and cache, the tasks, the mixture and batching."""

import ast
import platform
import sys
import textwrap
from collections import Counter

import pytest
import torch

import t5edu.data
from t5edu.data import (
    IGNORE_INDEX,
    Example,
    Mixture,
    SpanCorruptionTask,
    SupervisedTask,
    build_default,
    build_stdlib_corpus,
    collate,
    compute_input_and_target_lengths,
    load_corpus,
    load_text_corpus,
    name_task,
    save_corpus,
    split_of,
    stdlib_corpus,
    summarize_task,
)
from t5edu.tokenizer import train_tokenizer

FAKE_STDLIB = {
    "alpha.py": '''
        """Alpha module: adds things."""

        def add(a, b):
            """Return the sum of a and b. Works on anything with +.

            More detail here.
            """
            total = a + b
            return total

        class Box:
            """A box holding one value."""

            def __init__(self, value):
                """Create the box around value itself."""
                self.value = value

            def get(self):
                """Return what the box holds."""
                return self.value

            def stub(self):
                """Only a docstring and pass, so no pair."""
                pass
    ''',
    "beta/__init__.py": '''
        """Beta package."""

        def add(a, b):
            """Return the sum of a and b. Works on anything with +.

            More detail here.
            """
            total = a + b
            return total
    ''',
    "tests/test_skip.py": "def test_x():\n    '''Skipped: tests are not corpus.'''\n    return 1\n",
    "broken.py": "def oops(:\n",
}


@pytest.fixture(scope="module")
def fake_stdlib(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_stdlib")
    for name, text in FAKE_STDLIB.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture(scope="module")
def corpus():
    return build_stdlib_corpus(max_modules=80)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus.texts("train"), 600, max_sentences=3000)


# -- corpus -----------------------------------------------------------------------------------


def test_extraction_from_a_known_tree(fake_stdlib):
    c = build_stdlib_corpus(stdlib_dir=fake_stdlib)
    assert c.stats["modules"] == 3 and c.stats["unparsable_files"] == 1  # tests/ skipped
    assert c.python_version == platform.python_version()
    kinds = Counter((d.source, d.kind) for d in c.documents)
    assert kinds[("alpha", "module_doc")] == 1 and kinds[("alpha", "class_doc")] == 1
    assert kinds[("alpha", "function")] == 4 and kinds[("beta", "function")] == 1
    # beta.add repeats alpha.add verbatim: dropped so it cannot sit in two splits.
    assert c.stats["duplicate_functions"] == 1
    by_name = {f.qualname: f for f in c.functions}
    assert sorted(by_name) == ["Box.__init__", "Box.get", "add"]  # stub has no body
    add = by_name["add"]
    assert add.module == "alpha" and add.name == "add"
    assert add.summary == "Return the sum of a and b."
    assert add.source == "def add(a, b):\n    total = a + b\n    return total\n"
    assert add.docstring.startswith("Return the sum") and "More detail" in add.docstring
    assert by_name["Box.get"].source == "def get(self):\n    return self.value\n"


def test_corpus_records_python_version(corpus):
    assert corpus.python_version == platform.python_version()
    assert corpus.config["max_modules"] == 80 and corpus.stats["modules"] == 80


def test_splits_follow_module_names(corpus):
    for d in corpus.documents:
        assert d.split == split_of(d.source)
    for f in corpus.functions:
        assert f.split == split_of(f.module)
    assert split_of("os.path") == split_of("os.path")  # a pure function of the name


def test_splits_are_disjoint(corpus):
    sources = {s: corpus.sources(s) for s in ("train", "validation", "test")}
    assert not sources["train"] & sources["validation"]
    assert not sources["train"] & sources["test"]
    assert not sources["validation"] & sources["test"]
    seen = {}
    for f in corpus.functions:
        assert seen.setdefault(f.source, f.split) == f.split  # no function text in two splits
    assert {f.split for f in corpus.functions} == {"train", "validation", "test"}


def test_split_fractions_are_respected():
    names = [f"module_{i}" for i in range(4000)]
    counts = Counter(split_of(n) for n in names)
    assert abs(counts["train"] / 4000 - 0.9) < 0.02
    assert abs(counts["validation"] / 4000 - 0.05) < 0.01


def test_function_examples_are_valid_code(corpus):
    assert len(corpus.functions) > 100
    for f in corpus.functions:
        tree = ast.parse(f.source)  # removing the docstring left valid Python
        assert ast.get_docstring(tree.body[0]) != f.docstring  # and it is gone
        assert f.summary and len(f.summary.split()) >= 3


def test_full_corpus_covers_the_standard_library(tmp_path):
    c = stdlib_corpus(cache_dir=tmp_path)
    assert c.stats["modules"] > 200 and len(c.functions) > 1000
    assert any(d.kind == "topic" for d in c.documents)  # pydoc_data.topics prose
    modules = {f.module for f in c.functions}
    assert {"json.decoder", "collections"} & modules
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in modules)
    for s in ("validation", "test"):
        assert not c.sources("train") & c.sources(s)
        assert c.examples(s) and c.texts(s)


def test_cache_round_trip(tmp_path, monkeypatch):
    first = stdlib_corpus(max_modules=30, cache_dir=tmp_path)
    (path,) = tmp_path.glob("stdlib-corpus-*.json.gz")
    assert platform.python_version() in path.name

    def no_rebuild(**kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(t5edu.data.corpus, "build_stdlib_corpus", no_rebuild)
    second = stdlib_corpus(max_modules=30, cache_dir=tmp_path)
    assert second == first


def test_save_load_and_corrupted_file(corpus, tmp_path):
    save_corpus(corpus, tmp_path / "c.json.gz")
    assert load_corpus(tmp_path / "c.json.gz") == corpus
    data = (tmp_path / "c.json.gz").read_bytes()
    (tmp_path / "bad.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="bad.json.gz"):
        load_corpus(tmp_path / "bad.json.gz")


def test_damaged_cache_is_rebuilt(tmp_path):
    first = stdlib_corpus(max_modules=5, cache_dir=tmp_path)
    (path,) = tmp_path.glob("stdlib-corpus-*.json.gz")
    path.write_bytes(b"garbage")
    assert stdlib_corpus(max_modules=5, cache_dir=tmp_path) == first


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_modules=0), "max_modules"),
        (dict(split_fractions=(0.5, 0.5, 0.5)), "split_fractions"),
        (dict(split_fractions=(0.0, 0.5, 0.5)), "split_fractions"),
        (dict(max_source_chars=0), "max_source_chars"),
    ],
)
def test_corpus_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_stdlib_corpus(**kwargs)


def test_empty_corpus_directory(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        build_stdlib_corpus(stdlib_dir=tmp_path)
    with pytest.raises(ValueError, match="stdlib_dir"):
        build_stdlib_corpus(stdlib_dir=tmp_path / "missing")


def test_bad_split_name(corpus):
    with pytest.raises(ValueError, match="split"):
        corpus.texts("dev")


# -- tasks ---------------------------------------------------------------------------------


def test_span_corruption_task(corpus, tok):
    task = SpanCorruptionTask(corpus.texts("train"), tok, inputs_length=64)
    tokens_length, targets_length = compute_input_and_target_lengths(64)
    assert (task.tokens_length, task.targets_length) == (tokens_length, targets_length)
    assert len(task) == -(-task.tokens.numel() // tokens_length)
    ex = task.example(3)
    assert ex.task == "span_corruption" and ex.target_text is None
    assert len(ex.input_ids) == 64 and len(ex.labels) == targets_length
    assert ex.labels[0] == tok.sentinel_id(0) and ex.input_ids[-1] == ex.labels[-1] == 1
    assert task.example(3) == ex  # fixed without a generator (validation)
    fresh = task.example(3, generator=torch.Generator().manual_seed(1))
    assert fresh.input_ids != ex.input_ids  # training draws a new mask


def test_span_corruption_task_empty_corpus(tok):
    with pytest.raises(ValueError, match="empty corpus"):
        SpanCorruptionTask([], tok)
    with pytest.raises(ValueError, match="empty corpus"):
        SpanCorruptionTask(["", " "], tok)


def test_supervised_tasks(corpus, tok):
    functions = corpus.examples("train")
    summarize = summarize_task(functions, tok, inputs_length=128, targets_length=32)
    ex = summarize.example(0)
    assert tok.decode(ex.input_ids, skip_special_tokens=True).startswith("summarize: def ")
    assert ex.target_text in {f.summary for f in functions}
    assert len(summarize) + summarize.num_dropped == len(functions)
    names = name_task(functions, tok)
    assert all(
        not (e.target_text.startswith("__") and e.target_text.endswith("__"))
        for e in names.examples
    )
    assert tok.decode(names.example(0).input_ids).startswith("name: ")


def test_too_long_pairs(tok):
    pairs = [("short", "ok"), ("word " * 200, "ok")]
    drop = SupervisedTask("summarize", pairs, tok, inputs_length=16, targets_length=8)
    assert len(drop) == 1 and drop.num_dropped == 1
    cut = SupervisedTask(
        "summarize", pairs, tok, inputs_length=16, targets_length=8, too_long="truncate"
    )
    assert len(cut.example(1).input_ids) == 16 and cut.example(1).input_ids[-1] == 1
    with pytest.raises(ValueError, match="pair 1 has .* inputs_length=16"):
        SupervisedTask("summarize", pairs, tok, inputs_length=16, too_long="error")
    with pytest.raises(ValueError, match="too_long"):
        SupervisedTask("summarize", pairs, tok, too_long="skip")
    with pytest.raises(ValueError, match="empty corpus"):
        SupervisedTask("summarize", [], tok)


def test_mixture_is_deterministic_and_follows_rates(corpus, tok):
    tasks = [
        SpanCorruptionTask(corpus.texts("train"), tok, inputs_length=32),
        summarize_task(corpus.examples("train"), tok),
        name_task(corpus.examples("train"), tok),
    ]
    rates = {"span_corruption": 0.5, "summarize": 0.3, "name": 0.2}
    mix = Mixture(tasks, rates, seed=0)
    items = mix.take(0, 1500)
    assert items == Mixture(tasks, rates, seed=0).take(0, 1500)
    assert mix.take(700, 5) == items[700:705]  # resuming at a position = indexing
    assert mix.take(0, 20) != Mixture(tasks, rates, seed=1).take(0, 20)
    counts = Counter(e.task for e in items)
    for name, rate in rates.items():
        assert abs(counts[name] / 1500 - rate) < 0.05, counts
    proportional = Mixture(tasks)
    assert proportional.rates["span_corruption"] == pytest.approx(
        len(tasks[0]) / sum(len(t) for t in tasks)
    )


def test_mixture_errors(corpus, tok):
    task = summarize_task(corpus.examples("train"), tok)
    with pytest.raises(ValueError, match="tasks"):
        Mixture([])
    with pytest.raises(ValueError, match="rates name tasks"):
        Mixture([task], {"summarise": 1.0})
    with pytest.raises(ValueError, match="rates"):
        Mixture([task], {"summarize": 0.0})
    with pytest.raises(ValueError, match="distinct"):
        Mixture([task, task])


# -- batching ------------------------------------------------------------------------------


def test_collate_pads_and_shifts():
    examples = [
        Example("t", [5, 0, 7, 1], [0, 9, 1]),  # id 0 inside real data stays real
        Example("t", [4, 1], [3, 8, 6, 2, 1]),
    ]
    b = collate(examples)
    assert b.input_ids.tolist() == [[5, 0, 7, 1], [4, 1, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b.labels.tolist() == [[0, 9, 1, IGNORE_INDEX, IGNORE_INDEX], [3, 8, 6, 2, 1]]
    assert b.decoder_attention_mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert b.decoder_input_ids.tolist() == [[0, 0, 9, 1, 0], [0, 3, 8, 6, 2]]
    assert b.num_tokens == 6 + 8
    fixed = collate(examples, inputs_length=6, targets_length=7)
    assert fixed.input_ids.shape == (2, 6) and fixed.labels.shape == (2, 7)
    assert fixed.as_dict().keys() == b.as_dict().keys()
    assert b.to("cpu").input_ids.dtype == torch.long


def test_collate_matches_hf_shift_right():
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(
        vocab_size=32,
        d_model=8,
        d_kv=4,
        d_ff=16,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(0)
    examples = [
        Example(
            "t",
            torch.randint(2, 32, (n,), generator=g).tolist() + [1],
            torch.randint(0, 32, (m,), generator=g).tolist() + [1],
        )
        for n, m in [(5, 3), (2, 6), (7, 1)]
    ]
    b = collate(examples)
    assert torch.equal(b.decoder_input_ids, model._shift_right(b.labels))
    with torch.no_grad():
        ours = model(**b.as_dict()).loss
        theirs = model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_collate_errors():
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match=r"examples\[0\]"):
        collate([Example("t", [], [1])])
    with pytest.raises(ValueError, match=r"examples\[1\].input_ids has 3 tokens.*length 2"):
        collate([Example("t", [1], [1]), Example("t", [4, 5, 1], [1])], inputs_length=2)


# -- build_default and optional corpora ------------------------------------------------------


def test_build_default(corpus, tok, monkeypatch):
    import t5edu.tokenizer

    # Same assembly as the real call, on the 80-module corpus (the full one takes seconds).
    monkeypatch.setattr(t5edu.data, "stdlib_corpus", lambda **kw: corpus)
    monkeypatch.setattr(t5edu.tokenizer, "default_tokenizer", lambda *a, **kw: tok)
    data = build_default(inputs_length=256, targets_length=8)
    assert data.targets_length == compute_input_and_target_lengths(256)[1]  # raised to fit
    assert set(data.validation) == {"span_corruption", "summarize", "name"}
    batch = collate(data.train.take(0, 16), inputs_length=256, targets_length=data.targets_length)
    assert batch.input_ids.shape == (16, 256)
    assert data.train.rates == pytest.approx(t5edu.data.DEFAULT_RATES)


def test_hf_datasets_are_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        load_text_corpus("c4")
    with pytest.raises(ValueError, match="name"):
        load_text_corpus("pile")
    with pytest.raises(ValueError, match="limit"):
        load_text_corpus("c4", limit=-1)


def test_hf_loaders_with_a_stand_in_datasets(monkeypatch):
    import types

    class Label:
        names = ["False", "True"]

    class Rows(list):
        features = {"label": Label()}

    calls = []

    def load_dataset(path, config, split, **kwargs):
        calls.append((path, config, split))
        return iter([{"text": f"document {i}"} for i in range(10)])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert list(load_text_corpus("c4", limit=3)) == ["document 0", "document 1", "document 2"]
    assert calls[-1] == ("allenai/c4", "en", "train")
