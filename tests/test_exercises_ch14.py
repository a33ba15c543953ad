"""Chapter 14's exercises: typical wrong answers fail with a verdict that names what is wrong,
and the expected values agree with references the package did not write (scikit-learn, torch).

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

import math
import statistics
import warnings
from collections import Counter

import pytest
import torch
from sklearn import metrics as skm

import t5edu.exercises.ch14 as ch14
from t5edu.exercises import REGISTRY


def _format_in_row_order(task, row):  # the fields as the JSON row lists them, not T5's order
    parts = [task] + [f"{k}: {v}" for k, v in row.items() if k not in ("idx", "label")]
    return " ".join(parts), ch14._format_solution(task, row)[1]


def _format_label_as_text(task, row):  # str(label): right for BoolQ and CB, '0' for COPA
    inputs, target = ch14._format_solution(task, row)
    return inputs, str(row["label"]) if "label" in row else target


def _format_labeled_only(task, row):  # a test row has no label: row["label"] raises
    inputs, _ = ch14._format_solution(task, row)
    return ch14._format_solution(task, {**row, "label": row["label"]})


def _majority(of_eval=False, present_classes_only=False, fraction=False):
    def fn(train_labels, eval_labels, num_classes):
        top = Counter(eval_labels if of_eval else train_labels).most_common(1)[0][0]
        preds = [top] * len(eval_labels)
        labels = None if present_classes_only else list(range(num_classes))
        acc = skm.accuracy_score(eval_labels, preds)
        f1 = skm.f1_score(eval_labels, preds, labels=labels, average="macro", zero_division=0)
        return (acc, f1) if fraction else (100 * acc, 100 * f1)

    return fn


def _multirc(invalid_as_negative=False, option_accuracy=False):
    def fn(labels, predictions, questions):
        preds = [max(p, 0) for p in predictions] if invalid_as_negative else predictions
        f1a, em = ch14._multirc_solution(labels, preds, questions)
        if option_accuracy:
            em = 100 * sum(y == p for y, p in zip(labels, predictions, strict=True)) / len(labels)
        return f1a, em

    return fn


def _record(first_answer_only=False, mean_over_answers=False, no_normalization=False):
    def fn(predictions, answers):
        if first_answer_only:
            return ch14._record_solution(predictions, [a[:1] for a in answers])
        if no_normalization:  # F1 on raw tokens, EM as raw string equality
            f1 = em = 0.0
            for p, golds in zip(predictions, answers, strict=True):
                f1 += max(2 * sum((Counter(p.split()) & Counter(a.split())).values())
                          / max(len(p.split()) + len(a.split()), 1) for a in golds)  # fmt: skip
                em += max(p == a for a in golds)
            return 100 * f1 / len(answers), 100 * em / len(answers)
        if mean_over_answers:
            per = [[ch14._record_solution([p], [(a,)]) for a in golds]
                   for p, golds in zip(predictions, answers, strict=True)]  # fmt: skip
            f1 = sum(sum(s[0] for s in q) / len(q) for q in per) / len(per)
            em = sum(sum(s[1] for s in q) / len(q) for q in per) / len(per)
            return f1, em
        return ch14._record_solution(predictions, answers)

    return fn


def _population_std(scores):
    return statistics.fmean(scores), statistics.pstdev(scores)


def _torch_std(scores):  # torch's unbiased std is NaN for one score
    x = torch.tensor(scores, dtype=torch.float64)
    with warnings.catch_warnings():  # torch warns that one score has no degrees of freedom
        warnings.simplefilter("ignore")
        return x.mean().item(), x.std().item()


def _welch(pooled=False, without_n=False):
    def fn(a, b):
        (ma, sa), (mb, sb) = ch14._summary_solution(a), ch14._summary_solution(b)
        na, nb = len(a), len(b)
        if pooled:  # Student's t: one variance for both samples
            sp2 = ((na - 1) * sa**2 + (nb - 1) * sb**2) / (na + nb - 2)
            return (ma - mb) / math.sqrt(sp2 * (1 / na + 1 / nb))
        if without_n:  # the spread of the scores, not of their means
            return (ma - mb) / math.sqrt(sa**2 + sb**2)
        return (ma - mb) / math.sqrt(sa**2 / na + sb**2 / nb)

    return fn


WRONG = [
    ("ch14.format_row", _format_in_row_order, "output[0]: expected 'boolq passage:"),
    ("ch14.format_row", _format_label_as_text, "output[1]: expected 'choice1', got '0'"),
    ("ch14.format_row", _format_labeled_only, "raised KeyError: 'label'"),
    ("ch14.majority_baseline", _majority(of_eval=True), "output[0]: expected 20, got 73.3333"),
    ("ch14.majority_baseline", _majority(present_classes_only=True), "output[1]: expected 29.6"),
    ("ch14.majority_baseline", _majority(fraction=True), "output[0]: expected 60, got 0.6"),
    ("ch14.multirc_scores", _multirc(invalid_as_negative=True), "output[0]: expected"),
    ("ch14.multirc_scores", _multirc(option_accuracy=True), "output[1]: expected 50, got"),
    ("ch14.record_scores", _record(first_answer_only=True), "output[0]: expected"),
    ("ch14.record_scores", _record(mean_over_answers=True), "output[0]: expected"),
    ("ch14.record_scores", _record(no_normalization=True), "output[0]: expected"),
    ("ch14.seed_summary", _population_std, "output[1]: expected"),
    ("ch14.seed_summary", _torch_std, "output[1]: expected 0, got nan"),
    ("ch14.welch_t", _welch(pooled=True), "exceeds the tolerance"),
    ("ch14.welch_t", _welch(without_n=True), "exceeds the tolerance"),
]  # fmt: skip


def test_majority_and_multirc_expected_values_equal_sklearn():
    for case in REGISTRY["ch14.majority_baseline"].cases():
        top = Counter(case["train_labels"]).most_common(1)[0][0]
        preds = [top] * len(case["eval_labels"])
        classes = list(range(case["num_classes"]))
        want = (
            100 * skm.accuracy_score(case["eval_labels"], preds),
            100
            * skm.f1_score(
                case["eval_labels"], preds, labels=classes, average="macro", zero_division=0
            ),
        )
        assert ch14._majority_expected(case) == pytest.approx(want, abs=1e-12)
    for case in REGISTRY["ch14.multirc_scores"].cases():
        y, p = case["labels"], case["predictions"]
        assert -1 in p  # the cases exercise the invalid-prediction rule
        wrong_class = [q if q in (0, 1) else 1 - t for t, q in zip(y, p, strict=True)]
        f1a = ch14._multirc_expected(case)[0]
        assert f1a == pytest.approx(100 * skm.f1_score(y, wrong_class), abs=1e-12)


def test_seed_summary_and_welch_expected_values_equal_torch():
    for case in REGISTRY["ch14.seed_summary"].cases():
        x = torch.tensor(case["scores"], dtype=torch.float64)
        want_std = x.std().item() if len(x) > 1 else 0.0  # torch: sample std (correction=1)
        assert ch14._summary_expected(case) == pytest.approx((x.mean().item(), want_std), abs=1e-12)
    for case in REGISTRY["ch14.welch_t"].cases():
        a, b = (torch.tensor(case[k], dtype=torch.float64) for k in ("a", "b"))
        want = (a.mean() - b.mean()) / (a.var() / len(a) + b.var() / len(b)).sqrt()
        assert ch14._welch_expected(case) == pytest.approx(want.item(), rel=1e-12)


def test_format_cases_cover_every_label_encoding_and_unlabelled_rows():
    cases = REGISTRY["ch14.format_row"].cases()
    assert {c["task"] for c in cases} == {"boolq", "cb", "copa", "rte"}
    kinds = {(c["task"], type(c["row"].get("label")).__name__) for c in cases}
    assert {("boolq", "bool"), ("cb", "str"), ("copa", "int"), ("rte", "str")} <= kinds
    assert sum("label" not in c["row"] for c in cases) == 3
