"""SuperGLUE's metrics, as the benchmark defines them, in percent (0-100) like its leaderboard.

Chapter 14. Sources: the SuperGLUE paper (Wang et al., 2019, Table 1: the metric of each task and
the overall score), the T5 codebase (`t5/evaluation/metrics.py`: invalid predictions counted as
wrong, MultiRC F1a and per-question exact match, ReCoRD deduplication), the official ReCoRD/SQuAD
evaluation script (answer normalisation, token F1, max over gold answers) and the Winogender
gender-parity scorer (the share of male/female minimal pairs given the same prediction).
Standard metrics come from scikit-learn (imported on first use, not at `import t5edu`).

Predictions are class indices where -1 (`postprocess.INVALID`) marks text that was no label word;
it never counts as correct.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

from t5edu.superglue.postprocess import INVALID, dedupe_by_group
from t5edu.superglue.tasks import MAIN_TASKS, get_task


def _check(labels: Sequence, predictions: Sequence) -> None:
    if len(labels) != len(predictions):
        raise ValueError(
            f"predictions must have one entry per label; got {len(predictions)} for "
            f"{len(labels)} labels"
        )
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    if any(label is None for label in labels):
        raise ValueError(
            "labels must all be known; got None (an unlabelled split cannot be scored)"
        )


def _invalid_as_wrong(labels: Sequence[int], predictions: Sequence[int]) -> list[int]:
    """Binary predictions with every invalid one replaced by the wrong class (T5's rule)."""
    return [p if p in (0, 1) else 1 - y for y, p in zip(labels, predictions, strict=True)]


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Percent of predictions equal to the label (`sklearn.metrics.accuracy_score` x 100)."""
    from sklearn.metrics import accuracy_score

    _check(labels, predictions)
    return 100.0 * float(accuracy_score(labels, predictions))


def f1_macro(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> float:
    """Unweighted mean over classes 0..num_classes-1 of each class's F1 (CB's "Avg. F1").

    An invalid prediction is a miss for the true class and a false positive for none, as in
    T5's `mean_multiclass_f1` (sklearn `f1_score(labels=range(n), average="macro")`).
    """
    from sklearn.metrics import f1_score

    _check(labels, predictions)
    return 100.0 * float(
        f1_score(
            labels, predictions, labels=list(range(num_classes)), average="macro", zero_division=0
        )
    )


def f1_binary(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """F1 of the positive class (1), invalid predictions counted as wrong (MultiRC's F1a)."""
    from sklearn.metrics import f1_score

    _check(labels, predictions)
    preds = _invalid_as_wrong(labels, predictions)
    return 100.0 * float(f1_score(labels, preds, zero_division=0))


def matthews(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Matthews correlation x 100 (AX-b): (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).

    An invalid prediction (-1) enters sklearn's multiclass MCC as a class of its own that no
    label has, as in T5's CoLA metric: it never agrees with a label, and an all-invalid (or any
    constant) prediction scores 0, not -100.
    """
    from sklearn.metrics import matthews_corrcoef

    _check(labels, predictions)
    return 100.0 * float(matthews_corrcoef(labels, predictions))


def exact_match_by_group(labels: Sequence[int], predictions: Sequence[int], groups) -> float:
    """Percent of groups (MultiRC questions) whose every answer option is predicted right."""
    _check(labels, predictions)
    if len(groups) != len(labels):
        raise ValueError(
            f"groups must have one entry per label; got {len(groups)} for {len(labels)}"
        )
    correct: dict = {}
    for y, p, g in zip(labels, predictions, groups, strict=True):
        correct[g] = correct.get(g, True) and p == y
    return 100.0 * sum(correct.values()) / len(correct)


def gender_parity(predictions: Sequence[int], hypotheses: Sequence[str]) -> float:
    """Percent of AX-g minimal pairs whose two premises (he / she) get the same prediction.

    Rows 2k and 2k+1 form a pair and must share their hypothesis, as in the official data and
    the Winogender scorer. A pair with an invalid prediction never counts as equal.

    Raises:
        ValueError: if the count is odd or rows 2k, 2k+1 have different hypotheses.
    """
    if len(predictions) != len(hypotheses):
        raise ValueError(
            f"hypotheses must have one entry per prediction; got {len(hypotheses)} for "
            f"{len(predictions)}"
        )
    if len(predictions) == 0 or len(predictions) % 2:
        raise ValueError(f"predictions must come in pairs; got {len(predictions)} rows")
    same = 0
    for k in range(0, len(predictions), 2):
        if hypotheses[k] != hypotheses[k + 1]:
            raise ValueError(
                f"hypotheses of rows {k} and {k + 1} differ, so they are no gender pair: "
                f"{hypotheses[k]!r} vs {hypotheses[k + 1]!r}"
            )
        a, b = predictions[k], predictions[k + 1]
        same += a == b and a != INVALID
    return 100.0 * same / (len(predictions) // 2)


def normalize_answer(text: str) -> str:
    """The official SQuAD/ReCoRD normalisation: lower-case, drop punctuation, drop the articles
    a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD token F1 in [0, 1] between two normalised bags of words (0 when nothing shared)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def record_metrics(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict:
    """ReCoRD's token F1 and exact match, each the max over a query's gold answers, x 100."""
    _check(answers, predictions)
    f1 = em = 0.0
    for i, (pred, golds) in enumerate(zip(predictions, answers, strict=True)):
        if not golds:
            raise ValueError(f"answers[{i}] is empty; every scored query needs a gold answer")
        f1 += max(token_f1(pred, g) for g in golds)
        em += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
    return {"f1": 100.0 * f1 / len(answers), "em": 100.0 * em / len(answers)}


def task_metrics(task: str, examples, values: Sequence) -> dict[str, float]:
    """Every metric of `task` from formatted examples and `postprocess.prediction_value`s."""
    spec = get_task(task)
    if len(examples) != len(values):
        raise ValueError(
            f"values must have one entry per example; got {len(values)} for {len(examples)}"
        )
    if spec.name == "record":
        kept, vals = dedupe_by_group(examples, values)
        return record_metrics(vals, [ex.answers for ex in kept])
    labels = [ex.label for ex in examples]
    if spec.name == "cb":
        return {"f1_macro": f1_macro(labels, values, 3), "accuracy": accuracy(labels, values)}
    if spec.name == "multirc":
        return {
            "f1a": f1_binary(labels, values),
            "em": exact_match_by_group(labels, values, [ex.group for ex in examples]),
        }
    if spec.name == "axb":
        return {"mcc": matthews(labels, values), "accuracy": accuracy(labels, values)}
    if spec.name == "axg":
        hyps = [ex.group for ex in examples]
        return {"gender_parity": gender_parity(values, hyps), "accuracy": accuracy(labels, values)}
    return {"accuracy": accuracy(labels, values)}


def task_score(task: str, metrics: Mapping[str, float]) -> float:
    """The task's leaderboard score: the mean of its headline metrics (CB: F1 and accuracy)."""
    spec = get_task(task)
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        raise ValueError(f"metrics for {spec.name} lack {missing}; got {sorted(metrics)}")
    return sum(float(metrics[m]) for m in spec.metrics) / len(spec.metrics)


def superglue_score(scores: Mapping[str, Mapping[str, float]], require_all: bool = True) -> float:
    """The SuperGLUE score: the mean over the 8 tasks of each task's score (`task_score`).

    Tasks with two metrics (CB, MultiRC, ReCoRD) average them first; the diagnostics AX-b and
    AX-g are reported apart and never enter the mean, as on the leaderboard.

    Raises:
        ValueError: if `require_all` and a task is missing (naming them), or no task is given.
    """
    main = {get_task(t).name: m for t, m in scores.items() if not get_task(t).diagnostic}
    missing = [t for t in MAIN_TASKS if t not in main]
    if require_all and missing:
        raise ValueError(
            f"scores lack the tasks {missing}; pass require_all=False for a partial mean"
        )
    if not main:
        raise ValueError(
            f"scores must include at least one of {list(MAIN_TASKS)}; got {list(scores)}"
        )
    return sum(task_score(t, m) for t, m in main.items()) / len(main)
