"""Generated text back to what SuperGLUE's metrics compare; garbage scores as wrong, never crashes.

Chapter 14. Follows the T5 codebase's `t5/data/postprocessors.py`: a label word maps to its class
index and anything else to -1 (`string_label_to_class_id`), WSC's generated referent is compared
with the candidate span ignoring case and determiners (`wsc_simple`), MultiRC answers are grouped
by question, and ReCoRD's one-example-per-answer copies are scored once per query
(`metrics.deduplicate_metric`).
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


def _content_words(text: str) -> set[str]:
    return {w for w in clean_text(text).lower().split() if w not in _DETERMINERS}


def wsc_referent_matches(prediction, referent: str) -> bool:
    """Whether generated text names the candidate referent (T5's `wsc_simple` rule).

    Case and determiners are ignored; one word set must contain the other ("fuzzy bunny" matches
    "bunny"), and a possessive on one side only ("Bob" vs "Bob's hat") is no match. Empty text
    never matches.
    """
    pred, ref = clean_text(prediction), clean_text(referent)
    if ("'" in pred) != ("'" in ref):
        return False
    p, r = _content_words(pred), _content_words(ref)
    if not p or not r:
        return False
    return p <= r or r <= p


def prediction_value(example: Text2TextExample, text) -> int | str:
    """What the task's metric compares with the gold value, from one generated text.

    Label tasks: the class index or -1; WSC: 1 if the text names `example.targets` (the
    candidate) else 0, compared with the row's label; ReCoRD: the stripped text.
    """
    spec = get_task(example.task)
    if spec.name == "wsc":
        return int(wsc_referent_matches(text, example.targets))
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
