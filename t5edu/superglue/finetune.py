"""Fine-tuning on SuperGLUE: (input text, target text) pairs for the trainer, mixed as T5 did.

Chapter 14. T5 fine-tunes on the SuperGLUE tasks together, sampling each task in proportion to
its number of examples, capped at K per task ("examples-proportional mixing", Raffel et al., 2020,
section 3.5.2); WSC trains only on rows whose candidate is the referent (`wsc_simple` with
`correct_referent_only=True`). This module formats and mixes the pairs; the optimisation itself
is the book's trainer (`t5edu.train`), imported only when `finetune` is called.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from t5edu.superglue.loaders import load_rows
from t5edu.superglue.preprocessors import preprocess_rows
from t5edu.superglue.tasks import get_task, resolve_tasks


def text_pairs(
    tasks="all",
    data_dir=None,
    split: str = "train",
    *,
    max_per_task: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    source: str = "local",
    **load_kwargs,
) -> Iterator[tuple[str, str]]:
    """Yield `(input_text, target_text)` pairs of the given tasks, mixed.

    Every formatted example of every task, the first `max_per_task` of each when given (T5's K;
    ReCoRD and MultiRC count formatted examples), shuffled together with `seed`: in expectation
    examples-proportional mixing. Diagnostics (`axb`, `axg`) have no training data and are skipped
    when `tasks="all"`, refused when named.
    """
    names = resolve_tasks(tasks)
    if tasks == "all":
        names = [n for n in names if not get_task(n).diagnostic]
    if max_per_task is not None and max_per_task < 1:
        raise ValueError(f"max_per_task must be a positive int or None; got {max_per_task!r}")
    pairs: list[tuple[str, str]] = []
    for name in names:
        if get_task(name).diagnostic:
            raise ValueError(
                f"tasks must not include {get_task(name).dirname}: it has no train data"
            )
        rows = load_rows(name, data_dir, split, source=source, **load_kwargs)
        examples = preprocess_rows(name, rows, labeled=True, correct_referent_only=True)
        pairs += [(e.inputs, e.targets) for e in examples[:max_per_task]]
    if shuffle:
        random.Random(seed).shuffle(pairs)
    yield from pairs


def finetune(model, tokenizer, pairs, **trainer_kwargs):
    """Fine-tune `model` on `(input, target)` pairs with the book's trainer (`t5edu.train`).

    Raises:
        ImportError: if the trainer (`t5edu.train.train_text_to_text`) is not available.
    """
    try:
        from t5edu.train import train_text_to_text
    except ImportError as e:
        raise ImportError(
            "finetune needs the book's trainer, t5edu.train.train_text_to_text (chapter 11); "
            "until it is installed, feed text_pairs(...) to your own training loop"
        ) from e
    return train_text_to_text(model, tokenizer, list(pairs), **trainer_kwargs)
