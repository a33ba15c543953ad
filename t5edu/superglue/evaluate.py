"""Evaluate a text-to-text model on SuperGLUE: generate, map text to labels, score, tabulate.

Chapter 14. The model is duck-typed: any object with `generate(input_ids, attention_mask=...,
max_new_tokens=...)` returning token ids `(batch, out_len)` (a tensor, or an object with
`.sequences`, as HF's), such as `t5edu.T5ForConditionalGeneration` or a `transformers` T5. The
tokenizer needs `encode(text) -> list[int]` and `decode(ids) -> str` (a SentencePiece processor
or `t5edu.tokenizer`'s); pad and EOS ids are read from `pad_id`/`eos_id` (attributes or methods)
and default to T5's 0 and 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from t5edu.superglue.loaders import is_labeled_split, load_rows
from t5edu.superglue.metrics import superglue_score, task_metrics, task_score
from t5edu.superglue.postprocess import (
    INVALID,
    dedupe_by_group,
    prediction_value,
    wsc_prediction_value,
)
from t5edu.superglue.preprocessors import Text2TextExample, preprocess_rows
from t5edu.superglue.tasks import MAIN_TASKS, get_task, resolve_tasks


@dataclass
class TaskResult:
    """One task's scores: every metric, the task score, and what the numbers rest on."""

    task: str
    metrics: dict[str, float]
    score: float  # mean of the task's headline metrics (what the SuperGLUE score averages)
    num_examples: int  # examples scored (ReCoRD: queries)
    # Generations that were no label word; WSC: that named nothing (T5's -1); None: ReCoRD.
    num_invalid: int | None
    num_truncated: int = 0  # inputs cut to max_input_length before generation
    predictions: list[str] = field(default_factory=list, repr=False)


def special_token_id(tokenizer, name: str, default: int) -> int:
    for attr in (f"{name}_id", f"{name}_token_id"):
        value = getattr(tokenizer, attr, None)
        value = value() if callable(value) else value
        if isinstance(value, int) and value >= 0:
            return value
    return default


def encode_text(tokenizer, text: str, max_length: int | None) -> tuple[list[int], int]:
    """Token ids of `text` ending with one EOS, and 1 if it was cut to `max_length` (else 0).

    EOS is appended unless the tokenizer already ends with it; a cut keeps the first
    `max_length - 1` tokens and the EOS (T5's truncation).
    """
    eos = special_token_id(tokenizer, "eos", 1)
    ids = list(tokenizer.encode(text))
    if not ids or ids[-1] != eos:
        ids.append(eos)
    if max_length is not None and len(ids) > max_length:
        return ids[: max_length - 1] + [eos], 1
    return ids, 0


def encode_batch(tokenizer, texts: Sequence[str], max_input_length: int):
    """`(input_ids, attention_mask, num_truncated)`: each text + EOS, right-padded, `(B, T)` int64.

    A text longer than `max_input_length` tokens keeps its first `max_input_length - 1` tokens and
    its EOS (T5's eval truncation); the count of such texts is returned so none is cut silently.
    """
    if max_input_length < 2:
        raise ValueError(f"max_input_length must be >= 2 (a token and EOS); got {max_input_length}")
    pad = special_token_id(tokenizer, "pad", 0)
    encoded = [encode_text(tokenizer, t, max_input_length) for t in texts]
    rows, truncated = [ids for ids, _ in encoded], sum(cut for _, cut in encoded)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return input_ids, mask, truncated


def decode_generated(tokenizer, ids) -> str:
    """Text of one generated row: up to the first EOS, pads (and the start token) dropped.

    Never raises on what a model emits: if the tokenizer refuses an id (e.g. one of the padding
    rows of a 32128-row embedding that a 32100-token vocabulary lacks), the ids are decoded one by
    one and the refused ones dropped.
    """
    pad, eos = special_token_id(tokenizer, "pad", 0), special_token_id(tokenizer, "eos", 1)
    ids = [int(i) for i in ids]
    ids = ids[: ids.index(eos)] if eos in ids else ids
    ids = [i for i in ids if i != pad]
    try:
        return tokenizer.decode(ids)
    except (ValueError, IndexError, KeyError, TypeError, RuntimeError):
        pieces = []
        for i in ids:
            try:
                pieces.append(tokenizer.decode([i]))
            except (ValueError, IndexError, KeyError, TypeError, RuntimeError):
                continue
        return " ".join(p for p in pieces if p)


def _model_device(model) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


@torch.inference_mode()
def generate_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    max_input_length: int = 512,
    progress: bool = False,
) -> tuple[list[str], int]:
    """Greedy generations for `texts` (in order) and the number of truncated inputs.

    Batches are formed from length-sorted texts so that little padding is computed.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = _model_device(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    truncated = 0
    try:
        for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="generate"):
            batch = order[start : start + batch_size]
            ids, mask, n = encode_batch(tokenizer, [texts[i] for i in batch], max_input_length)
            truncated += n
            gen = model.generate(
                ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens
            )
            gen = getattr(gen, "sequences", gen)
            for i, row in zip(batch, gen, strict=True):
                out[i] = decode_generated(
                    tokenizer, row.tolist() if hasattr(row, "tolist") else row
                )
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return out, truncated


def score_predictions(
    task: str, examples: Sequence[Text2TextExample], predictions: Sequence, num_truncated: int = 0
) -> TaskResult:
    """Score generated texts (one per example, or per query for ReCoRD's deduplicated list)."""
    spec = get_task(task)
    if len(predictions) != len(examples):
        raise ValueError(
            f"predictions must have one entry per example; got {len(predictions)} for "
            f"{len(examples)} {spec.dirname} examples"
        )
    values = [prediction_value(ex, text) for ex, text in zip(examples, predictions, strict=True)]
    metrics = task_metrics(spec.name, examples, values)
    # WSC's values are 1/0/-1 as well (`wsc_prediction_value`); ReCoRD's are strings.
    scored_as_classes = spec.label_names is not None or spec.name == "wsc"
    invalid = sum(v == INVALID for v in values) if scored_as_classes else None
    n = len(dedupe_by_group(examples)) if spec.name == "record" else len(examples)
    return TaskResult(
        spec.name, metrics, task_score(spec.name, metrics), n, invalid, num_truncated,
        [str(p) for p in predictions],
    )  # fmt: skip


def evaluate_examples(model, tokenizer, task: str, examples, **gen_kwargs) -> TaskResult:
    """Generate for formatted examples and score them (ReCoRD: once per query)."""
    spec = get_task(task)
    if spec.name == "record":
        examples = dedupe_by_group(examples)
    gen_kwargs.setdefault("max_new_tokens", spec.max_new_tokens)
    texts, truncated = generate_texts(model, tokenizer, [e.inputs for e in examples], **gen_kwargs)
    return score_predictions(spec.name, examples, texts, truncated)


def evaluate(
    model,
    tokenizer,
    tasks="all",
    data_dir=None,
    split: str = "val",
    *,
    limit: int | None = None,
    source: str = "local",
    **gen_kwargs,
) -> dict[str, TaskResult]:
    """Evaluate on each task's `split` (labels needed, so not `test` for the 8 tasks).

    `limit` keeps the first rows of each task (AX-g: an even number, to keep gender pairs).
    """
    results = {}
    for name in resolve_tasks(tasks):
        if not is_labeled_split(name, split):
            raise ValueError(f"split {split!r} of {get_task(name).dirname} has no labels to score")
        n = limit - limit % 2 if (name == "axg" and limit) else limit
        if n == 0:
            raise ValueError(f"limit must be >= 2 for AX-g, whose rows come in pairs; got {limit}")
        rows = load_rows(name, data_dir, split, source=source, limit=n)
        examples = preprocess_rows(name, rows, labeled=True)
        results[name] = evaluate_examples(model, tokenizer, name, examples, **gen_kwargs)
    return results


# Texts the WSC oracle may write for a wrong candidate: plain words, the first that T5's rule
# scores 0 ("names something else") for the candidate is used.
_WSC_OTHER_REFERENTS = ("nobody", "none", "someone")


def _wsc_other_referent(candidate: str) -> str:
    for text in _WSC_OTHER_REFERENTS:
        if wsc_prediction_value(text, candidate) == 0:
            return text
    raise ValueError(f"no oracle text names something other than the candidate {candidate!r}")


def oracle_predictions(examples: Sequence[Text2TextExample]) -> list[str]:
    """The text a perfect model would generate, one per example.

    The target for every task but WSC. WSC: the candidate (`targets`) when it is the referent;
    for a wrong candidate, a word that names something else ("nobody"), which T5's
    `wsc_simple` scores 0 ("not this candidate"). An empty answer would not do: T5 maps it to
    -1, wrong whatever the label (`postprocess.wsc_prediction_value`).
    """
    out = []
    for ex in examples:
        wsc_wrong_candidate = ex.task == "wsc" and ex.label == 0
        out.append(_wsc_other_referent(ex.targets) if wsc_wrong_candidate else ex.targets)
    return out


def constant_predictions(examples: Sequence[Text2TextExample], text: str) -> list[str]:
    """The same text for every example: a majority-class or a garbage baseline."""
    return [text] * len(examples)


def results_table(results: dict[str, TaskResult]) -> str:
    """A Markdown table of every task's metrics and score, then the SuperGLUE score."""
    lines = [
        "| task | metrics | score | n | invalid | truncated |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        metrics = ", ".join(f"{k} {v:.1f}" for k, v in r.metrics.items())
        invalid = "-" if r.num_invalid is None else str(r.num_invalid)
        row = [get_task(name).dirname, metrics, f"{r.score:.1f}", str(r.num_examples), invalid]
        lines.append("| " + " | ".join(row + [str(r.num_truncated)]) + " |")
    scores = {name: r.metrics for name, r in results.items()}
    main = [t for t in scores if not get_task(t).diagnostic]
    if main:
        total = superglue_score(scores, require_all=False)
        note = "" if len(main) == len(MAIN_TASKS) else f" (partial: {len(main)} of 8 tasks)"
        lines.append(f"\nSuperGLUE score: {total:.1f}{note}")
    return "\n".join(lines)
