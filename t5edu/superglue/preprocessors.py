"""SuperGLUE rows (official JSONL schema) to T5's text-to-text (inputs, targets) examples.

Chapter 14. Each function reads one row as it appears in the official release (e.g. a line of
`BoolQ/val.jsonl`) and returns the example(s) T5 trains and evaluates on, formatted as the T5
codebase does (google-research/text-to-text-transfer-transformer: `preprocessors.glue` with the
feature orders of `glue_utils.get_glue_text_preprocessor`, `preprocessors.record` and
`preprocessors.wsc_simple`; the label words of TFDS' `super_glue` builder, and its `wsc.fixed`
span repairs, `_fix_wst`):

- BoolQ  `boolq passage: P question: Q` -> `False` / `True`
- CB     `cb hypothesis: H premise: P` -> `entailment` / `contradiction` / `neutral`
- COPA   `copa choice1: A choice2: B premise: P question: cause` -> `choice1` / `choice2`
- MultiRC one example per answer option, `multirc question: Q answer: A paragraph: P` with the
         `<br>` and `<b>` markup removed -> `False` / `True`
- ReCoRD one example per gold answer, `record query: Q entities: E1, E2 passage: P` with the
         `@highlight` bullets turned into sentences -> the answer entity
- RTE    `rte hypothesis: H premise: P` -> `entailment` / `not_entailment`
- WiC    `wic sentence1: S1 sentence2: S2 word: W` -> `False` / `True`
- WSC    `wsc: The city councilmen refused ... because *they* feared ...` -> the candidate referent
- AX-b, AX-g: cast as RTE (`rte hypothesis: ... premise: ...`), as T5 does.

Malformed rows raise ValueError naming the task, the row (position and `idx`) and the field.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from t5edu.superglue.tasks import get_task

UNKNOWN_TARGET = "<unk>"  # T5's target for unlabelled (test) rows


@dataclass(frozen=True)
class Text2TextExample:
    """One formatted example: the model's input text, its target text, and what scoring needs.

    `label` is the gold class index (for WSC: 1 when `targets`, the candidate span, is the
    pronoun's referent); `answers` holds every gold ReCoRD answer; `group` ties together the
    examples scored as a unit: (paragraph, question) for MultiRC, (passage, query) for ReCoRD, the
    shared hypothesis of an AX-g gender pair.
    """

    task: str
    inputs: str
    targets: str
    idx: int | tuple[int, ...]
    label: int | None = None
    answers: tuple[str, ...] = ()
    group: Hashable | None = None


class _Row:
    """A row plus where it came from, so every error can name the row and the field."""

    def __init__(self, task: str, row, index: int | None):
        self.spec = get_task(task)
        self.row = row
        idx = row.get("idx") if isinstance(row, Mapping) else None
        self.where = f"{self.spec.dirname} row" + (f" {index}" if index is not None else "")
        if idx is not None:
            self.where += f" (idx={idx})"
        if not isinstance(row, Mapping):
            raise ValueError(f"{self.where}: expected a JSON object, got {type(row).__name__}")

    def error(self, field: str, problem: str) -> ValueError:
        return ValueError(f"{self.where}: field {field!r} {problem}")

    def get(self, obj, key: str, kind, path: str | None = None):
        """`obj[key]`, checked to be of type `kind`; `path` names it in errors."""
        path = path or key
        if not isinstance(obj, Mapping) or key not in obj or obj[key] is None:
            raise self.error(path, "is missing")
        value = obj[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            want = getattr(kind, "__name__", str(kind))
            raise self.error(path, f"must be {want}, got {type(value).__name__} {value!r}")
        return value

    def text(self, key: str, obj=None, path: str | None = None) -> str:
        return self.get(self.row if obj is None else obj, key, str, path)

    def label(self, obj=None, path: str = "label") -> int:
        """The class index of a label in the task's official encoding (bool, 0/1 or a word)."""
        obj = self.row if obj is None else obj
        if not isinstance(obj, Mapping) or obj.get("label") is None:
            raise self.error(path, "is missing (a labelled split needs it)")
        value, names = obj["label"], self.spec.label_names
        name = self.spec.name
        if name in ("boolq", "wic", "wsc") and isinstance(value, bool):
            return int(value)
        if name in ("copa", "multirc") and type(value) is int and value in (0, 1):
            return value
        if name in ("cb", "rte", "axb", "axg") and isinstance(value, str) and value in names:
            return names.index(value)
        expected = {
            "boolq": "true or false",
            "wic": "true or false",
            "wsc": "true or false",
            "copa": "0 or 1",
            "multirc": "0 or 1",
        }.get(name, " or ".join(repr(n) for n in names or ()))
        raise self.error(path, f"has unknown value {value!r}; expected {expected}")

    def idx(self, obj=None, path: str = "idx") -> int:
        return self.get(self.row if obj is None else obj, "idx", int, path)


def _target(spec, label: int | None) -> str:
    return UNKNOWN_TARGET if label is None else spec.label_names[label]


def _glue_style(task: str, row, index, labeled: bool, fields, prefix: str | None = None):
    """T5's `preprocessors.glue`: `<prefix> key1: v1 key2: v2 ...` -> the label's word."""
    r = _Row(task, row, index)
    parts = [prefix or r.spec.name]
    for out_key, in_key in fields:
        parts += [f"{out_key}:", r.text(in_key)]
    label = r.label() if labeled or row.get("label") is not None else None
    return [Text2TextExample(r.spec.name, " ".join(parts), _target(r.spec, label), r.idx(), label)]


def boolq(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """BoolQ: `boolq passage: ... question: ...` -> `False`/`True` (fields sorted, as T5)."""
    return _glue_style(
        "boolq", row, index, labeled, [("passage", "passage"), ("question", "question")]
    )


def cb(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """CB: `cb hypothesis: ... premise: ...` -> `entailment`/`contradiction`/`neutral`."""
    return _glue_style(
        "cb", row, index, labeled, [("hypothesis", "hypothesis"), ("premise", "premise")]
    )


def copa(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """COPA: `copa choice1: .. choice2: .. premise: .. question: cause|effect` -> `choice1|2`."""
    fields = [(k, k) for k in ("choice1", "choice2", "premise", "question")]
    return _glue_style("copa", row, index, labeled, fields)


def rte(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """RTE: `rte hypothesis: ... premise: ...` -> `entailment`/`not_entailment`."""
    return _glue_style(
        "rte", row, index, labeled, [("hypothesis", "hypothesis"), ("premise", "premise")]
    )


def wic(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """WiC: `wic sentence1: ... sentence2: ... word: ...` -> `False`/`True`.

    T5 ignores the character offsets `start1/end1/start2/end2`; so does this.
    """
    fields = [(k, k) for k in ("sentence1", "sentence2", "word")]
    return _glue_style("wic", row, index, labeled, fields)


def axb(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """AX-b, cast as RTE: `rte hypothesis: <sentence2> premise: <sentence1>`."""
    fields = [("hypothesis", "sentence2"), ("premise", "sentence1")]
    return _glue_style("axb", row, index, labeled, fields, prefix="rte")


def axg(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """AX-g, cast as RTE; `group` is the hypothesis, which the two gendered premises share."""
    fields = [("hypothesis", "hypothesis"), ("premise", "premise")]
    (ex,) = _glue_style("axg", row, index, labeled, fields, prefix="rte")
    return [Text2TextExample(**{**ex.__dict__, "group": row["hypothesis"]})]


_MULTIRC_BR = re.compile(r"<br>")
_MULTIRC_BOLD = re.compile(r"<(/)?b>")


def multirc(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """MultiRC: one example per answer option, grouped by question for exact match.

    `multirc question: Q answer: A paragraph: P` -> `False`/`True`; the paragraph's `<br>` become
    spaces and `<b>`/`</b>` are dropped (in the whole joined string, as T5 does).
    """
    r = _Row("multirc", row, index)
    passage = r.get(row, "passage", Mapping)
    paragraph = r.text("text", passage, "passage.text")
    p_idx = r.idx()
    questions = r.get(passage, "questions", list, "passage.questions")
    out = []
    for qi, q in enumerate(questions):
        qpath = f"passage.questions[{qi}]"
        question = r.text("question", q, f"{qpath}.question")
        q_idx = r.idx(q, f"{qpath}.idx")
        for ai, a in enumerate(r.get(q, "answers", list, f"{qpath}.answers")):
            apath = f"{qpath}.answers[{ai}]"
            answer = r.text("text", a, f"{apath}.text")
            a_idx = r.idx(a, f"{apath}.idx")
            has = isinstance(a, Mapping) and a.get("label") is not None
            label = r.label(a, f"{apath}.label") if labeled or has else None
            joined = f"multirc question: {question} answer: {answer} paragraph: {paragraph}"
            joined = _MULTIRC_BOLD.sub("", _MULTIRC_BR.sub(" ", joined))
            out.append(
                Text2TextExample(
                    "multirc",
                    joined,
                    _target(r.spec, label),
                    (p_idx, q_idx, a_idx),
                    label,
                    group=(p_idx, q_idx),
                )
            )
    return out


def record_passage(text: str) -> str:
    """ReCoRD's `@highlight` bullets as sentences, as T5: a bullet after end punctuation just
    starts after a space; otherwise the previous line is closed with `. `."""
    text = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", text)
    return text.replace("\n@highlight\n", ". ")


def record(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """ReCoRD: one example per query and gold answer (T5 duplicates the input per answer).

    `record query: Q entities: E1, E2, ... passage: P` -> one answer. Entities are the distinct
    passage spans `text[start:end+1]` (offsets inclusive), sorted; answers are deduplicated and
    sorted, as TFDS does. Unlabelled queries give one example with target `<unk>`.
    """
    r = _Row("record", row, index)
    passage = r.get(row, "passage", Mapping)
    text = r.text("text", passage, "passage.text")
    entities = set()
    for k, ent in enumerate(r.get(passage, "entities", list, "passage.entities")):
        path = f"passage.entities[{k}]"
        start = r.get(ent, "start", int, f"{path}.start")
        end = r.get(ent, "end", int, f"{path}.end")
        if not 0 <= start <= end < len(text):
            raise r.error(path, f"spans [{start}, {end}] outside the passage of {len(text)} chars")
        entities.add(text[start : end + 1])
    prefix = f"entities: {', '.join(sorted(entities))} passage: {record_passage(text)}"
    p_idx = r.idx()
    out = []
    for qi, qa in enumerate(r.get(row, "qas", list)):
        path = f"qas[{qi}]"
        query = r.text("query", qa, f"{path}.query")
        q_idx = r.idx(qa, f"{path}.idx")
        inputs = f"record query: {query} {prefix}"
        answers: list[str] = []
        if labeled or (isinstance(qa, Mapping) and qa.get("answers")):
            raw = r.get(qa, "answers", list, f"{path}.answers")
            if not raw:
                raise r.error(f"{path}.answers", "is empty (a labelled split needs an answer)")
            texts = {r.text("text", a, f"{path}.answers[{k}].text") for k, a in enumerate(raw)}
            answers = sorted(texts)
        for target in answers or [UNKNOWN_TARGET]:
            out.append(
                Text2TextExample(
                    "record", inputs, target, (p_idx, q_idx), None, tuple(answers), (p_idx, q_idx)
                )
            )
    return out


# Spans that TFDS' wsc.fixed leaves as they are: their words are not contiguous in the text.
_WSC_UNREPAIRABLE_SPANS = frozenset({"Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"})


def wsc_fix_span(text: str, span: str, index: int) -> str:
    """A WSC span repaired as TFDS' `wsc.fixed` config does, so that it occurs in `text`.

    T5 reads WSC through TFDS' `super_glue/wsc.fixed`, whose loader repairs both spans before
    T5 formats them (tensorflow/datasets, `tensorflow_datasets/text/super_glue.py`,
    `_fix_wst`). Written here from that description:

    - a span that already occurs in `text` (as a substring, case-sensitive) is kept, and so are
      the two spans whose words are not contiguous in the text ("Kamenev and Zinoviev", ...);
    - otherwise, in this order: its first letter takes the case of the first letter of word
      `index` of `text` split on whitespace (`the trophy` -> `The trophy` at the start of a
      sentence, `He` -> `he`), trailing "." are dropped and newlines become spaces
      (`the brown\nsuitcase.` -> `the brown suitcase`).

    Not reproduced: TFDS' branch for a span containing "theyscold", whose text replacement has
    no effect in TFDS' code. The result may still be missing from `text` (TFDS then fails an
    assertion); the caller reports it. Never raises: an `index` outside the words skips the
    case step.
    """
    if span in text or span in _WSC_UNREPAIRABLE_SPANS or not span:
        return span
    words = text.split()
    if 0 <= index < len(words):
        first = span[0].lower() if words[index][0].islower() else span[0].upper()
        span = first + span[1:]
    return span.rstrip(".").replace("\n", " ")


def wsc_mark_pronoun(words: list[str], i: int, pronoun: str) -> str | None:
    """`words` with word `i` marked as `*pronoun*`, or None when word `i` is not the pronoun."""
    word = words[i] if 0 <= i < len(words) else ""
    rest = word[len(pronoun) :]
    if word == pronoun:
        marked = f"*{pronoun}*"
    elif word.lower().startswith(pronoun.lower()) and rest and not any(c.isalnum() for c in rest):
        # Punctuation glued to the pronoun ("him,") is split off, as T5's hand fix does.
        marked = f"*{word[: len(pronoun)]}* {rest}"
    else:
        return None
    return " ".join(words[:i] + [marked] + words[i + 1 :])


def wsc(row, index: int | None = None, labeled: bool = True) -> list[Text2TextExample]:
    """WSC as T5's `wsc_simple`: `wsc: ... *pronoun* ...` -> the candidate referent (span1).

    Both spans are first repaired as TFDS' `wsc.fixed` does (`wsc_fix_span`; T5 reads that
    config), so a row of the official release and the same row from HF's `wsc.fixed` give the
    same example. The word at `target.span2_index` (words split on single spaces) is marked
    with `*`. The target is the candidate `span1_text` whatever the label, so for training keep
    only rows whose label is true (`preprocess_rows(..., correct_referent_only=True)`); at
    evaluation the generated referent is compared with span1
    (`postprocess.wsc_prediction_value`) to predict the label. One documented deviation: when
    the indexed word is not the pronoun but its neighbour is (an off-by-one T5 fixes by hand
    for one training row), the neighbour is marked.

    Raises:
        ValueError: naming the field, when span1 is not in the text even once repaired (TFDS
            fails an assertion there), or when the word at span2_index is not the pronoun.
    """
    r = _Row("wsc", row, index)
    text = r.text("text")
    target = r.get(row, "target", Mapping)
    span1 = r.text("span1_text", target, "target.span1_text")
    if span1 not in text:  # span1_index is only needed (and checked) for a repair
        i1 = r.get(target, "span1_index", int, "target.span1_index")
        fixed = wsc_fix_span(text, span1, i1)
        if fixed not in text and fixed not in _WSC_UNREPAIRABLE_SPANS:
            raise r.error(
                "target.span1_text",
                f"= {span1!r} is not in the text, even repaired as TFDS' wsc.fixed does "
                f"(-> {fixed!r}); expected a substring of {text!r}",
            )
        span1 = fixed
    i = r.get(target, "span2_index", int, "target.span2_index")
    raw_pronoun = r.text("span2_text", target, "target.span2_text")
    pronoun = wsc_fix_span(text, raw_pronoun, i)
    words = text.split(" ")
    marked = None
    for j in (i, i + 1, i - 1):
        marked = marked or wsc_mark_pronoun(words, j, pronoun)
    if marked is None:
        word = words[i] if 0 <= i < len(words) else "<out of range>"
        repaired = f" (span2_text {raw_pronoun!r} repaired)" if pronoun != raw_pronoun else ""
        raise r.error(
            "target.span2_index", f"= {i} points at {word!r}, not at {pronoun!r}{repaired}"
        )
    label = r.label() if labeled or row.get("label") is not None else None
    return [Text2TextExample("wsc", f"wsc: {marked}", span1, r.idx(), label)]


PREPROCESSORS = {
    "boolq": boolq,
    "cb": cb,
    "copa": copa,
    "multirc": multirc,
    "record": record,
    "rte": rte,
    "wic": wic,
    "wsc": wsc,
    "axb": axb,
    "axg": axg,
}


def preprocess(task: str, row, index: int | None = None, labeled: bool = True):
    """Format one official-schema row of `task`; a list (MultiRC and ReCoRD expand)."""
    return PREPROCESSORS[get_task(task).name](row, index, labeled)


def preprocess_rows(
    task: str, rows: Iterable, labeled: bool = True, correct_referent_only: bool = False
) -> list[Text2TextExample]:
    """Format every row; `correct_referent_only` keeps WSC rows labelled true (for training).

    Raises:
        ValueError: naming the row (position and idx) and the field, for a malformed row.
    """
    name = get_task(task).name
    out: list[Text2TextExample] = []
    for i, row in enumerate(rows):
        examples = preprocess(name, row, i, labeled)
        if name == "wsc" and correct_referent_only:
            examples = [e for e in examples if e.label == 1]
        out += examples
    return out
