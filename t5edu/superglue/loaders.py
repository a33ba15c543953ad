"""Load SuperGLUE rows in the official JSONL schema: from a local copy (default) or HF `datasets`.

Chapter 14. The official release unpacks to one folder per task with `train.jsonl`, `val.jsonl`
and `test.jsonl` (`BoolQ/val.jsonl`, `ReCoRD/train.jsonl`, ...); the diagnostics hold a single
labelled file each, `AX-b/AX-b.jsonl` and `AX-g/AX-g.jsonl`. Nothing here touches the network
unless `source="hf"` is asked for; then `datasets` is imported on first use and its flattened
rows are converted back to the official schema, so one set of preprocessors serves both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from t5edu.superglue.preprocessors import preprocess_rows
from t5edu.superglue.tasks import get_task

SPLIT_FILES = {
    "train": "train.jsonl",
    "val": "val.jsonl",
    "validation": "val.jsonl",
    "test": "test.jsonl",
}
HF_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def _split_key(split: str) -> str:
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}; got {split!r}")
    return split


def data_file(data_dir, task: str, split: str = "val") -> Path:
    """The official path of `task`'s `split` under `data_dir`, e.g. `DIR/BoolQ/val.jsonl`.

    The diagnostics have one file (`DIR/AX-b/AX-b.jsonl`), used for every split but `train`.
    """
    spec, split = get_task(task), _split_key(split)
    if spec.diagnostic:
        if split == "train":
            raise ValueError(f"split must not be 'train' for {spec.dirname}: it has only test data")
        return Path(data_dir) / spec.dirname / f"{spec.dirname}.jsonl"
    return Path(data_dir) / spec.dirname / SPLIT_FILES[split]


def read_jsonl(path) -> list[dict]:
    """Rows of a JSON-lines file (blank lines skipped).

    Raises:
        FileNotFoundError: naming the missing file. ValueError: naming the file and line of
        text that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SuperGLUE data file not found: {path} (expected the official release layout, "
            f"e.g. DIR/BoolQ/val.jsonl; download it from https://super.gluebenchmark.com/tasks "
            f"or pass source='hf')"
        )
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path} line {n}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
    return rows


def load_rows(
    task: str,
    data_dir=None,
    split: str = "val",
    *,
    source: str = "local",
    limit: int | None = None,
    load_dataset: Callable | None = None,
    **hf_kwargs,
) -> list[dict]:
    """Rows of `task`/`split` in the official schema, the first `limit` of them if given.

    `source="local"` (default) reads `data_file(data_dir, task, split)`; `source="hf"` calls
    `datasets.load_dataset(hf_path, config, split=...)` (online; `hf_kwargs` are passed on,
    e.g. `hf_path="super_glue"` for older `datasets`) and converts with `hf_rows_to_official`.
    """
    spec = get_task(task)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None; got {limit!r}")
    if source == "local":
        if hf_kwargs or load_dataset is not None:
            raise ValueError(f"hf options {sorted(hf_kwargs) or ['load_dataset']} need source='hf'")
        if data_dir is None:
            raise ValueError(
                "data_dir must be given for source='local' (the folder holding BoolQ/ ...)"
            )
        rows = read_jsonl(data_file(data_dir, spec.name, split))
    elif source == "hf":
        rows = load_hf_rows(spec.name, split, load_dataset=load_dataset, **hf_kwargs)
    else:
        raise ValueError(f"source must be 'local' or 'hf'; got {source!r}")
    return rows[:limit] if limit else rows


def is_labeled_split(task: str, split: str) -> bool:
    """Whether `split` carries labels: train and val do, test does not; the diagnostics do."""
    return get_task(task).diagnostic or _split_key(split) != "test"


def load_examples(
    task: str, data_dir=None, split: str = "val", *, labeled: bool | None = None, **kw
):
    """`load_rows` then `preprocess_rows` (labels required unless the split is a test split)."""
    rows = load_rows(task, data_dir, split, **kw)
    labeled = is_labeled_split(task, split) if labeled is None else labeled
    return preprocess_rows(task, rows, labeled=labeled)


def load_hf_rows(
    task: str,
    split: str = "val",
    *,
    hf_path: str = "aps/super_glue",
    load_dataset: Callable | None = None,
    **kwargs,
) -> list[dict]:
    """Rows from HF `datasets` (online), converted to the official schema.

    Raises:
        ImportError: if `datasets` is not installed, saying how to install it.
    """
    spec = get_task(task)
    if load_dataset is None:
        try:
            from datasets import load_dataset
        except ImportError as e:
            raise ImportError(
                "source='hf' needs the `datasets` package: pip install datasets "
                "(or use the official JSONL files with source='local')"
            ) from e
    hf_split = "test" if spec.diagnostic else HF_SPLITS[_split_key(split)]
    ds = load_dataset(hf_path, spec.hf_config, split=hf_split, **kwargs)
    return hf_rows_to_official(spec.name, ds)


_HF_BOOL_TASKS = ("boolq", "wic", "wsc")
_HF_WORD_TASKS = ("cb", "rte", "axb", "axg")


def _hf_label(task: str, label):
    """An HF ClassLabel index (-1 = none) as the official JSONL encodes that task's label."""
    if label is None or label == -1:
        return None
    spec = get_task(task)
    if spec.name in _HF_BOOL_TASKS:
        return bool(label)
    if spec.name in _HF_WORD_TASKS:
        return spec.label_names[label]
    return int(label)  # COPA, MultiRC: 0/1


def hf_rows_to_official(task: str, hf_rows: Iterable[Mapping]) -> list[dict]:
    """HF `super_glue` rows (flattened, ClassLabel ints) back to the official JSONL schema.

    MultiRC answers are regrouped into passages and questions, ReCoRD queries into passages with
    entity character spans (each entity's first occurrence), WSC spans nested under `target`.
    """
    name = get_task(task).name
    out: list[dict] = []
    if name == "multirc":
        passages: dict = {}
        for r in hf_rows:
            p, q, a = r["idx"]["paragraph"], r["idx"]["question"], r["idx"]["answer"]
            if p not in passages:
                passages[p] = {"idx": p, "passage": {"text": r["paragraph"], "questions": []}}
                out.append(passages[p])
            qs = passages[p]["passage"]["questions"]
            if not qs or qs[-1]["idx"] != q:
                qs.append({"idx": q, "question": r["question"], "answers": []})
            answer = {"idx": a, "text": r["answer"]}
            if _hf_label(name, r["label"]) is not None:
                answer["label"] = _hf_label(name, r["label"])
            qs[-1]["answers"].append(answer)
        return out
    if name == "record":
        passages = {}
        for r in hf_rows:
            p, text = r["idx"]["passage"], r["passage"]
            if p not in passages:
                spans = []
                for e in r["entities"]:
                    start = text.find(e)
                    spans.append({"start": start, "end": start + len(e) - 1})
                passages[p] = {"idx": p, "passage": {"text": text, "entities": spans}, "qas": []}
                out.append(passages[p])
            qa = {"idx": r["idx"]["query"], "query": r["query"]}
            if r.get("answers"):
                qa["answers"] = [
                    {"start": text.find(a), "end": text.find(a) + len(a) - 1, "text": a}
                    for a in r["answers"]
                ]
            passages[p]["qas"].append(qa)
        return out
    for r in hf_rows:
        row = {k: v for k, v in r.items() if k != "label"}
        if name == "wsc":
            keys = ("span1_index", "span2_index", "span1_text", "span2_text")
            row = {"idx": r["idx"], "text": r["text"], "target": {k: r[k] for k in keys}}
        label = _hf_label(name, r.get("label"))
        if label is not None:
            row["label"] = label
        out.append(row)
    return out
