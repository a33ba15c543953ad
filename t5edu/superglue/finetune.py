"""Fine-tuning on SuperGLUE: (input text, target text) pairs for the trainer, mixed as T5 did.

Chapter 14. T5 fine-tunes on the SuperGLUE tasks together, sampling each task in proportion to
its number of examples, capped at K per task ("examples-proportional mixing", Raffel et al., 2020,
section 3.5.2); WSC trains only on rows whose candidate is the referent (`wsc_simple` with
`correct_referent_only=True`). This module formats and mixes the pairs; the optimisation itself
is the book's trainer (`t5edu.train.Trainer`), imported only when `finetune` is called.
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
    asked = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    if any(str(n).strip().lower() == "all" for n in asked):
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


def encode_pairs(tokenizer, pairs, max_input_length: int = 512, task: str = "superglue"):
    """Token ids of `(input, target)` pairs as `t5edu.data.Example`s, and how many inputs were cut.

    Inputs longer than `max_input_length` keep their first tokens and EOS (T5 fine-tunes on 512
    input tokens); the count is returned so that no cut goes unreported. Targets are never cut.
    """
    from t5edu.data import Example
    from t5edu.superglue.evaluate import encode_text

    examples, truncated = [], 0
    for inputs, target in pairs:
        ids, cut = encode_text(tokenizer, inputs, max_input_length)
        labels, _ = encode_text(tokenizer, target, None)
        examples.append(Example(task, ids, labels, target_text=target))
        truncated += cut
    return examples, truncated


def finetune(
    model,
    tokenizer,
    pairs,
    *,
    val_pairs=None,
    max_input_length: int = 512,
    **config_kwargs,
):
    """Fine-tune `model` on `(input, target)` pairs with the book's trainer; returns the Trainer.

    `config_kwargs` are `t5edu.train.TrainConfig` fields (`steps`, `batch_size`, `lr`,
    `optimizer`, `precision`, `out_dir`, ...). `val_pairs`, if given, are scored during training
    by validation loss and exact match of greedy generations (the trainer's evaluation). After
    training, `trainer.history` holds the logged records and `trainer.num_truncated` the number of
    training inputs cut to `max_input_length`.

    Raises:
        ValueError: for no pairs, or an invalid `TrainConfig` (named by the trainer).
    """
    import functools

    from t5edu.data import collate
    from t5edu.superglue.evaluate import special_token_id
    from t5edu.train import TrainConfig, Trainer

    train, truncated = encode_pairs(tokenizer, pairs, max_input_length)
    if not train:
        raise ValueError("pairs must hold at least one (input, target) pair")
    pad = special_token_id(tokenizer, "pad", 0)
    val = None
    if val_pairs is not None:
        val, _ = encode_pairs(tokenizer, val_pairs, max_input_length)
    trainer = Trainer(
        model=model,
        config=TrainConfig(**config_kwargs),
        train_data=train,
        collate_fn=functools.partial(collate, pad_token_id=pad, decoder_start_token_id=pad),
        val_data=val,
        generation_data={"superglue": val} if val else None,
        decode=tokenizer.decode if val else None,
    )
    trainer.num_truncated = truncated
    trainer.train()
    return trainer
