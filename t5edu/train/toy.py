"""A toy text-to-text task (reverse a random token sequence) for tests and quick demonstrations.

It needs no corpus or tokenizer, varies in input and target length (so padding and per-token
loss weighting are exercised), and a tiny T5 learns it in a few hundred steps. The real data
of the book is `t5edu.data.build_default()`; this is for checking the trainer's mechanics.
"""

from __future__ import annotations

import torch

from t5edu.data.tasks import Example


def reverse_task(
    num_examples: int,
    vocab_size: int = 64,
    min_length: int = 3,
    max_length: int = 12,
    seed: int = 0,
) -> list[Example]:
    """`num_examples` examples: input `x + [eos]`, label `reversed(x) + [eos]`, fixed by `seed`.

    Token ids are drawn from `[2, vocab_size)` (0 is pad, 1 is eos, as in T5);
    `target_text` spells the reversed ids ("7 3 12"), for exact-match demonstrations.

    Raises:
        ValueError: for `num_examples < 0`, `vocab_size < 3` or `not 1 <= min_length <=
            max_length`.
    """
    if num_examples < 0 or vocab_size < 3 or not 1 <= min_length <= max_length:
        raise ValueError(
            "reverse_task needs num_examples >= 0, vocab_size >= 3, 1 <= min_length <= max_length;"
            f" got {num_examples=}, {vocab_size=}, {min_length=}, {max_length=}"
        )
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_examples):
        n = int(torch.randint(min_length, max_length + 1, (1,), generator=g))
        x = torch.randint(2, vocab_size, (n,), generator=g).tolist()
        y = x[::-1]
        out.append(Example("reverse", x + [1], y + [1], " ".join(map(str, y))))
    return out


def decode_ids(ids) -> str:
    """The toy task's "detokenizer": ids up to the first eos as space-separated numbers, pads
    (the decoder's start token included) dropped."""
    words = []
    for i in ids:
        if i == 1:
            break
        if i > 1:
            words.append(str(i))
    return " ".join(words)
