"""Exercises of chapter 14 (SuperGLUE as text-to-text). Expected outputs come from
`t5edu.superglue` (its formatter follows the T5 codebase; its metrics delegate to scikit-learn),
from `t5edu.train.transfer.summarize` (the mean and spread over seeds) and from SciPy's Welch
t-test (`scipy.stats.ttest_ind(..., equal_var=False)`), all computed at check time.

Labels and predictions are class indices; -1 marks generated text that was no label word.
Scores are in percent, as on the leaderboard.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from t5edu.exercises._core import Exercise, register, seeded
from t5edu.superglue import exact_match_by_group, f1_binary, preprocess, record_metrics
from t5edu.superglue.metrics import accuracy, f1_macro

_WORDS = (
    "the lake river museum bakery road winter summer shed bus bridge garden tower market "
    "closed opened froze flooded left stayed painted sold Anna Tom Mia Ravi Nora Lena was "
    "is had not never always after before because"
).split()


def _sentence(gen: torch.Generator, n: int) -> str:
    picks = torch.randint(len(_WORDS), (n,), generator=gen).tolist()
    return " ".join(_WORDS[i] for i in picks).capitalize() + "."


def _pick(gen: torch.Generator, k: int) -> int:
    return int(torch.randint(k, (1,), generator=gen))


# --- ch14.format_row: one row of BoolQ, CB, COPA or RTE as T5's input and target (exercise 1) --


def _format_cases() -> list[dict]:
    """Rows in the official schema and key order (BoolQ's question before its passage, ...);
    the last three are unlabelled test rows."""
    cases = []
    for seed, task, labeled in [
        (0, "boolq", True),
        (1, "boolq", True),
        (2, "cb", True),
        (3, "cb", True),
        (4, "cb", True),
        (5, "copa", True),
        (6, "copa", True),
        (7, "rte", True),
        (8, "rte", True),
        (9, "boolq", False),
        (10, "cb", False),
        (11, "copa", False),
    ]:
        g = seeded(seed)
        if task == "boolq":
            question = _sentence(g, 5).rstrip(".").lower()
            row = {"question": question, "passage": _sentence(g, 12), "idx": seed}
            label = bool(_pick(g, 2))
        elif task == "copa":
            row = {"premise": _sentence(g, 6), "choice1": _sentence(g, 4)}
            row["choice2"] = _sentence(g, 4)
            row |= {"question": ("cause", "effect")[_pick(g, 2)], "idx": seed}
            label = _pick(g, 2)
        else:
            row = {"premise": _sentence(g, 10), "hypothesis": _sentence(g, 5), "idx": seed}
            names = ("entailment", "contradiction", "neutral")
            rte = ("entailment", "not_entailment")
            label = names[_pick(g, 3)] if task == "cb" else rte[_pick(g, 2)]
        if labeled:
            row["label"] = label
        cases.append({"task": task, "row": row})
    return cases


def _format_expected(inputs: dict) -> tuple[str, str]:
    (ex,) = preprocess(inputs["task"], inputs["row"], labeled=False)
    return ex.inputs, ex.targets


def _format_solution(task, row):
    fields = {
        "boolq": ["passage", "question"],
        "cb": ["hypothesis", "premise"],
        "copa": ["choice1", "choice2", "premise", "question"],
        "rte": ["hypothesis", "premise"],
    }[task]
    words = {
        "boolq": ["False", "True"],
        "cb": ["entailment", "contradiction", "neutral"],
        "copa": ["choice1", "choice2"],
        "rte": ["entailment", "not_entailment"],
    }[task]
    inputs = " ".join([task] + [f"{k}: {row[k]}" for k in fields])
    if "label" not in row:
        return inputs, "<unk>"
    label = row["label"]
    return inputs, words[words.index(label) if isinstance(label, str) else int(label)]


register(
    Exercise(
        id="ch14.format_row",
        task="format_row(task, row) -> (inputs, targets) for boolq/cb/copa/rte: "
        "'task field: value ...' with the fields in T5's order, the label's word as target, "
        "'<unk>' for a row without label",
        cases=_format_cases,
        expected=_format_expected,
        solution=lambda: _format_solution,
    )
)

# --- ch14.majority_baseline: always predicting the most frequent training label (exercise 3) --


def _majority_cases() -> list[dict]:
    """Train and eval labels drawn from different class shares; every train list has a unique
    most frequent label. Case 3 has no class 2 in its eval labels, case 4 has one class only."""
    cases = []
    for seed, n_train, n_eval, train_p, eval_p in [
        (0, 40, 20, [0.7, 0.3], [0.6, 0.4]),
        (1, 30, 15, [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]),  # majorities differ
        (2, 25, 12, [0.45, 0.55], [0.7, 0.3]),  # majorities differ
        (3, 21, 10, [0.5, 0.3, 0.2], [0.6, 0.4, 0.0]),  # class 2 absent from eval
        (4, 15, 8, [0.1, 0.9], [0.0, 1.0]),
    ]:
        g = seeded(seed)
        train = torch.multinomial(torch.tensor(train_p), n_train, True, generator=g).tolist()
        evals = torch.multinomial(torch.tensor(eval_p), n_eval, True, generator=g).tolist()
        top = Counter(train).most_common(2)
        assert len(top) == 1 or top[0][1] > top[1][1], f"case seed {seed}: tied train majority"
        cases.append({"train_labels": train, "eval_labels": evals, "num_classes": len(train_p)})
    return cases


def _majority_expected(inputs: dict) -> tuple[float, float]:
    top = Counter(inputs["train_labels"]).most_common(1)[0][0]
    labels = inputs["eval_labels"]
    preds = [top] * len(labels)
    return accuracy(labels, preds), f1_macro(labels, preds, inputs["num_classes"])


def _majority_solution(train_labels, eval_labels, num_classes):
    top = max(range(num_classes), key=train_labels.count)
    acc = 100 * sum(y == top for y in eval_labels) / len(eval_labels)
    share = acc / 100  # the predicted class's F1 is 2p / (1 + p); every other class's is 0
    return acc, 100 * (2 * share / (1 + share)) / num_classes


register(
    Exercise(
        id="ch14.majority_baseline",
        task="majority_baseline(train_labels, eval_labels, num_classes) -> (accuracy, macro F1) "
        "in percent of predicting the most frequent train label for every eval label, the macro "
        "F1 averaged over all num_classes classes",
        cases=_majority_cases,
        expected=_majority_expected,
        solution=lambda: _majority_solution,
        atol=1e-9,
        why_tol="in percent; float64 round-off",
    )
)

# --- ch14.multirc_scores: F1a over options and exact match per question (exercise 4) ---------


def _multirc_cases() -> list[dict]:
    """Paragraphs of 1-3 questions of 2-5 options each, the options of a question contiguous
    (as in the data); predictions are the labels with some flipped and some invalid (-1)."""
    cases = []
    for seed, paragraphs in [(0, 2), (1, 3), (2, 4), (3, 5)]:
        g = seeded(seed)
        labels, preds, questions = [], [], []
        for p in range(paragraphs):
            for q in range(1 + _pick(g, 3)):
                n = 2 + _pick(g, 4)
                y = torch.randint(2, (n,), generator=g)  # (n,) labels of the question's options
                u = torch.rand(n, generator=g)
                pred = torch.where(u < 0.2, 1 - y, y)  # a fifth flipped
                pred = torch.where(u > 0.85, torch.full_like(y, -1), pred)  # some invalid
                labels += y.tolist()
                preds += pred.tolist()
                questions += [(p, q)] * n
        cases.append({"labels": labels, "predictions": preds, "questions": questions})
    return cases


def _multirc_expected(inputs: dict) -> tuple[float, float]:
    y, p, q = inputs["labels"], inputs["predictions"], inputs["questions"]
    return f1_binary(y, p), exact_match_by_group(y, p, q)


def _multirc_solution(labels, predictions, questions):
    tp = sum(y == 1 and p == 1 for y, p in zip(labels, predictions, strict=True))
    fp = sum(
        y == 0 and p != 0 for y, p in zip(labels, predictions, strict=True)
    )  # -1 on a 0 counts as 1
    fn = sum(y == 1 and p != 1 for y, p in zip(labels, predictions, strict=True))
    f1a = 100 * 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    right: dict = {}
    for y, p, q in zip(labels, predictions, questions, strict=True):
        right[q] = right.get(q, True) and y == p
    return f1a, 100 * sum(right.values()) / len(right)


register(
    Exercise(
        id="ch14.multirc_scores",
        task="multirc_scores(labels, predictions, questions) -> (F1a, exact match) in percent: "
        "F1 of class 1 over all options with an invalid -1 counted as the wrong class, and the "
        "share of questions whose every option is right",
        cases=_multirc_cases,
        expected=_multirc_expected,
        solution=lambda: _multirc_solution,
        atol=1e-9,
        why_tol="in percent; float64 round-off",
    )
)

# --- ch14.record_scores: SQuAD-normalised token F1 and EM, max over answers (exercise 5) ------

# Entities of a passage, each with another spelling the passage also uses (ReCoRD's gold
# answers are every span that names the hidden entity).
_ENTITIES = {
    "Ravi Sen": "Sen",
    "the Orbit Lab": "Orbit Lab",
    "U.S. Navy": "Navy",
    "Nora": "Nora Quinn",
    "New York City": "New York",
    "Dr. Lena Park": "Lena Park",
}


def _perturb(answer: str, kind: int) -> str:
    """A prediction from an answer: as is, other case and punctuation, an article added, one
    word dropped, an extra word, or nothing."""
    words = answer.split()
    return [
        answer,
        answer.upper().replace(".", "") + "!",
        "The " + answer,
        " ".join(words[1:]) or answer,
        answer + " team",
        "",
    ][kind]


def _record_cases() -> list[dict]:
    """Queries with one or two gold answers (two spellings of the entity, sorted, so the
    prediction often matches the second); the prediction is a perturbed answer or, for about
    one query in five, another entity."""
    names = list(_ENTITIES)
    cases = []
    for seed in range(4):
        g = seeded(seed)
        predictions, answers = [], []
        for _ in range(6):
            e = _pick(g, len(names))
            gold = sorted({names[e], _ENTITIES[names[e]]} if _pick(g, 2) else {names[e]})
            source = gold[_pick(g, len(gold))]
            if _pick(g, 5) == 0:  # a wrong entity
                source = names[(e + 3) % len(names)]
            predictions.append(_perturb(source, _pick(g, 6)))
            answers.append(tuple(gold))
        cases.append({"predictions": predictions, "answers": answers})
    return cases


def _record_expected(inputs: dict) -> tuple[float, float]:
    scores = record_metrics(inputs["predictions"], inputs["answers"])
    return scores["f1"], scores["em"]


def _record_solution(predictions, answers):
    import re
    import string

    def normalize(text):
        text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())

    def f1(pred, gold):
        p, a = normalize(pred).split(), normalize(gold).split()
        same = sum((Counter(p) & Counter(a)).values())
        return 0.0 if same == 0 else 2 * same / (len(p) + len(a))  # 2PR/(P+R), simplified

    f1_sum = sum(
        max(f1(p, a) for a in golds) for p, golds in zip(predictions, answers, strict=True)
    )
    em_sum = sum(
        max(normalize(p) == normalize(a) for a in golds)
        for p, golds in zip(predictions, answers, strict=True)
    )
    return 100 * f1_sum / len(predictions), 100 * em_sum / len(predictions)


register(
    Exercise(
        id="ch14.record_scores",
        task="record_scores(predictions, answers) -> (token F1, exact match) in percent: each "
        "query's best score over its gold answers, after SQuAD's normalisation",
        cases=_record_cases,
        expected=_record_expected,
        solution=lambda: _record_solution,
        atol=1e-9,
        why_tol="in percent; float64 round-off",
    )
)

# --- ch14.seed_summary and ch14.welch_t: is a gap over seeds more than noise? (exercise 8) ----


def _scores(seed: int, n: int, center: float, spread: float) -> list[float]:
    x = center + spread * torch.randn(n, generator=seeded(seed), dtype=torch.float64)
    return [round(v, 3) for v in x.clamp(0, 1).tolist()]  # 3 decimals, as EMs print


def _summary_cases() -> list[dict]:
    return [
        {"scores": _scores(0, 3, 0.18, 0.06)},
        {"scores": _scores(1, 5, 0.10, 0.02)},
        {"scores": _scores(2, 2, 0.50, 0.10)},
        {"scores": _scores(3, 1, 0.30, 0.05)},  # one seed: no spread
        {"scores": [0.984, 0.984, 0.984]},
    ]


def _summary_expected(inputs: dict) -> tuple[float, float]:
    from t5edu.train.transfer import summarize

    curves = [{"t/exact_match": x} for x in inputs["scores"]]
    runs = [{"init": "pre-trained", "seed": i, "curve": [c]} for i, c in enumerate(curves)]
    s = summarize(runs, ["t"])["pre-trained"]["t"]
    return s["mean"], s["std"]


def _summary_solution(scores):
    n = len(scores)
    mean = sum(scores) / n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in scores) / (n - 1)) if n > 1 else 0.0


register(
    Exercise(
        id="ch14.seed_summary",
        task="seed_summary(scores) -> (mean, std) over seeds, std the sample standard "
        "deviation (divided by n - 1), 0.0 for a single score",
        cases=_summary_cases,
        expected=_summary_expected,
        solution=lambda: _summary_solution,
        atol=1e-12,
        why_tol="float64 round-off on scores in [0, 1]",
    )
)


def _welch_cases() -> list[dict]:
    return [
        {"a": _scores(10, 3, 0.18, 0.06), "b": _scores(11, 3, 0.10, 0.016)},
        {"a": _scores(12, 5, 0.30, 0.05), "b": _scores(13, 3, 0.25, 0.01)},  # unequal n and var
        {"a": _scores(14, 4, 0.20, 0.02), "b": _scores(15, 8, 0.22, 0.08)},  # a negative gap
        {"a": _scores(16, 2, 0.60, 0.01), "b": _scores(17, 6, 0.50, 0.03)},
    ]


def _welch_expected(inputs: dict) -> float:
    from scipy.stats import ttest_ind

    return float(ttest_ind(inputs["a"], inputs["b"], equal_var=False).statistic)


def _welch_solution(a, b):
    (ma, sa), (mb, sb) = _summary_solution(a), _summary_solution(b)
    return (ma - mb) / math.sqrt(sa**2 / len(a) + sb**2 / len(b))


register(
    Exercise(
        id="ch14.welch_t",
        task="welch_t(a, b) -> float: (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b), "
        "s the sample standard deviation (Welch's t statistic)",
        cases=_welch_cases,
        expected=_welch_expected,
        solution=lambda: _welch_solution,
        atol=0.0,
        rtol=1e-9,
        why_tol="relative; float64 round-off",
    )
)
