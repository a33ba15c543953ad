"""Evaluation: exact match and ROUGE-L of generated text, and sample generations.

ROUGE-L (Lin 2004) is the F-measure of the longest common subsequence of words between the
prediction and the reference; it is computed by Google's `rouge-score` package, the one the T5
paper's summarisation numbers came from. Validation loss lives in the trainer (it needs the
training step's token accounting). Chapter 11 reports both on the `summarize` and `name` tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding whitespace.

    Raises:
        ValueError: if the two lists differ in length or are empty.
    """
    _check_pairs(predictions, references)
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)) / len(
        references
    )


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure in [0, 1], via `rouge_score.rouge_scorer` (lower-cased words).

    Raises:
        ValueError: if the two lists differ in length or are empty.
    """
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [
        scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)
    ]
    return sum(scores) / len(scores)


def _check_pairs(predictions, references) -> None:
    if len(predictions) != len(references) or not references:
        raise ValueError(
            "predictions and references must be non-empty and equally long; got "
            f"{len(predictions)} predictions and {len(references)} references"
        )


@torch.no_grad()
def generate_texts(
    model: nn.Module,
    inputs: Sequence[Sequence[int]],
    decode,
    device: torch.device | str = "cpu",
    max_new_tokens: int = 32,
    batch_size: int = 16,
    pad_token_id: int = 0,
) -> list[str]:
    """Greedy generations for token-id `inputs`, decoded to text with `decode(ids) -> str`.

    Inputs are right-padded with `pad_token_id` and masked (T5's encoder needs no left padding).
    `model.generate(input_ids=, attention_mask=, max_new_tokens=)` must return the decoder
    sequences `(batch, new_len)`, as HF's and t5edu's T5 do. Every process of an FSDP run must
    call this with the same inputs (each forward all-gathers parameters).
    """
    was_training = model.training
    model.eval()
    texts: list[str] = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        width = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(chunk):
            ids[i, : len(x)] = torch.as_tensor(list(x), dtype=torch.long)
            mask[i, : len(x)] = 1
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens
        )
        sequences = getattr(out, "sequences", out)
        texts.extend(decode(seq.tolist()) for seq in sequences.cpu())
    model.train(was_training)
    return texts
