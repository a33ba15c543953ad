"""Text-to-text tasks in T5's style and their mixture (chapter 10; used by the trainer, ch. 11).

T5 casts every problem as text in, text out, telling tasks apart by a prefix in the input
(Raffel et al., 2020, section 2.4). Three tasks come from the standard-library corpus:

- `span_corruption` (pre-training, no prefix, as in T5): the corpus's texts concatenated,
  cut into chunks of `compute_input_and_target_lengths(inputs_length)[0]` tokens, each chunk
  corrupted afresh whenever it is drawn;
- `summarize`: "summarize: <function source without docstring>" -> its docstring's first sentence;
- `name`: "name: <docstring>" -> the function's name (dunder methods left out: their names are
  fixed by the language, not by what they do).

A `Mixture` samples tasks by rate. Item k of a mixture is a pure function of (seed, k): a data
position is one integer, so resuming, and splitting across processes, is just indexing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from t5edu.data.span_corruption import compute_input_and_target_lengths, span_corruption

TASK_PREFIXES = {"span_corruption": "", "summarize": "summarize: ", "name": "name: "}
# The downstream tasks of `t5edu.data.downstream`. Kept apart from TASK_PREFIXES, which names the
# tasks `build_default`'s mixture holds (the train CLI's --rates accepts exactly those).
DOWNSTREAM_PREFIXES = {
    "params": "params: ",
    "verb": "verb: ",
    "raises": "raises: ",
    "body_name": "body_name: ",
    "returns": "returns: ",
}


@dataclass
class Example:
    """One text-to-text example: `input_ids` and `labels` are token ids ending with eos;
    `target_text` is the reference string for supervised tasks (None for span corruption)."""

    task: str
    input_ids: list[int]
    labels: list[int]
    target_text: str | None = None


def _seeded(seed: int, index: int) -> torch.Generator:
    """A generator for item `index`: SHA-256 of (seed, index), so nearby items are unrelated."""
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


class SpanCorruptionTask:
    """T5's pre-training task over a list of texts.

    Args:
        texts: documents; tokenized without eos and concatenated (as T5's `reduce_concat_tokens`)
            so no chunk is mostly padding.
        inputs_length: encoder length; chunks hold `tokens_length` raw tokens so full chunks
            give exactly this many input ids and `targets_length` labels.
        seed: fixes the mask `example(i)` draws when no generator is passed (validation).

    Raises:
        ValueError: if `texts` tokenize to fewer than 2 tokens (an empty corpus).
    """

    name = "span_corruption"

    def __init__(
        self,
        texts: list[str],
        tokenizer,
        *,
        inputs_length: int = 128,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        seed: int = 0,
    ):
        if isinstance(texts, str):
            raise ValueError("texts must be a list of str, not one str")
        self.tokens_length, self.targets_length = compute_input_and_target_lengths(
            inputs_length, noise_density, mean_noise_span_length
        )
        self.inputs_length = inputs_length
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.vocab_size = tokenizer.vocab_size
        self.num_sentinels = tokenizer.extra_ids
        self.eos_token_id = tokenizer.eos_token_id
        self.seed = seed
        # Raw text: a literal "<extra_id_3>" in a docstring is text here, not a sentinel.
        pieces = tokenizer.sp.encode(list(texts)) if texts else []
        stream = [i for p in pieces for i in p]
        if len(stream) < 2:
            raise ValueError(
                f"empty corpus: texts ({len(texts)} of them) hold {len(stream)} tokens; span "
                f"corruption needs at least 2"
            )
        self.tokens = torch.tensor(stream, dtype=torch.int32)  # (N,) the whole stream
        self.num_chunks = -(-len(stream) // self.tokens_length)  # the last one may be shorter
        if len(stream) % self.tokens_length == 1:
            self.num_chunks -= 1  # a 1-token tail cannot hold a noise span and a non-noise one

    def __len__(self) -> int:
        return self.num_chunks

    def chunk(self, i: int) -> torch.Tensor:
        """The raw tokens of chunk `i`, int64 `(tokens_length,)` (the last may be shorter)."""
        if not 0 <= i < self.num_chunks:
            raise IndexError(f"chunk index {i} out of range [0, {self.num_chunks})")
        start = i * self.tokens_length
        return self.tokens[start : start + self.tokens_length].long()

    def example(self, i: int, generator: torch.Generator | None = None) -> Example:
        """Chunk `i`, span-corrupted with `generator` (default: fixed by (seed, i))."""
        out = span_corruption(
            self.chunk(i),
            self.vocab_size,
            noise_density=self.noise_density,
            mean_noise_span_length=self.mean_noise_span_length,
            eos_token_id=self.eos_token_id,
            num_sentinels=self.num_sentinels,
            generator=generator if generator is not None else _seeded(self.seed, i),
        )
        return Example(self.name, out.input_ids.tolist(), out.labels.tolist())


class SupervisedTask:
    """Fixed (input text, target text) pairs, tokenized once with the task's prefix.

    Args:
        too_long: what to do with a pair longer than `inputs_length`/`targets_length` (eos
            included): "drop" it (counted in `num_dropped`, nothing is cut), "truncate" it (eos
            kept last), or "error".

    Raises:
        ValueError: if no pair is left (an empty corpus), if `too_long` is not one of the three,
            or with `too_long="error"` naming the first pair too long.
    """

    def __init__(
        self,
        name: str,
        pairs: list[tuple[str, str]],
        tokenizer,
        *,
        inputs_length: int = 128,
        targets_length: int = 32,
        too_long: str = "drop",
    ):
        if too_long not in ("drop", "truncate", "error"):
            raise ValueError(f"too_long must be 'drop', 'truncate' or 'error'; got {too_long!r}")
        self.name = name
        self.prefix = {**TASK_PREFIXES, **DOWNSTREAM_PREFIXES}.get(name, f"{name}: ")
        self.inputs_length, self.targets_length = inputs_length, targets_length
        self.examples: list[Example] = []
        self.num_dropped = 0
        eos = tokenizer.eos_token_id
        for j, (source, target) in enumerate(pairs):
            x = tokenizer.encode(self.prefix + source)
            y = tokenizer.encode(target)
            if len(x) > inputs_length or len(y) > targets_length:
                if too_long == "error":
                    raise ValueError(
                        f"{name} pair {j} has {len(x)} input / {len(y)} target tokens, over "
                        f"inputs_length={inputs_length} / targets_length={targets_length}"
                    )
                if too_long == "drop":
                    self.num_dropped += 1
                    continue
                x = x[: inputs_length - 1] + [eos] if len(x) > inputs_length else x
                y = y[: targets_length - 1] + [eos] if len(y) > targets_length else y
            self.examples.append(Example(name, x, y, target))
        if not self.examples:
            raise ValueError(
                f"empty corpus: task {name!r} has no examples ({len(pairs)} pairs given, "
                f"{self.num_dropped} dropped as too long)"
            )

    def __len__(self) -> int:
        return len(self.examples)

    def example(self, i: int, generator: torch.Generator | None = None) -> Example:
        """Example `i` (the generator is unused: supervised examples are fixed)."""
        return self.examples[i]


def summarize_task(functions, tokenizer, **kwargs) -> SupervisedTask:
    """`summarize: <source>` -> docstring summary, from `StdlibCorpus.examples(split)`."""
    return SupervisedTask(
        "summarize", [(f.source, f.summary) for f in functions], tokenizer, **kwargs
    )


def name_task(functions, tokenizer, **kwargs) -> SupervisedTask:
    """`name: <docstring>` -> function name, dunder methods left out."""
    pairs = [
        (f.docstring, f.name)
        for f in functions
        if not (f.name.startswith("__") and f.name.endswith("__"))
    ]
    return SupervisedTask("name", pairs, tokenizer, **kwargs)


class Mixture:
    """Sample examples from several tasks at fixed rates; item `k` depends only on (seed, k).

    Args:
        tasks: the tasks (each with `name`, `__len__` and `example(i, generator)`).
        rates: task name -> relative rate (normalised to sum to 1). None mixes in proportion to
            the tasks' sizes (T5's "examples-proportional mixing", section 3.5.2).

    Raises:
        ValueError: if `tasks` is empty, names repeat, a rate names no task or is negative, or
            all rates are zero.
    """

    def __init__(self, tasks, rates: dict[str, float] | None = None, seed: int = 0):
        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks must be a non-empty list of tasks; got none")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks must have distinct names; got {names}")
        if rates is None:
            rates = {t.name: float(len(t)) for t in tasks}
        unknown = set(rates) - set(names)
        if unknown:
            raise ValueError(f"rates name tasks {sorted(unknown)} not among tasks {names}")
        weights = [float(rates.get(n, 0.0)) for n in names]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"rates must be >= 0 and not all zero; got {rates}")
        self.tasks = tasks
        self.rates = {n: w / sum(weights) for n, w in zip(names, weights, strict=True)}
        self._weights = torch.tensor(weights, dtype=torch.float64)
        self.seed = seed

    def __getitem__(self, k: int) -> Example:
        if k < 0:
            raise IndexError(f"mixture index must be >= 0; got {k}")
        g = _seeded(self.seed, k)
        task = self.tasks[int(torch.multinomial(self._weights, 1, generator=g))]
        i = int(torch.randint(len(task), (1,), generator=g))
        return task.example(i, generator=g)

    def take(self, start: int, count: int) -> list[Example]:
        """Items `start .. start + count - 1` (a batch at a data position)."""
        return [self[k] for k in range(start, start + count)]
