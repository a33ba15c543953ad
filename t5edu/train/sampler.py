"""The order in which the trainer visits examples, with a position a checkpoint can store.

Two kinds of data: a finite dataset (`len(data)` examples) is visited in shuffled epochs, the
permutation of epoch e a pure function of (seed, e), so the position is two integers (epoch,
offset); an endless stream such as `t5edu.data.Mixture` (item k fixed by its own seed) is read
in order, so the position is one integer. Either way a resumed run sees exactly the batches an
uninterrupted run would have seen (chapter 11).
"""

from __future__ import annotations

import torch


class ResumableSampler:
    """Global batches of `batch_size` example indices.

    With `num_examples`, each epoch is a fresh permutation drawn from
    `torch.Generator().manual_seed(seed + epoch)` and the incomplete batch at its end is dropped,
    so every batch has the same size. With `num_examples=None` (an endless stream) batch s is
    indices `[s * batch_size, (s + 1) * batch_size)`.

    Raises:
        ValueError: if `num_examples` is 0 or smaller than `batch_size`, or on loading a state
            saved for a different data size, batch size or seed.
    """

    def __init__(
        self, num_examples: int | None, batch_size: int, seed: int = 0, shuffle: bool = True
    ):
        if num_examples is not None and num_examples <= 0:
            raise ValueError(f"the training data is empty (num_examples={num_examples})")
        if batch_size <= 0 or (num_examples is not None and batch_size > num_examples):
            raise ValueError(
                f"batch_size must be in [1, num_examples={num_examples}]; got {batch_size}"
            )
        self.num_examples, self.batch_size = num_examples, batch_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.offset = 0, 0
        self._perm: list[int] | None = None

    def _permutation(self) -> list[int]:
        if self._perm is None:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + self.epoch)
                self._perm = torch.randperm(self.num_examples, generator=g).tolist()
            else:
                self._perm = list(range(self.num_examples))
        return self._perm

    def next_batch(self) -> list[int]:
        """The next `batch_size` indices, starting a new epoch when this one cannot fill a batch."""
        if self.num_examples is None:
            self.offset += self.batch_size
            return list(range(self.offset - self.batch_size, self.offset))
        if self.offset + self.batch_size > self.num_examples:
            self.epoch, self.offset, self._perm = self.epoch + 1, 0, None
        batch = self._permutation()[self.offset : self.offset + self.batch_size]
        self.offset += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.seed,
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("num_examples", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume the data order: the checkpoint has {key}={state[key]}, "
                    f"this run has {key}={getattr(self, key)}"
                )
        self.epoch, self.offset, self._perm = state["epoch"], state["offset"], None
