"""Generated text back to what SuperGLUE's metrics compare; garbage scores as wrong, never crashes.

Chapter 14. Follows the T5 codebase's `t5/data/postprocessors.py`: a label word maps to its class
index and anything else to -1 (`string_label_to_class_id`), WSC's generated referent is compared
with the candidate span ignoring case and determiners, an empty one being -1 (`wsc_simple`),
MultiRC answers are grouped by question, and ReCoRD's one-example-per-answer copies are scored
once per query (`metrics.deduplicate_metric`).
"""

from __future__ import annotations

from collections.abc import Sequence

from t5edu.superglue.preprocessors import Text2TextExample
from t5edu.superglue.tasks import get_task

INVALID = -1  # the class index of text that is no label word; every metric counts it as wrong

_DETERMINERS = frozenset(
    "a an few her his each every many much my our some that the their these this those which "
    "whose your".split()
)


def clean_text(text) -> str:
    """Any model output (str, bytes, None, ...) as a stripped str; never raises."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return str(text).strip()


def text_to_label(text, label_names: Sequence[str]) -> int:
    """Index of the generated label word in `label_names`, or `INVALID` (-1) for anything else.

    Matching is exact after stripping whitespace, as T5's: `"true"` is not `"True"`.
    """
    text = clean_text(text)
    return label_names.index(text) if text in label_names else INVALID


def _wsc_words(text) -> list[str]:
    """T5's `clean` inside `wsc_simple`: stripped, lower-cased, split on single spaces (so a
    double space leaves an empty word, as in T5), determiners dropped."""
    return [w for w in clean_text(text).lower().split(" ") if w not in _DETERMINERS]


def wsc_prediction_value(prediction, referent: str) -> int:
    """What T5's `postprocessors.wsc_simple` makes of a generated WSC referent: 1, 0 or -1.

    Source: google-research/text-to-text-transfer-transformer, `t5/data/postprocessors.py`,
    `wsc_simple` (the version with the empty-prediction guard). Both texts are stripped,
    lower-cased, split on single spaces and rid of determiners ("the", "his", ...). Then:

    - `INVALID` (-1) when nothing of the prediction is left ("", " ", "The"): an empty answer
      is compared with the row's label like any other value, so it is wrong whether the label
      is 1 or 0 (without this guard "" would score as a correct "not the referent");
    - 0 when exactly one side has an apostrophe ("Bob" vs "Bob's hat");
    - 1 when one word set contains the other ("fuzzy bunny" vs "bunny"), else 0.

    Any object is accepted (`clean_text`: None, bytes, ...); never raises.
    """
    words = _wsc_words(prediction)
    if not " ".join(words):  # T5 tests the joined string, so ["", ""] (" ") is not empty
        return INVALID
    pred, ref = " ".join(words), " ".join(_wsc_words(referent))
    if ("'" in pred) != ("'" in ref):
        return 0
    p, r = set(words), set(ref.split(" "))
    return int(p <= r or r <= p)


def wsc_referent_matches(prediction, referent: str) -> bool:
    """Whether generated text names the candidate referent: `wsc_prediction_value(...) == 1`.

    Case and determiners are ignored; one word set must contain the other ("fuzzy bunny" matches
    "bunny"), and a possessive on one side only ("Bob" vs "Bob's hat") is no match. Empty text
    never matches; note that for scoring it is not "no match" (0) but -1, which is wrong for
    every label (`wsc_prediction_value`).
    """
    return wsc_prediction_value(prediction, referent) == 1


def prediction_value(example: Text2TextExample, text) -> int | str:
    """What the task's metric compares with the gold value, from one generated text.

    Label tasks: the class index or -1; WSC: 1 if the text names `example.targets` (the
    candidate), 0 if it names something else, -1 if it names nothing (`wsc_prediction_value`),
    compared with the row's label; ReCoRD: the stripped text.
    """
    spec = get_task(example.task)
    if spec.name == "wsc":
        return wsc_prediction_value(text, example.targets)
    if spec.name == "record":
        return clean_text(text)
    return text_to_label(text, spec.label_names)


def group_by(examples: Sequence[Text2TextExample], values: Sequence) -> dict:
    """`{example.group: [(gold label, value), ...]}` in first-seen order (MultiRC questions)."""
    if len(examples) != len(values):
        raise ValueError(
            f"values must have one entry per example; got {len(values)} for {len(examples)}"
        )
    groups: dict = {}
    for ex, v in zip(examples, values, strict=True):
        groups.setdefault(ex.group, []).append((ex.label, v))
    return groups


def dedupe_by_group(examples: Sequence[Text2TextExample], values: Sequence | None = None):
    """The first example (and value) of each group: ReCoRD's per-answer copies scored once."""
    seen, keep = set(), []
    for i, ex in enumerate(examples):
        key = ex.group if ex.group is not None else ("row", i)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    kept = [examples[i] for i in keep]
    return kept if values is None else (kept, [values[i] for i in keep])
