"""Optional larger corpora (C4, Wikipedia, SuperGLUE) through HF `datasets`, only on request.

Nothing here runs unless called: the book's chapters and tests never need the network. `datasets`
is imported inside the functions, so t5edu does not depend on it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

# name -> (HF hub path, config) of the corpora T5 used or evaluated on.
HF_CORPORA = {
    "c4": ("allenai/c4", "en"),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en"),
}
SUPERGLUE_TASKS = ("axb", "axg", "boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "loading C4, Wikipedia or SuperGLUE needs HF `datasets` (pip install datasets) and "
            "a network connection; the built-in corpus is t5edu.data.stdlib_corpus()"
        ) from e
    return datasets


def load_text_corpus(
    name: str, split: str = "train", *, limit: int | None = None, streaming: bool = True
) -> Iterator[str]:
    """The `text` field of C4 (`"c4"`) or English Wikipedia (`"wikipedia"`), streamed.

    Arguments are checked and `datasets` is imported when called, not when iterated, so a bad
    name or a missing package fails at once.

    Raises:
        ValueError: if `name` is not one of `HF_CORPORA` or `limit` < 0. ImportError: if
            `datasets` is missing. ConnectionError: (from `datasets`) when offline.
    """
    if name not in HF_CORPORA:
        raise ValueError(f"name must be one of {sorted(HF_CORPORA)}; got {name!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0; got {limit}")
    path, config = HF_CORPORA[name]
    ds = _datasets().load_dataset(path, config, split=split, streaming=streaming)
    return (row["text"] for row in itertools.islice(ds, limit))


def superglue_to_text(task: str, row: dict, label_names: list[str]) -> tuple[str, str]:
    """T5's text-to-text form of a SuperGLUE row: `"<task> key: value ..."` -> label name.

    Raffel et al. (2020, appendix D) feed each field as `name: value` after the task name and
    predict the label's name; `idx` is bookkeeping and is dropped. A label of -1 (hidden test
    labels) becomes `"<unk>"`.
    """
    fields = " ".join(f"{k}: {v}" for k, v in row.items() if k not in ("idx", "label"))
    label = row.get("label", -1)
    return f"{task} {fields}", label_names[label] if 0 <= label < len(label_names) else "<unk>"


def load_superglue(task: str, split: str = "validation") -> list[tuple[str, str]]:
    """A SuperGLUE task as `(input text, target text)` pairs (downloads it).

    Raises:
        ValueError: if `task` is not in `SUPERGLUE_TASKS`. ImportError: if `datasets` is missing.
    """
    if task not in SUPERGLUE_TASKS:
        raise ValueError(f"task must be one of {SUPERGLUE_TASKS}; got {task!r}")
    ds = _datasets().load_dataset("aps/super_glue", task, split=split)
    names = ds.features["label"].names if hasattr(ds.features["label"], "names") else []
    return [superglue_to_text(task, dict(row), names) for row in ds]
