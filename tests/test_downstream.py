"""Downstream tasks from the standard-library corpus (t5edu.data.downstream)."""

import textwrap
from collections import Counter

import pytest

from t5edu.data import (
    DEFAULT_DOWNSTREAM_TASKS,
    DOWNSTREAM_PREFIXES,
    DOWNSTREAM_TASKS,
    TASK_PREFIXES,
    FunctionExample,
    StdlibCorpus,
    baseline_predictions,
    build_downstream_tasks,
    build_stdlib_corpus,
)
from t5edu.data.downstream import (
    DownstreamTask,
    downstream_pairs,
    first_identifier,
    first_raised,
    function_body,
    parameter_names,
    returns_value,
    summary_verb,
)
from t5edu.train import exact_match


class CharTokenizer:
    """One id per character plus eos: lengths are easy to count by hand."""

    eos_token_id = 1

    def encode(self, text):
        return [3 + ord(c) % 200 for c in text] + [1]


def fn(module, name, source, summary="Return the thing here.", split="train"):
    source = textwrap.dedent(source).lstrip()
    return FunctionExample(module, name, name, split, source, summary, summary)


SOURCES = {
    "get": fn(
        "m.a",
        "get",
        """
        def get(self, key,
                default=None, *, strict: bool = False):
            # a comment between signature and body
            if strict and key not in self:
                raise KeyError(key)
            return self.data.get(key, default)
        """,
        "Return the value for key.",
    ),
    "walk": fn(
        "m.b",
        "walk",
        """
        async def walk(top, /, *args, follow=False, **kwargs):
            if not top:
                raise errors.WalkError("empty")
            raise ValueError(top)
        """,
        "Walk a tree top-down.",
    ),
    "reraise": fn(
        "m.c",
        "reraise",
        """
        def reraise():
            try:
                return 1
            except OSError as err:
                raise err
        """,
        "123 is not a word.",
    ),
    "dunder": fn("m.c", "__len__", "def __len__(self):\n    return self.n\n", "Set the size."),
}


def test_function_body_removes_a_multiline_signature_and_dedents():
    assert function_body(SOURCES["get"].source) == (
        "if strict and key not in self:\n"
        "    raise KeyError(key)\n"
        "return self.data.get(key, default)\n"
    )
    # The comment sits before the first statement: it goes with the signature.
    assert "comment" not in function_body(SOURCES["get"].source)


def test_parameter_names_in_signature_order_without_defaults_or_annotations():
    assert parameter_names(SOURCES["get"].source) == "self, key, default, strict"
    assert parameter_names(SOURCES["walk"].source) == "top, *args, follow, **kwargs"
    assert parameter_names(SOURCES["reraise"].source) == ""


def test_first_raised_takes_the_first_raise_in_source_order():
    assert first_raised(SOURCES["get"].source) == "KeyError"
    assert first_raised(SOURCES["walk"].source) == "errors.WalkError"
    # `raise err` re-raises a variable: its type is not in the text.
    assert first_raised(SOURCES["reraise"].source) is None
    assert first_raised("def f():\n    raise\n") is None


def test_returns_value_looks_at_the_function_s_own_returns():
    assert returns_value(SOURCES["get"].source) == "yes"
    assert returns_value(SOURCES["walk"].source) == "no"
    nested = "def f(x):\n    def g():\n        return 1\n    h = lambda: 2\n    return None\n"
    assert returns_value(nested) == "no"  # g's and the lambda's values are not f's
    assert returns_value("def f(x):\n    if x:\n        return\n    return x + 1\n") == "yes"
    assert returns_value("def f():\n    yield 1\n    return 2\n") is None  # a generator


def test_summary_verb_and_first_identifier():
    assert summary_verb("Return the value for key.") == "Return"
    assert summary_verb("  Get_x's value") == "Get_x"
    assert summary_verb("123 is not a word.") is None
    assert first_identifier("if self.cls is None: return _cache[key]") == "_cache"
    assert first_identifier("return 1 + 2") == ""


def test_pairs_of_each_task_on_hand_made_functions():
    functions = list(SOURCES.values())
    assert downstream_pairs("params", functions) == [
        (function_body(SOURCES["get"].source), "self, key, default, strict"),
        (function_body(SOURCES["walk"].source), "top, *args, follow, **kwargs"),
        ("return self.n\n", "self"),
    ]  # reraise has no parameters: left out
    assert [t for _, t in downstream_pairs("verb", functions)] == ["Return", "Walk", "Set"]
    assert [s for s, _ in downstream_pairs("verb", functions)][0] == SOURCES["get"].source
    assert [t for _, t in downstream_pairs("raises", functions)] == ["KeyError", "errors.WalkError"]
    assert [t for _, t in downstream_pairs("returns", functions)] == ["yes", "no", "yes", "yes"]
    # Dunder methods are left out of body_name, as of `name`.
    assert [t for _, t in downstream_pairs("body_name", functions)] == ["get", "walk", "reraise"]


def test_task_examples_carry_prefix_and_target_and_drop_long_targets():
    pairs = [("abc", "xy"), ("a" * 50, "z"), ("b", "t" * 9)]
    task = DownstreamTask("params", pairs, CharTokenizer(), inputs_length=12, targets_length=5)
    # ("b", "t"*9): 10 target tokens > 5, dropped; ("a"*50, "z"): input cut to 12, eos last.
    assert task.pairs == pairs[:2] and len(task) == 2
    assert (task.num_dropped, task.num_truncated) == (1, 1)
    tok = CharTokenizer()
    assert task.example(0).input_ids == tok.encode("params: abc")
    assert task.example(0).labels == tok.encode("xy")
    assert task.example(0).target_text == "xy"
    assert len(task.example(1).input_ids) == 12 and task.example(1).input_ids[-1] == 1
    strict = DownstreamTask(
        "raises", pairs, tok, inputs_length=12, targets_length=5, truncate_inputs=False
    )
    assert strict.pairs == pairs[:1] and strict.num_dropped == 2


def test_baselines_on_hand_made_targets():
    train = ["self", "self, key", "cls", "self", "cls"]
    eval_inputs = ["return key", "if x: return self.data"]
    assert baseline_predictions("most_frequent", train, eval_inputs) == ["self", "self"]
    # A tie goes to the target seen first.
    assert baseline_predictions("most_frequent", ["b", "a", "a", "b"], ["?"]) == ["b"]
    assert baseline_predictions("first_identifier", [], eval_inputs) == ["key", "x"]
    preds = baseline_predictions("most_frequent", train, eval_inputs)
    assert exact_match(preds, ["self", "self, key"]) == 0.5


def test_bad_arguments_are_named():
    functions = list(SOURCES.values())
    corpus = StdlibCorpus(python_version="3.x", config={}, documents=[], functions=functions)
    tok = CharTokenizer()
    default = build_downstream_tasks(corpus, tok, "train", inputs_length=400)
    assert list(default) == list(DEFAULT_DOWNSTREAM_TASKS) == ["verb", "params", "returns"]
    everything = build_downstream_tasks(
        corpus, tok, "train", tasks=DOWNSTREAM_TASKS, inputs_length=400
    )
    assert list(everything) == list(DOWNSTREAM_TASKS)
    for name, task in everything.items():
        assert task.prefix == DOWNSTREAM_PREFIXES[name] == f"{name}: "
        assert task.example(0).input_ids[:-1] == tok.encode(task.prefix + task.pairs[0][0])[:-1]
    assert set(DOWNSTREAM_PREFIXES).isdisjoint(TASK_PREFIXES)  # the CLI's --rates names
    with pytest.raises(ValueError, match="name must be one of .*'summarize'"):
        DownstreamTask("summarize", [("a", "b")], tok)
    with pytest.raises(ValueError, match="task must be one of .*'summary'"):
        downstream_pairs("summary", functions)
    with pytest.raises(ValueError, match="split must be one of .*'valid'"):
        build_downstream_tasks(corpus, tok, "valid")
    with pytest.raises(ValueError, match=r"tasks must be names from .*\['verbs'\]"):
        build_downstream_tasks(corpus, tok, "train", tasks=["verbs"])
    with pytest.raises(ValueError, match="not one str; got 'verb'"):
        build_downstream_tasks(corpus, tok, "train", tasks="verb")
    with pytest.raises(ValueError, match="empty corpus: task 'verb' .*0 pairs given"):
        build_downstream_tasks(corpus, tok, "test", tasks=["verb"])
    with pytest.raises(ValueError, match=r"task 'params' .*\(3 pairs given, 3 dropped as too long"):
        build_downstream_tasks(corpus, tok, "train", tasks=["params"], targets_length=2)
    with pytest.raises(ValueError, match="baseline must be one of .*'mode'"):
        baseline_predictions("mode", ["a"], ["x"])
    with pytest.raises(ValueError, match="most_frequent needs train_targets"):
        baseline_predictions("most_frequent", [], ["x"])
    with pytest.raises(ValueError, match="source must hold one def"):
        function_body("x = 1\n")


@pytest.fixture(scope="module")
def corpus():
    return build_stdlib_corpus(max_modules=80)


def test_tasks_are_held_out_by_module_and_deterministic(corpus):
    tok = CharTokenizer()
    modules = {}
    for split in ("train", "validation", "test"):
        # 80 modules: a split may hold no `raises` function, so that task is left out here.
        kw = dict(tasks=["params", "verb", "body_name", "returns"], inputs_length=400)
        tasks = build_downstream_tasks(corpus, tok, split, **kw)
        again = build_downstream_tasks(corpus, tok, split, **kw)
        by_source = {f.source: f.module for f in corpus.examples(split)}
        for name in tasks:
            assert tasks[name].pairs == again[name].pairs
            assert [e.input_ids for e in tasks[name].examples] == [
                e.input_ids for e in again[name].examples
            ]
        # Every verb input is a function source of this split, so of this split's modules.
        used = {by_source[s] for s, _ in tasks["verb"].pairs}
        modules[split] = used
        assert used and used <= {f.module for f in corpus.examples(split)}
    assert not modules["train"] & modules["validation"]
    assert not modules["train"] & modules["test"]
    assert not modules["validation"] & modules["test"]
    # The splits' bodies do not leak either: no params input of validation is one of train's.
    train = build_downstream_tasks(corpus, tok, "train", tasks=["params"], inputs_length=400)
    val = build_downstream_tasks(corpus, tok, "validation", tasks=["params"], inputs_length=400)
    assert not {s for s, _ in train["params"].pairs} & {s for s, _ in val["params"].pairs}
    counts = Counter(t for _, t in train["params"].pairs)
    assert counts.most_common(1)[0][0] == "self"
