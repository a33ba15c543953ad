"""Data for T5 without a network: the standard-library corpus, span corruption, tasks, batches.

Chapter 10 teaches it; the trainer (chapter 11) starts from `build_default()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from t5edu.data.collate import IGNORE_INDEX, Batch, collate
from t5edu.data.corpus import (
    SPLITS,
    Document,
    FunctionExample,
    StdlibCorpus,
    build_stdlib_corpus,
    default_cache_dir,
    load_corpus,
    save_corpus,
    split_of,
    stdlib_corpus,
)
from t5edu.data.downstream import (
    DEFAULT_DOWNSTREAM_TASKS,
    DOWNSTREAM_TASKS,
    DownstreamTask,
    baseline_predictions,
    build_downstream_tasks,
)
from t5edu.data.hf_datasets import load_text_corpus
from t5edu.data.span_corruption import (
    CorruptedSpans,
    compute_input_and_target_lengths,
    noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel,
    random_spans_helper,
    random_spans_noise_mask,
    span_corruption,
)
from t5edu.data.tasks import (
    DOWNSTREAM_PREFIXES,
    TASK_PREFIXES,
    Example,
    Mixture,
    SpanCorruptionTask,
    SupervisedTask,
    name_task,
    summarize_task,
)

DEFAULT_RATES = {"span_corruption": 0.5, "summarize": 0.25, "name": 0.25}


@dataclass
class DefaultData:
    """Everything a training run needs, from `build_default`.

    `train` is an endless `Mixture` (item k fixed by (seed, k)); `validation` maps each task name
    to its validation-split task (`task.example(i)` is fixed, so evaluations are comparable);
    every example fits `inputs_length` x `targets_length`, the widths to `collate` with.
    """

    corpus: StdlibCorpus
    tokenizer: object  # t5edu.tokenizer.T5Tokenizer
    train: Mixture
    validation: dict
    inputs_length: int
    targets_length: int


def build_tasks(corpus, tokenizer, split, *, inputs_length=128, targets_length=32, seed=0):
    """The three tasks of one split, keyed by name (see `t5edu.data.tasks`)."""
    span = SpanCorruptionTask(
        corpus.texts(split), tokenizer, inputs_length=inputs_length, seed=seed
    )
    kw = dict(inputs_length=inputs_length, targets_length=targets_length)
    functions = corpus.examples(split)
    return {
        "span_corruption": span,
        "summarize": summarize_task(functions, tokenizer, **kw),
        "name": name_task(functions, tokenizer, **kw),
    }


def build_default(
    *,
    vocab_size: int = 4096,
    inputs_length: int = 128,
    targets_length: int = 32,
    rates: dict[str, float] | None = None,
    seed: int = 0,
    cache_dir=None,
) -> DefaultData:
    """The book's default data: the stdlib corpus, its tokenizer, a train mixture, val tasks.

    Corpus and tokenizer are cached (`default_cache_dir()`, or `cache_dir`): the first call takes
    ~15 s on one core, later ones a few seconds. `rates` defaults to `DEFAULT_RATES`.
    Supervised pairs longer than `inputs_length`/`targets_length` are dropped (counted in each
    task's `num_dropped`); `targets_length` is raised to span corruption's target length if
    that is longer.
    """
    from t5edu.tokenizer import default_tokenizer

    corpus = stdlib_corpus(cache_dir=cache_dir)
    tokenizer = default_tokenizer(vocab_size, cache_dir=cache_dir)
    targets_length = max(targets_length, compute_input_and_target_lengths(inputs_length)[1])
    kw = dict(inputs_length=inputs_length, targets_length=targets_length, seed=seed)
    train = build_tasks(corpus, tokenizer, "train", **kw)
    validation = build_tasks(corpus, tokenizer, "validation", **kw)
    mixture = Mixture(train.values(), rates or DEFAULT_RATES, seed=seed)
    return DefaultData(corpus, tokenizer, mixture, validation, inputs_length, targets_length)


__all__ = [
    "DEFAULT_DOWNSTREAM_TASKS",
    "DEFAULT_RATES",
    "DOWNSTREAM_PREFIXES",
    "DOWNSTREAM_TASKS",
    "IGNORE_INDEX",
    "SPLITS",
    "TASK_PREFIXES",
    "Batch",
    "CorruptedSpans",
    "DefaultData",
    "DownstreamTask",
    "Document",
    "Example",
    "FunctionExample",
    "Mixture",
    "SpanCorruptionTask",
    "StdlibCorpus",
    "SupervisedTask",
    "baseline_predictions",
    "build_default",
    "build_downstream_tasks",
    "build_stdlib_corpus",
    "build_tasks",
    "collate",
    "compute_input_and_target_lengths",
    "default_cache_dir",
    "load_corpus",
    "load_text_corpus",
    "name_task",
    "noise_span_to_unique_sentinel",
    "nonnoise_span_to_unique_sentinel",
    "random_spans_helper",
    "random_spans_noise_mask",
    "save_corpus",
    "span_corruption",
    "split_of",
    "stdlib_corpus",
    "summarize_task",
]
