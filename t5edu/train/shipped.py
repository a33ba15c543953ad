"""The book's pre-trained T5, shipped in the repository under `book/results/` (chapters 11, 14).

`python -m t5edu.train --rates span_corruption=1 ...` (the command is in the folder's
`README.md`) pre-trained the `tiny` preset on the standard-library corpus with span corruption
only; its final checkpoint is committed as `book/results/t5-tiny-stdlib/`: `config.json` and
`model.safetensors` (the HF layout, so `transformers` loads it too), the SentencePiece model
`spiece.model` it was trained with, and the run's `metrics.jsonl`. The tokenizer is shipped
because `t5edu.data.default_tokenizer` is trained on the running Python's standard library, so
another Python version would cut the text into other pieces than the model saw.

A checkout of the repository has the folder. A plain `pip install` of the package (as on Colab)
does not; `book_model_dir(download=True)` then fetches the files from the project's GitHub into
`t5edu.data.default_cache_dir()`. Nothing is downloaded unless asked.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.request import urlopen

from t5edu.bench.recorded import BRANCH, FOLDER, RAW_PREFIX, local_results_dir
from t5edu.data.corpus import default_cache_dir

BOOK_MODEL = "t5-tiny-stdlib"  # folder name under book/results/
BOOK_MODEL_FILES = ("config.json", "model.safetensors", "spiece.model", "metrics.jsonl")


def book_model_dir(*, download: bool = False, timeout: float = 60.0) -> Path:
    """The folder of the book's pre-trained model (see the module docstring).

    Looks in `book/results/` of a checkout first (`t5edu.bench.recorded.local_results_dir`);
    with `download=True` and no checkout, fetches `BOOK_MODEL_FILES` from GitHub once, into
    `default_cache_dir() / BOOK_MODEL` (each file written to a temporary name and renamed, so
    an interrupted download is never taken for a complete one).

    Raises:
        FileNotFoundError: no checkout holds the folder and `download` is False, or a file is
            missing from the folder found.
        urllib.error.URLError, OSError: the download failed (no network).
    """
    results = local_results_dir()
    folder = results / BOOK_MODEL if results is not None else None
    if folder is None or not folder.is_dir():
        cached = default_cache_dir() / BOOK_MODEL
        if not all((cached / name).is_file() for name in BOOK_MODEL_FILES):
            if not download:
                raise FileNotFoundError(
                    f"the book's pre-trained model ({FOLDER}/{BOOK_MODEL}) is not here: run from a "
                    "checkout of the repository, or pass download=True to fetch it from GitHub"
                )
            _download(cached, timeout)
        folder = cached
    missing = [name for name in BOOK_MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}; expected {list(BOOK_MODEL_FILES)}")
    return folder


def _download(folder: Path, timeout: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in BOOK_MODEL_FILES:
        url = f"{RAW_PREFIX}{BRANCH}/{FOLDER}/{BOOK_MODEL}/{name}"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout) as response:
                out.write(response.read())
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_book_model(*, download: bool = False, attention_backend: str = "naive"):
    """`(model, tokenizer)`: the book's pre-trained `T5ForConditionalGeneration` in eval mode,
    and the `T5Tokenizer` it was trained with. Raises as `book_model_dir`."""
    from t5edu.t5_model import T5ForConditionalGeneration
    from t5edu.tokenizer import T5Tokenizer

    folder = book_model_dir(download=download)
    model = T5ForConditionalGeneration.from_pretrained(folder, attention_backend=attention_backend)
    return model.eval(), T5Tokenizer.load(folder / "spiece.model")
