"""SuperGLUE in text-to-text form: preprocessors, metrics, post-processing, loaders, evaluation.

Expected strings and metric values are written by hand here (from T5's formats and the metric
definitions), and the standard metrics are also checked against scikit-learn.
"""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

import t5edu
from t5edu import superglue as sg
from t5edu.superglue import __main__ as cli
from t5edu.superglue import metrics, postprocess
from t5edu.superglue.preprocessors import Text2TextExample

ev = importlib.import_module(
    "t5edu.superglue.evaluate"
)  # the package exports a same-named function

DATA = __import__("pathlib").Path(__file__).parent / "data" / "superglue"


# ----------------------------------------------------------------------------- preprocessors

SIMPLE_CASES = [
    (
        "boolq",
        {
            "question": "is ice cold",
            "passage": "Ice -- Ice is frozen water.",
            "idx": 7,
            "label": True,
        },
        "boolq passage: Ice -- Ice is frozen water. question: is ice cold",
        "True",
        1,
    ),
    (
        "cb",
        {"premise": "Maybe it rained.", "hypothesis": "it rained", "label": "neutral", "idx": 0},
        "cb hypothesis: it rained premise: Maybe it rained.",
        "neutral",
        2,
    ),
    (
        "copa",
        {
            "premise": "The man fell.",
            "choice1": "He slipped on ice.",
            "choice2": "He ate lunch.",
            "question": "cause",
            "label": 0,
            "idx": 3,
        },
        "copa choice1: He slipped on ice. choice2: He ate lunch. premise: The man fell. "
        "question: cause",
        "choice1",
        0,
    ),
    (
        "rte",
        {"premise": "A dog ran.", "hypothesis": "An animal ran.", "label": "entailment", "idx": 1},
        "rte hypothesis: An animal ran. premise: A dog ran.",
        "entailment",
        0,
    ),
    (
        "wic",
        {
            "word": "bat",
            "sentence1": "The bat flew.",
            "sentence2": "He swung the bat.",
            "start1": 4,
            "end1": 7,
            "start2": 14,
            "end2": 17,
            "idx": 2,
            "label": False,
        },
        "wic sentence1: The bat flew. sentence2: He swung the bat. word: bat",
        "False",
        0,
    ),
    (
        "axb",
        {
            "sentence1": "No cat sat.",
            "sentence2": "A cat sat.",
            "label": "not_entailment",
            "idx": 5,
        },
        "rte hypothesis: A cat sat. premise: No cat sat.",
        "not_entailment",
        1,
    ),
    (
        "axg",
        {"premise": "She left.", "hypothesis": "Someone left.", "label": "entailment", "idx": 4},
        "rte hypothesis: Someone left. premise: She left.",
        "entailment",
        0,
    ),
]


@pytest.mark.parametrize(("task", "row", "inputs", "targets", "label"), SIMPLE_CASES)
def test_single_example_tasks(task, row, inputs, targets, label):
    (ex,) = sg.preprocess(task, row)
    assert (ex.task, ex.inputs, ex.targets, ex.label, ex.idx) == (
        task,
        inputs,
        targets,
        label,
        row["idx"],
    )


@pytest.mark.parametrize("task", ["boolq", "cb", "rte", "axb"])
def test_unlabelled_row_gets_unk_target(task):
    row = {k: v for k, v in dict(SIMPLE_CASES_BY_TASK[task]).items() if k != "label"}
    (ex,) = sg.preprocess(task, row, labeled=False)
    assert ex.targets == "<unk>" and ex.label is None


SIMPLE_CASES_BY_TASK = {c[0]: c[1] for c in SIMPLE_CASES}


def test_axg_groups_by_hypothesis():
    (ex,) = sg.preprocess("axg", SIMPLE_CASES_BY_TASK["axg"])
    assert ex.group == "Someone left."


MULTIRC_ROW = {
    "idx": 3,
    "version": 1.1,
    "passage": {
        "text": "<b>Sent 1: </b>Al has a <b>red</b> cap.<br><b>Sent 2: </b>It is old.<br>",
        "questions": [
            {
                "question": "What colour is <b>the</b> cap?",
                "idx": 10,
                "answers": [
                    {"text": "Red", "idx": 20, "label": 1},
                    {"text": "Blue", "idx": 21, "label": 0},
                ],
            },
            {
                "question": "Is the cap new?",
                "idx": 11,
                "answers": [{"text": "No", "idx": 22, "label": 1}],
            },
        ],
    },
}


def test_multirc_one_example_per_answer_grouped_by_question():
    exs = sg.preprocess("multirc", MULTIRC_ROW)
    paragraph = "Sent 1: Al has a red cap. Sent 2: It is old. "
    assert [e.inputs for e in exs] == [
        f"multirc question: What colour is the cap? answer: Red paragraph: {paragraph}",
        f"multirc question: What colour is the cap? answer: Blue paragraph: {paragraph}",
        f"multirc question: Is the cap new? answer: No paragraph: {paragraph}",
    ]
    assert [e.targets for e in exs] == ["True", "False", "True"]
    assert [e.label for e in exs] == [1, 0, 1]
    assert [e.idx for e in exs] == [(3, 10, 20), (3, 10, 21), (3, 11, 22)]
    assert [e.group for e in exs] == [(3, 10), (3, 10), (3, 11)]


def _record_row(answers):
    text = "Kim beat Lee.\n@highlight\nKim won the final\n@highlight\nLee was second"
    return {
        "idx": 9,
        "source": "hand",
        "passage": {
            "text": text,
            "entities": [
                {"start": 0, "end": 2},  # Kim
                {"start": 9, "end": 11},  # Lee
                {"start": 25, "end": 27},  # Kim (again: deduplicated)
            ],
        },
        "qas": [{"query": "@placeholder won the cup.", "idx": 4, **answers}],
    }


def test_record_highlights_entities_and_one_example_per_answer():
    row = _record_row(
        {
            "answers": [
                {"start": 0, "end": 2, "text": "Kim"},
                {"start": 25, "end": 27, "text": "Kim"},
                {"start": 0, "end": 6, "text": "Kim bea"},
            ]
        }
    )
    exs = sg.preprocess("record", row)
    want_inputs = (
        "record query: @placeholder won the cup. entities: Kim, Lee passage: Kim beat Lee. "
        "Kim won the final. Lee was second"
    )
    assert [e.inputs for e in exs] == [want_inputs, want_inputs]
    assert [e.targets for e in exs] == ["Kim", "Kim bea"]  # distinct answers, sorted
    assert all(e.answers == ("Kim", "Kim bea") and e.group == (9, 4) for e in exs)
    assert all(e.idx == (9, 4) for e in exs)


def test_record_unlabelled_query_gives_one_unk_example():
    (ex,) = sg.preprocess("record", _record_row({}), labeled=False)
    assert ex.targets == "<unk>" and ex.answers == ()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("A.\n@highlight\nB", "A. B"),
        ("A?\n@highlight\nB", "A? B"),
        ('A said "x"\n@highlight\nB', 'A said "x" B'),
        ("A\n@highlight\nB\n@highlight\nC", "A. B. C"),
        ("no bullets", "no bullets"),
    ],
)
def test_record_passage_highlight_rules(text, want):
    assert sg.record_passage(text) == want


def _wsc_row(text, span1, i1, span2, i2, label=True, idx=0):
    return {
        "text": text,
        "target": {"span1_text": span1, "span1_index": i1, "span2_text": span2, "span2_index": i2},
        "idx": idx,
        "label": label,
    }


@pytest.mark.parametrize(
    ("row", "inputs", "targets", "label"),
    [
        (
            _wsc_row("Ana hugged Bo because she was happy .", "Ana", 0, "she", 4),
            "wsc: Ana hugged Bo because *she* was happy .",
            "Ana",
            1,
        ),
        (
            _wsc_row("Ana hugged Bo because she was happy .", "Bo", 2, "she", 4, label=False),
            "wsc: Ana hugged Bo because *she* was happy .",
            "Bo",
            0,
        ),
        (  # punctuation glued to the pronoun is split off
            _wsc_row("Bo called Ana and thanked her.", "Ana", 2, "her", 5),
            "wsc: Bo called Ana and thanked *her* .",
            "Ana",
            1,
        ),
        (  # the index points one word early (the off-by-one T5 fixes by hand)
            _wsc_row("They kept the pebble to use it later .", "the pebble", 2, "it", 5),
            "wsc: They kept the pebble to use *it* later .",
            "the pebble",
            1,
        ),
    ],
)
def test_wsc_marks_the_pronoun_and_targets_the_candidate(row, inputs, targets, label):
    (ex,) = sg.preprocess("wsc", row)
    assert (ex.inputs, ex.targets, ex.label) == (inputs, targets, label)


TROPHY = "The trophy does not fit into the brown suitcase because it is too large ."


@pytest.mark.parametrize(
    ("row", "inputs", "targets"),
    [
        (  # span1 lower-cased where the text starts the sentence with it: T5 targets "The"
            _wsc_row(TROPHY, "the trophy", 0, "it", 9),
            "wsc: The trophy does not fit into the brown suitcase because *it* is too large .",
            "The trophy",
        ),
        (  # a newline inside span1 and a trailing period: T5 targets "the brown suitcase"
            _wsc_row(TROPHY, "the brown\nsuitcase.", 6, "it", 9, label=False),
            "wsc: The trophy does not fit into the brown suitcase because *it* is too large .",
            "the brown suitcase",
        ),
        (  # the pronoun capitalised where the text has "he": T5 marks *he*
            _wsc_row("Pete told Mark that he was tired .", "Mark", 2, "He", 4),
            "wsc: Pete told Mark that *he* was tired .",
            "Mark",
        ),
        (  # a span that occurs in the text is kept as it is, case included
            _wsc_row("The dog saw the cat and it ran .", "the cat", 3, "it", 6),
            "wsc: The dog saw the cat and *it* ran .",
            "the cat",
        ),
        (  # words not contiguous in the text: TFDS keeps the span unrepaired
            _wsc_row(
                "Kamenev met Stalin and Zinoviev ; they agreed .",
                "Kamenev and Zinoviev",
                0,
                "they",
                6,
            ),
            "wsc: Kamenev met Stalin and Zinoviev ; *they* agreed .",
            "Kamenev and Zinoviev",
        ),
    ],
)
def test_wsc_spans_are_repaired_as_tfds_wsc_fixed(row, inputs, targets):
    (ex,) = sg.preprocess("wsc", row)
    assert (ex.inputs, ex.targets) == (inputs, targets)
    # HF's wsc.fixed rows are already repaired: repairing again changes nothing
    t, pronoun = row["target"], ex.inputs.split("*")[1]
    fixed_row = _wsc_row(row["text"], ex.targets, t["span1_index"], pronoun, t["span2_index"])
    (fixed,) = sg.preprocess("wsc", fixed_row)
    assert (fixed.inputs, fixed.targets) == (inputs, targets)


@pytest.mark.parametrize(
    ("span", "index", "want"),
    [
        ("the trophy", 0, "The trophy"),
        ("The brown suitcase", 6, "the brown suitcase"),
        ("the brown\nsuitcase.", 6, "the brown suitcase"),
        ("trophy", 1, "trophy"),  # a substring already: kept
        ("the moon", 99, "the moon"),  # index outside the words: no case step, no error
    ],
)
def test_wsc_fix_span(span, index, want):
    assert sg.wsc_fix_span(TROPHY, span, index) == want


def test_wsc_span1_missing_even_after_repair_names_the_field():
    row = {**_wsc_row(TROPHY, "the moon", 6, "it", 9), "idx": 5}
    with pytest.raises(ValueError, match=r"idx=5.*'target.span1_text' = 'the moon' is not in"):
        sg.preprocess("wsc", row)


def test_wsc_training_keeps_only_correct_referents():
    rows = [
        _wsc_row("Ana hugged Bo because she was happy .", "Ana", 0, "she", 4, True, 0),
        _wsc_row("Ana hugged Bo because she was happy .", "Bo", 2, "she", 4, False, 1),
    ]
    assert len(sg.preprocess_rows("wsc", rows)) == 2
    kept = sg.preprocess_rows("wsc", rows, correct_referent_only=True)
    assert [e.targets for e in kept] == ["Ana"]


SAMPLE_COUNTS = {
    "boolq": 4,
    "cb": 5,
    "copa": 4,
    "multirc": 7,
    "record": 4,
    "rte": 4,
    "wic": 4,
    "wsc": 5,
    "axb": 4,
    "axg": 4,
}


@pytest.mark.parametrize("task", list(SAMPLE_COUNTS))
def test_shipped_sample_set_formats(task):
    exs = sg.load_examples(task, DATA, "val")
    assert len(exs) == SAMPLE_COUNTS[task]
    assert all(e.inputs and e.targets and e.targets != "<unk>" for e in exs)


def test_shipped_sample_spot_checks():
    record = sg.load_examples("record", DATA, "val")
    assert record[0].inputs == (
        "record query: @placeholder scored both goals for Marlow Town in the final. entities: "
        "Ada Quinn, Hadley Rovers, Marlow Town passage: Marlow Town won the county cup on "
        "Saturday. Marlow Town beat Hadley Rovers 2-1. Striker Ada Quinn scored twice"
    )
    assert [e.targets for e in record[2:]] == ["Ravi Sen", "Sen"]
    wsc = sg.load_examples("wsc", DATA, "val")
    assert wsc[4].inputs == "wsc: When the baby woke, Dad picked him up and rocked *him* ."
    (test_row,) = sg.load_examples("boolq", DATA, "test")
    assert test_row.targets == "<unk>"


MALFORMED = [
    (
        "boolq",
        {"question": "q", "idx": 5, "label": True},
        r"BoolQ row 0 \(idx=5\).*'passage'.*missing",
    ),
    (
        "boolq",
        {"question": "q", "passage": "p", "idx": 5, "label": "yes"},
        r"idx=5.*'label'.*'yes'",
    ),
    ("boolq", {"question": "q", "passage": "p", "idx": 5}, r"idx=5.*'label'.*missing"),
    ("boolq", {"question": 3, "passage": "p", "idx": 5, "label": True}, r"idx=5.*'question'.*str"),
    ("boolq", {"question": "q", "passage": "p", "label": True}, r"BoolQ row 0: field 'idx'"),
    (
        "cb",
        {"premise": "p", "hypothesis": "h", "idx": 1, "label": "maybe"},
        r"idx=1.*'label'.*'maybe'",
    ),
    ("copa", {**SIMPLE_CASES_BY_TASK["copa"], "label": 2}, r"idx=3.*'label'.*2.*0 or 1"),
    (
        "copa",
        {k: v for k, v in SIMPLE_CASES_BY_TASK["copa"].items() if k != "choice2"},
        r"'choice2'",
    ),
    (
        "rte",
        {"premise": "p", "idx": 2, "label": "entailment"},
        r"RTE row 0 \(idx=2\).*'hypothesis'",
    ),
    (
        "wic",
        {**SIMPLE_CASES_BY_TASK["wic"], "label": 1},
        r"WiC row 0 \(idx=2\).*'label'.*true or false",
    ),
    (
        "axb",
        {"sentence1": "a", "sentence2": "b", "idx": 0, "label": "neutral"},
        r"AX-b row 0.*'neutral'",
    ),
    ("axg", {"premise": "a", "idx": 0, "label": "entailment"}, r"AX-g row 0.*'hypothesis'"),
    (
        "wsc",
        {**_wsc_row("Ana ran .", "Ana", 0, "she", 1), "idx": 8},
        r"idx=8.*'target.span2_index'.*'ran'",
    ),
    ("wsc", {"text": "Ana ran .", "idx": 8, "label": True}, r"idx=8.*'target'.*missing"),
    (
        "multirc",
        {
            **MULTIRC_ROW,
            "passage": {
                **MULTIRC_ROW["passage"],
                "questions": [
                    {"question": "q", "idx": 1, "answers": [{"text": "a", "idx": 0, "label": 7}]}
                ],
            },
        },
        r"MultiRC row 0 \(idx=3\).*'passage.questions\[0\].answers\[0\].label'.*7",
    ),
    (
        "multirc",
        {
            **MULTIRC_ROW,
            "passage": {
                **MULTIRC_ROW["passage"],
                "questions": [{"question": "q", "idx": 1, "answers": [{"idx": 0, "label": 1}]}],
            },
        },
        r"'passage.questions\[0\].answers\[0\].text'.*missing",
    ),
    (
        "record",
        {**_record_row({"answers": []})},
        r"ReCoRD row 0 \(idx=9\).*'qas\[0\].answers'.*empty",
    ),
    ("record", {**_record_row({})}, r"idx=9.*'qas\[0\].answers'.*missing"),
    (
        "record",
        {
            **_record_row({"answers": [{"start": 0, "end": 2, "text": "Kim"}]}),
            "passage": {"text": "Kim", "entities": [{"start": 0, "end": 9}]},
        },
        r"idx=9.*'passage.entities\[0\]'.*outside",
    ),
]


@pytest.mark.parametrize(("task", "row", "match"), MALFORMED)
def test_malformed_rows_name_row_and_field(task, row, match):
    with pytest.raises(ValueError, match=match):
        sg.preprocess(task, row, index=0)


def test_malformed_row_position_is_named_by_preprocess_rows():
    rows = [SIMPLE_CASES_BY_TASK["rte"], {"premise": "p", "hypothesis": "h", "idx": 44}]
    with pytest.raises(ValueError, match=r"RTE row 1 \(idx=44\): field 'label'"):
        sg.preprocess_rows("rte", rows)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="task must be one of.*'mnli'"):
        sg.get_task("mnli")
    assert sg.get_task("AX-b").name == "axb" and sg.get_task("wsc.fixed").name == "wsc"


# ----------------------------------------------------------------------------- metrics


def test_accuracy_hand_and_sklearn():
    y, p = [1, 0, 1, 1], [1, 1, 1, -1]
    assert metrics.accuracy(y, p) == 50.0
    assert metrics.accuracy(y, p) == 100 * skm.accuracy_score(y, p)


def test_cb_macro_f1_hand_and_sklearn():
    # classes e=0, c=1, n=2; one invalid (-1) prediction for a true "c"
    y = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, -1, 2, 0]
    # e: TP1 FP1 FN1 -> 1/2; c: TP1 FP1 FN1 -> 1/2; n: TP1 FP0 FN1 -> 2/3
    want = 100 * (0.5 + 0.5 + 2 / 3) / 3
    got = metrics.f1_macro(y, p, 3)
    assert math.isclose(got, want, rel_tol=1e-12)
    assert math.isclose(got, 100 * skm.f1_score(y, p, labels=[0, 1, 2], average="macro"))
    assert sg.task_metrics("cb", [_ex("cb", t) for t in y], p) == {
        "f1_macro": got,
        "accuracy": 50.0,
    }


def _ex(task, label, group=None, answers=(), targets="x"):
    return Text2TextExample(task, "in", targets, 0, label, tuple(answers), group)


def test_binary_f1_counts_invalid_as_wrong():
    y = [1, 1, 0, 0, 1]
    p = [1, -1, -1, 1, 0]  # invalid on a 1 -> FN, invalid on a 0 -> FP
    # TP1, FP2 (rows 2, 3), FN2 (rows 1, 4): F1 = 2*1 / (2*1 + 2 + 2)
    assert math.isclose(metrics.f1_binary(y, p), 100 * 2 / 6)
    assert math.isclose(metrics.f1_binary(y, p), 100 * skm.f1_score(y, [1, 0, 1, 1, 0]))


def test_multirc_f1a_and_exact_match_per_question():
    groups = [(0, 0), (0, 0), (0, 0), (0, 1), (0, 1), (1, 2)]
    y = [1, 0, 1, 1, 0, 1]
    p = [1, 0, 0, 1, 0, 1]
    exs = [_ex("multirc", label, g) for label, g in zip(y, groups, strict=True)]
    got = sg.task_metrics("multirc", exs, p)
    # F1a: TP3 FP0 FN1 -> 6/7; EM: question (0,0) wrong, (0,1) and (1,2) right -> 2/3
    assert math.isclose(got["f1a"], 100 * 6 / 7)
    assert math.isclose(got["f1a"], 100 * skm.f1_score(y, p))
    assert math.isclose(got["em"], 100 * 2 / 3)
    assert math.isclose(sg.task_score("multirc", got), (100 * 6 / 7 + 100 * 2 / 3) / 2)


def test_matthews_hand_and_sklearn():
    y = [1, 1, 1, 0, 0, 0]
    p = [1, 1, 0, 0, 0, 1]  # TP2 TN2 FP1 FN1
    want = 100 * (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3)
    assert math.isclose(metrics.matthews(y, p), want)
    assert math.isclose(metrics.matthews(y, p), 100 * skm.matthews_corrcoef(y, p))


def test_matthews_invalid_never_agrees_and_constant_scores_zero():
    y = [1, 1, 0, 0]
    assert metrics.matthews(y, [-1, -1, -1, -1]) == 0.0
    p = [1, -1, 0, 0]
    assert math.isclose(metrics.matthews(y, p), 100 * skm.matthews_corrcoef(y, p))
    assert metrics.matthews(y, p) < metrics.matthews(y, [1, 1, 0, 0]) == 100.0


def test_gender_parity_hand():
    hyps = ["h1", "h1", "h2", "h2", "h3", "h3"]
    assert metrics.gender_parity([0, 0, 0, 1, 1, 1], hyps) == pytest.approx(100 * 2 / 3)
    # a pair of equal but invalid predictions is not parity
    assert metrics.gender_parity([-1, -1, 0, 0, 1, 1], hyps) == pytest.approx(100 * 2 / 3)
    exs = [_ex("axg", 0, h) for h in hyps]
    got = sg.task_metrics("axg", exs, [0, 0, 0, 1, 1, 1])
    assert got == pytest.approx({"gender_parity": 100 * 2 / 3, "accuracy": 100 * 3 / 6})


@pytest.mark.parametrize(
    ("preds", "hyps", "match"),
    [
        ([0, 0, 1], ["a", "a", "b"], "pairs; got 3"),
        ([0, 0], ["a", "b"], "rows 0 and 1 differ"),
        ([0], ["a", "a"], "hypotheses must have one entry per prediction"),
    ],
)
def test_gender_parity_errors(preds, hyps, match):
    with pytest.raises(ValueError, match=match):
        metrics.gender_parity(preds, hyps)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("an apple, a pear", "apple pear"),
        ("Theater", "theater"),
        ("U.S.A.", "usa"),
    ],
)
def test_normalize_answer(text, want):
    assert sg.normalize_answer(text) == want


def test_record_max_over_answers_f1_and_em():
    # query 1: "ravi sen" vs golds {"Ravi Sen", "Sen"}: EM 1, F1 1
    # query 2: "the Orbit" vs gold "Orbit Lab": EM 0, F1: P=1/1 R=1/2 -> 2/3
    # query 3: "" vs "Kim": 0, 0
    got = sg.record_metrics(
        ["ravi sen", "the Orbit", ""], [["Ravi Sen", "Sen"], ["Orbit Lab"], ["Kim"]]
    )
    assert got["em"] == pytest.approx(100 / 3)
    assert got["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    # "x y y z" vs "y y w": 2 shared tokens, P = 2/4, R = 2/3
    assert sg.token_f1("x y y z", "y y w") == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert sg.token_f1("a b b c", "b b d") == pytest.approx(2 / 3)  # "a" is an article, dropped


def test_record_scores_each_query_once():
    exs = [
        _ex("record", None, (0, 0), ("Kim", "Lee"), "Kim"),
        _ex("record", None, (0, 0), ("Kim", "Lee"), "Lee"),
        _ex("record", None, (0, 1), ("Ann",), "Ann"),
    ]
    got = sg.task_metrics("record", exs, ["Lee", "ignored copy", "Bob"])
    assert got == {"f1": 50.0, "em": 50.0}


def test_superglue_score_averages_task_scores_and_skips_diagnostics():
    scores = {
        "boolq": {"accuracy": 80.0},
        "cb": {"f1_macro": 70.0, "accuracy": 90.0},  # 80
        "copa": {"accuracy": 60.0},
        "multirc": {"f1a": 75.0, "em": 35.0},  # 55
        "record": {"f1": 72.0, "em": 70.0},  # 71
        "rte": {"accuracy": 66.0},
        "wic": {"accuracy": 58.0},
        "wsc": {"accuracy": 62.0},
        "axb": {"mcc": -100.0},
        "axg": {"gender_parity": 0.0, "accuracy": 0.0},
    }
    want = (80 + 80 + 60 + 55 + 71 + 66 + 58 + 62) / 8
    assert sg.superglue_score(scores) == pytest.approx(want)
    with pytest.raises(ValueError, match=r"lack the tasks \['wsc'\]"):
        sg.superglue_score({k: v for k, v in scores.items() if k != "wsc"})
    assert sg.superglue_score({"cb": scores["cb"]}, require_all=False) == 80.0
    with pytest.raises(ValueError, match="at least one of"):
        sg.superglue_score({"axb": {"mcc": 1.0}}, require_all=False)


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (metrics.accuracy, ([1, 0], [1]), "one entry per label; got 1 for 2"),
        (metrics.accuracy, ([], []), "labels must not be empty"),
        (metrics.accuracy, ([None], [1]), "unlabelled"),
        (metrics.record_metrics, (["x"], [[]]), r"answers\[0\] is empty"),
        (sg.task_score, ("cb", {"accuracy": 1.0}), r"lack \['f1_macro'\]"),
    ],
)
def test_metric_errors(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


# ----------------------------------------------------------------------------- post-processing

GARBAGE = [
    None,
    b"\xff\xfe",
    "",
    "   ",
    "Tru",
    "true",
    "entailment!",
    "🦜" * 50,
    12345,
    "x" * 10_000,
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_text_maps_to_invalid(text):
    assert postprocess.text_to_label(text, ("False", "True")) == postprocess.INVALID


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.none(), st.integers()))
def test_any_generation_is_scored_without_crashing(text):
    assert postprocess.text_to_label(text, ("entailment", "not_entailment")) in (-1, 0, 1)
    assert isinstance(postprocess.wsc_referent_matches(text, "the cat"), bool)
    exs = sg.load_examples("multirc", DATA, "val")
    result = sg.score_predictions("multirc", exs, [text] * len(exs))
    assert all(0.0 <= v <= 100.0 for v in result.metrics.values())


def test_label_words_map_to_classes():
    assert postprocess.text_to_label(" not_entailment\n", ("entailment", "not_entailment")) == 1
    assert postprocess.text_to_label("choice2", ("choice1", "choice2")) == 1


@pytest.mark.parametrize(
    ("prediction", "referent", "want"),
    [
        ("the cat", "The cat", True),
        ("cat", "the fuzzy cat", True),
        ("the fuzzy cat", "cat", True),
        ("Bob", "Bob's hat", False),
        ("the dog", "the cat", False),
        ("", "the cat", False),
        ("the", "the cat", False),
        (None, "Maya", False),
    ],
)
def test_wsc_referent_rule(prediction, referent, want):
    assert postprocess.wsc_referent_matches(prediction, referent) is want


@pytest.mark.parametrize(
    ("prediction", "referent", "want"),
    [
        ("Mark", "Mark", 1),
        ("the fuzzy cat", "cat", 1),
        ("Lena", "Maya", 0),
        ("Bob", "Bob's hat", 0),
        # T5's guard: nothing left after lower-casing and dropping determiners -> -1
        ("", "Maya", -1),
        ("   ", "Maya", -1),
        ("The", "the cat", -1),
        ("his their", "Maya", -1),
        (None, "Maya", -1),
        # T5 splits on single spaces: "a   the" leaves two empty words, joined " ", which T5's
        # `if not prediction` does not count as empty; the set {""} then names nothing (0)
        ("a   the", "Maya", 0),
        ("the  cat", "cat", 1),  # {"", "cat"} contains {"cat"}
    ],
)
def test_wsc_prediction_value_follows_t5_wsc_simple(prediction, referent, want):
    assert postprocess.wsc_prediction_value(prediction, referent) == want


def _wsc_example(targets, label, idx):
    return sg.Text2TextExample("wsc", f"wsc: row {idx} *he* .", targets, idx, label)


def test_empty_wsc_answer_is_wrong_for_every_label():
    # The issue's case: T5's wsc_simple gives -1 for "" and "The", so only "Mark" is right.
    exs = [_wsc_example("Mark", 1, 0), _wsc_example("Mark", 0, 1), _wsc_example("Mark", 1, 2)]
    result = sg.score_predictions("wsc", exs, ["Mark", "", "The"])
    assert result.metrics["accuracy"] == pytest.approx(100 / 3)
    assert result.num_invalid == 2
    # An empty answer on a wrong-candidate row is no correct "not the referent"
    assert sg.score_predictions("wsc", exs[1:2], [""]).metrics == {"accuracy": 0.0}
    assert sg.score_predictions("wsc", exs[1:2], ["Lena"]).metrics == {"accuracy": 100.0}


def test_always_empty_wsc_model_scores_zero():
    exs = sg.load_examples("wsc", DATA, "val")
    assert {e.label for e in exs} == {0, 1}  # both kinds of row present
    result = sg.score_predictions("wsc", exs, sg.constant_predictions(exs, ""))
    assert result.metrics == {"accuracy": 0.0} and result.num_invalid == len(exs)


def test_wsc_oracle_names_something_else_for_wrong_candidates():
    exs = sg.load_examples("wsc", DATA, "val")
    for ex, text in zip(exs, sg.oracle_predictions(exs), strict=True):
        assert text != ""
        assert postprocess.wsc_prediction_value(text, ex.targets) == ex.label


@pytest.mark.parametrize("task", list(SAMPLE_COUNTS))
def test_garbage_predictions_score_as_wrong_without_crashing(task):
    exs = sg.load_examples(task, DATA, "val")
    if task == "record":
        exs = postprocess.dedupe_by_group(exs)
    result = sg.score_predictions(task, exs, [GARBAGE[i % len(GARBAGE)] for i in range(len(exs))])
    spec = sg.get_task(task)
    if spec.label_names is not None:  # every generation is no label word
        assert result.num_invalid == len(exs)
        for name, value in result.metrics.items():
            assert value == 0.0, name
    elif task == "wsc":
        # Empty garbage (None, "", "   ") is -1, wrong for every label; the rest names no
        # candidate, i.e. predicts "not the referent", right on the wrong-candidate rows.
        texts = [GARBAGE[i % len(GARBAGE)] for i in range(len(exs))]
        empty = [t is None or (isinstance(t, str) and not t.strip()) for t in texts]
        right = sum(e.label == 0 and not m for e, m in zip(exs, empty, strict=True))
        assert result.metrics["accuracy"] == pytest.approx(100 * right / len(exs))
        assert result.num_invalid == sum(empty)
    else:
        assert result.metrics == {"f1": 0.0, "em": 0.0}


@pytest.mark.parametrize("task", list(SAMPLE_COUNTS))
def test_oracle_predictions_score_perfectly(task):
    exs = sg.load_examples(task, DATA, "val")
    if task == "record":
        exs = postprocess.dedupe_by_group(exs)
    result = sg.score_predictions(task, exs, sg.oracle_predictions(exs))
    assert result.metrics == {k: 100.0 for k in result.metrics}
    assert result.score == 100.0


def test_score_predictions_length_mismatch():
    exs = sg.load_examples("rte", DATA, "val")
    with pytest.raises(ValueError, match="one entry per example; got 1 for 4 RTE"):
        sg.score_predictions("rte", exs, ["entailment"])


# ----------------------------------------------------------------------------- loaders


def test_official_file_layout(tmp_path):
    assert sg.data_file(tmp_path, "boolq", "val") == tmp_path / "BoolQ" / "val.jsonl"
    assert sg.data_file(tmp_path, "ReCoRD", "train") == tmp_path / "ReCoRD" / "train.jsonl"
    assert sg.data_file(tmp_path, "axg", "test") == tmp_path / "AX-g" / "AX-g.jsonl"
    with pytest.raises(ValueError, match="split must not be 'train' for AX-b"):
        sg.data_file(tmp_path, "axb", "train")
    with pytest.raises(ValueError, match="split must be one of.*'dev'"):
        sg.data_file(tmp_path, "cb", "dev")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CB[/\\]val\.jsonl"):
        sg.load_rows("cb", tmp_path, "val")


def test_bad_json_line_is_named(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "val.jsonl").write_text('{"idx": 0}\n\n{oops\n')
    with pytest.raises(ValueError, match=r"val\.jsonl line 3: not valid JSON"):
        sg.load_rows("rte", tmp_path, "val")


def test_limit_and_source_checks():
    assert len(sg.load_rows("cb", DATA, "val", limit=2)) == 2
    with pytest.raises(ValueError, match="limit must be a positive int"):
        sg.load_rows("cb", DATA, "val", limit=0)
    with pytest.raises(ValueError, match="source must be 'local' or 'hf'"):
        sg.load_rows("cb", DATA, "val", source="s3")


def _hf_rows_of(task):
    """The sample set as HF `datasets`' super_glue exposes it (flattened, ClassLabel ints)."""
    rows = sg.load_rows(task, DATA, "val")
    spec = sg.get_task(task)
    out = []
    for r in rows:
        if task == "multirc":
            for q in r["passage"]["questions"]:
                for a in q["answers"]:
                    out.append(
                        {
                            "paragraph": r["passage"]["text"],
                            "question": q["question"],
                            "answer": a["text"],
                            "idx": {
                                "paragraph": r["idx"],
                                "question": q["idx"],
                                "answer": a["idx"],
                            },
                            "label": a["label"],
                        }
                    )
        elif task == "record":
            text = r["passage"]["text"]
            ents = sorted({text[e["start"] : e["end"] + 1] for e in r["passage"]["entities"]})
            for qa in r["qas"]:
                out.append(
                    {
                        "passage": text,
                        "query": qa["query"],
                        "entities": ents,
                        "answers": sorted({a["text"] for a in qa["answers"]}),
                        "idx": {"passage": r["idx"], "query": qa["idx"]},
                    }
                )
        elif task == "wsc":
            out.append(
                {"text": r["text"], **r["target"], "idx": r["idx"], "label": int(r["label"])}
            )
        else:
            label = r["label"]
            label = spec.label_names.index(label) if isinstance(label, str) else int(label)
            out.append({**r, "label": label})
    return out


@pytest.mark.parametrize("task", list(SAMPLE_COUNTS))
def test_hf_rows_convert_to_the_same_examples(task):
    want = sg.load_examples(task, DATA, "val")
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return _hf_rows_of(task)

    rows = sg.load_rows(task, split="val", source="hf", load_dataset=fake_load_dataset)
    assert sg.preprocess_rows(task, rows) == want
    spec = sg.get_task(task)
    assert calls == [
        ("aps/super_glue", spec.hf_config, "test" if spec.diagnostic else "validation")
    ]


def test_hf_options_need_hf_source():
    with pytest.raises(ValueError, match="need source='hf'"):
        sg.load_rows("cb", DATA, "val", hf_path="super_glue")


# ----------------------------------------------------------------------------- evaluation loop


class WordTokenizer:
    """A tiny duck-typed tokenizer: one id per whitespace-separated word (0 pad, 1 EOS, 2 unk)."""

    pad_id, eos_id = 0, 1

    def __init__(self, max_vocab=10_000):
        self.vocab, self.words, self.max_vocab = {}, {}, max_vocab

    def encode(self, text):
        ids = []
        for w in text.split():
            if w not in self.vocab:
                if len(self.vocab) + 3 >= self.max_vocab:
                    ids.append(2)
                    continue
                self.vocab[w] = len(self.vocab) + 3
                self.words[self.vocab[w]] = w
            ids.append(self.vocab[w])
        return ids

    def decode(self, ids):
        return " ".join(self.words.get(i, "<unk>") for i in ids)


class LookupModel:
    """A fake model: generates a fixed answer per input (by its token ids), HF-style output."""

    def __init__(self, tokenizer, answers: dict[str, str], default="???"):
        self.tok, self.calls = tokenizer, []
        self.table = {tuple(tokenizer.encode(k)): v for k, v in answers.items()}
        self.default = default

    def generate(self, input_ids, attention_mask=None, max_new_tokens=None):
        self.calls.append((tuple(input_ids.shape), max_new_tokens))
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            key = tuple(i for i, m in zip(ids, mask, strict=True) if m)[:-1]  # drop EOS
            text = self.table.get(key, self.default)
            rows.append([0] + self.tok.encode(text) + [1, 0, 0])  # start, text, EOS, padding
        width = max(map(len, rows))
        return torch.tensor([r + [0] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("task", list(SAMPLE_COUNTS))
def test_evaluate_with_a_perfect_fake_model(task):
    exs = sg.load_examples(task, DATA, "val")
    tok = WordTokenizer()
    unique = postprocess.dedupe_by_group(exs) if task == "record" else exs
    answers = dict(zip([e.inputs for e in unique], sg.oracle_predictions(unique), strict=True))
    # WSC rows share their input across candidates: the perfect model names the true referent
    answers.update({e.inputs: e.targets for e in unique if e.task == "wsc" and e.label == 1})
    model = LookupModel(tok, answers)
    results = sg.evaluate(model, tok, task, DATA, "val", batch_size=3)
    r = results[sg.get_task(task).name]
    assert r.metrics == {k: 100.0 for k in r.metrics}
    assert r.num_examples == len(unique) and r.num_truncated == 0
    assert all(m == sg.get_task(task).max_new_tokens for _, m in model.calls)


def test_evaluate_garbage_model_and_table():
    tok = WordTokenizer()
    model = LookupModel(tok, {}, default="?? maybe")
    results = sg.evaluate(model, tok, ["boolq", "cb", "axb"], DATA, "val")
    assert results["boolq"].metrics == {"accuracy": 0.0}
    assert results["cb"].num_invalid == 5
    assert results["axb"].metrics["mcc"] == 0.0
    table = sg.results_table(results)
    assert "| BoolQ | accuracy 0.0 | 0.0 | 4 | 4 | 0 |" in table
    assert "SuperGLUE score: 0.0 (partial: 2 of 8 tasks)" in table


def test_truncation_is_counted_and_keeps_eos():
    tok = WordTokenizer()
    ids, mask, n = ev.encode_batch(tok, ["a b c d e", "a"], max_input_length=3)
    assert n == 1
    assert ids.tolist() == [[3, 4, 1], [3, 1, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(ValueError, match="max_input_length must be >= 2"):
        ev.encode_batch(tok, ["a"], max_input_length=1)


def test_decode_generated_stops_at_eos_and_drops_padding():
    tok = WordTokenizer()
    ids = tok.encode("yes no")
    assert ev.decode_generated(tok, [0, *ids, 1, *ids, 0]) == "yes no"
    assert ev.decode_generated(tok, [0, 0]) == ""


def test_decode_survives_ids_the_tokenizer_refuses():
    class Strict(WordTokenizer):
        def decode(self, ids):
            if any(i >= 100 for i in ids):
                raise ValueError(f"ids must be < 100; got {ids}")
            return super().decode(ids)

    tok = Strict()
    ids = tok.encode("yes")
    assert ev.decode_generated(tok, [0, 120, *ids, 5000, 1]) == "yes"


def test_axg_limit_keeps_pairs():
    tok = WordTokenizer()
    results = sg.evaluate(LookupModel(tok, {}), tok, "axg", DATA, "val", limit=3)
    assert results["axg"].num_examples == 2


def test_axg_limit_below_a_pair_is_refused():
    tok = WordTokenizer()
    with pytest.raises(ValueError, match="limit must be >= 2 for AX-g"):
        sg.evaluate(LookupModel(tok, {}), tok, "axg", DATA, "val", limit=1)


def test_evaluate_refuses_unlabelled_split():
    with pytest.raises(ValueError, match="split 'test' of BoolQ has no labels"):
        sg.evaluate(None, WordTokenizer(), "boolq", DATA, "test")


def _tiny_hf_t5(vocab_size):
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(
        vocab_size=vocab_size, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    return T5ForConditionalGeneration(cfg).eval()


def test_random_transformers_t5_runs_end_to_end():
    """A real (random) T5 from transformers through the duck-typed loop: no crash, sane ranges."""
    tok = WordTokenizer(max_vocab=64)
    tasks = ["rte", "multirc", "record", "wsc"]
    results = sg.evaluate(_tiny_hf_t5(64), tok, tasks, DATA, "val", limit=2, max_new_tokens=3)
    for r in results.values():
        assert all(0.0 <= v <= 100.0 for v in r.metrics.values())
        assert len(r.predictions) == r.num_examples


@pytest.mark.skipif(
    not hasattr(t5edu, "T5ForConditionalGeneration"), reason="t5edu's T5 model is not built yet"
)
def test_random_t5edu_model_runs_end_to_end():
    cfg = t5edu.T5Config(
        vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = t5edu.T5ForConditionalGeneration(cfg)
    tok = WordTokenizer(max_vocab=64)
    results = sg.evaluate(model, tok, ["cb", "record"], DATA, "val", max_new_tokens=3)
    assert all(0.0 <= v <= 100.0 for r in results.values() for v in r.metrics.values())


# ----------------------------------------------------------------------------- fine-tuning pairs


def test_text_pairs_mix_tasks_and_filter_wsc():
    pairs = list(sg.text_pairs(["cb", "wsc"], DATA, "val", seed=0))
    cb = [p for p in pairs if p[0].startswith("cb ")]
    wsc = [p for p in pairs if p[0].startswith("wsc: ")]
    assert len(cb) == 5 and len(wsc) == 3  # WSC trains on correct referents only
    assert ("wsc: Maya gave her old bike to Lena because *she* had outgrown it .", "Maya") in wsc
    assert pairs == list(sg.text_pairs(["cb", "wsc"], DATA, "val", seed=0))
    assert pairs != list(sg.text_pairs(["cb", "wsc"], DATA, "val", seed=1))
    capped = list(sg.text_pairs("all", DATA, "val", max_per_task=1, shuffle=False))
    assert [p[1] for p in capped] == [
        "True", "entailment", "choice1", "True", "Ada Quinn", "entailment", "False", "Maya",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="must not include AX-b"):
        list(sg.text_pairs(["axb"], DATA, "val"))
    assert len(list(sg.text_pairs(["all"], DATA, "val"))) == len(
        pairs_all := list(sg.text_pairs("all", DATA, "val"))
    )
    assert not any(p[0].startswith("rte hypothesis") and "plumber" in p[0] for p in pairs_all)


def test_encode_pairs_counts_truncation():
    tok = WordTokenizer()
    examples, cut = sg.encode_pairs(tok, [("a b c d", "yes"), ("a", "no")], max_input_length=3)
    assert cut == 1
    assert [e.input_ids for e in examples] == [[3, 4, 1], [3, 1]]
    assert [e.labels for e in examples] == [[7, 1], [8, 1]]
    assert [e.target_text for e in examples] == ["yes", "no"]


def test_finetune_hands_pairs_to_the_trainer_and_lowers_the_loss():
    cfg = t5edu.T5Config(vocab_size=256, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    torch.manual_seed(0)
    model = t5edu.T5ForConditionalGeneration(cfg)
    pairs = list(sg.text_pairs(["cb", "rte"], DATA, "val"))
    trainer = sg.finetune(
        model, WordTokenizer(max_vocab=256), pairs, steps=12, batch_size=9, lr=3e-2,
        warmup_steps=2, eval_every=0, log_every=4, progress=False, precision="fp32",
    )  # fmt: skip
    losses = trainer.step_losses
    assert len(losses) == 12 and trainer.num_truncated == 0
    assert losses[-1] < 0.8 * losses[0]  # full-batch steps on 9 pairs: the loss must fall


# ----------------------------------------------------------------------------- command line


def test_cli_format(capsys):
    assert (
        cli.main(["format", "--task", "copa", "--data", str(DATA), "--limit", "1", "--json"]) == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert line == {
        "task": "copa",
        "inputs": "copa choice1: The sun came out. choice2: The wind was cold. premise: The ice "
        "on the pond melted. question: cause",
        "targets": "choice1",
    }


def test_cli_evaluate_with_a_saved_checkpoint(tmp_path, capsys):
    from t5edu.tokenizer import train_tokenizer

    texts = [e.inputs for t in SAMPLE_COUNTS for e in sg.load_examples(t, DATA, "val")]
    ckpt = tmp_path / "ckpt"
    train_tokenizer(texts, vocab_size=300).save_pretrained(ckpt)
    cfg = t5edu.T5Config(vocab_size=300, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    torch.manual_seed(0)
    t5edu.T5ForConditionalGeneration(cfg).save_pretrained(ckpt)
    out = tmp_path / "res.json"
    argv = ["evaluate", "--model", str(ckpt), "--task", "rte,cb", "--task", "axg", "--data",
            str(DATA), "--limit", "2", "--output", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| RTE |" in printed and "| CB |" in printed and "| AX-g |" in printed
    assert "SuperGLUE score:" in printed and "(partial: 2 of 8 tasks)" in printed
    saved = json.loads(out.read_text())
    assert set(saved["tasks"]) == {"rte", "cb", "axg"} and saved["tasks"]["rte"]["n"] == 2
    assert 0.0 <= saved["superglue_score"] <= 100.0


def test_cli_names_a_missing_tokenizer(tmp_path, capsys):
    cfg = t5edu.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    t5edu.T5ForConditionalGeneration(cfg).save_pretrained(tmp_path)
    argv = ["evaluate", "--model", str(tmp_path), "--task", "rte", "--data", str(DATA)]
    with pytest.raises(SystemExit) as exit_info:  # a usage error: one line, exit 2
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "spiece.model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--model", "/no/such/dir", "--task", "cb", "--data", "."], "--model: no"),
        (["format", "--task", "cb", "--limit", "-1"], "--limit: must be a positive integer"),
        (["format", "--task", "cb"], "--data DIR is required"),
        (["format", "--task", "cb", "--data", "/no/such/dir"], "or pass --source hf"),
    ],
)
def test_cli_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
