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
