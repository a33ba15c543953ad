"""T5's span-corruption objective, written in torch with the T5 codebase's names (chapter 10).

T Length of the uncorrupted token sequence, S number of noise spans.

Raffel et al. (2020, section 3.3.4) pre-train T5 by dropping random spans of tokens (15% of them,
3 tokens per span on average) from the input, each span replaced by one sentinel, and asking the
decoder for the dropped spans, each introduced by its sentinel:

    tokens   Thank you for inviting me to your party last week .
    inputs   Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    targets  <extra_id_0> for inviting <extra_id_1> last </s>

The functions follow `t5/data/preprocessors.py` of google-research/text-to-text-transfer-transformer
(`random_spans_noise_mask`, `noise_span_to_unique_sentinel`, `nonnoise_span_to_unique_sentinel`,
`random_spans_helper`): the same counts, the same sentinel numbering, the same lengths. Three
differences, all deliberate: randomness comes from a `torch.Generator`; spans are found from the
boolean mask alone, so any token id (0 included) is data; and impossible settings raise instead
of producing garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _check_density(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1); got {noise_density}")
    if not mean_noise_span_length >= 1.0:
        raise ValueError(f"mean_noise_span_length must be >= 1; got {mean_noise_span_length}")


def _round_f32(x: float, y: float, op: str) -> int:
    """`round(x * y)` or `round(x / y)` computed in float32, half to even, as T5's TF code does
    (float64 can round the other way when the product lands near .5)."""
    a = torch.tensor(x, dtype=torch.float32)
    b = torch.tensor(y, dtype=torch.float32)
    return int(torch.round(a * b if op == "*" else a / b).item())


def _random_segmentation(num_items: int, num_segments: int, generator) -> torch.Tensor:
    """Split `num_items` items into `num_segments` non-empty runs, all splits equally likely.

    Choose which `num_segments - 1` of the `num_items - 1` gaps between items start a new run.
    Returns the run lengths, int64 `(num_segments,)`, summing to `num_items`.
    """
    first_in_segment = torch.zeros(num_items, dtype=torch.long)
    gaps = torch.randperm(num_items - 1, generator=generator)[: num_segments - 1] + 1
    first_in_segment[gaps] = 1
    segment_id = torch.cumsum(first_in_segment, 0)  # (num_items,) in [0, num_segments)
    return torch.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A bool mask `(length,)` of random noise spans (True = corrupt this token).

    As in T5: `num_noise_tokens = round(length * noise_density)` (at least 1, at most
    `length - 1`), `num_noise_spans = round(num_noise_tokens / mean_noise_span_length)` (at
    least 1), the noise and non-noise tokens are each split into that many non-empty spans
    uniformly at random, and the spans alternate non-noise, noise, non-noise, ..., so the mask
    always starts with a non-noise token and ends with a noise span. Sequences shorter than 2
    are computed at length 2 and cut, as in T5 (length 1 gives `[False]`).

    Args:
        generator: a seeded `torch.Generator` (CPU) makes the mask reproducible; None uses
            torch's global generator.

    Raises:
        ValueError: if `length` < 1, `noise_density` is not in (0, 1),
            `mean_noise_span_length` < 1, or there are more noise spans than non-noise tokens
            to separate them (T5 would fail with a shape error).
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1; got {length!r}")
    _check_density(noise_density, mean_noise_span_length)
    orig_length, length = length, max(length, 2)
    num_noise_tokens = _round_f32(length, noise_density, "*")
    num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
    num_noise_spans = max(_round_f32(num_noise_tokens, mean_noise_span_length, "/"), 1)
    num_nonnoise_tokens = length - num_noise_tokens
    if num_noise_spans > num_nonnoise_tokens:
        raise ValueError(
            f"noise_density={noise_density} with mean_noise_span_length={mean_noise_span_length} "
            f"asks for {num_noise_spans} noise spans but length={length} leaves only "
            f"{num_nonnoise_tokens} non-noise tokens to separate them"
        )
    noise_lengths = _random_segmentation(num_noise_tokens, num_noise_spans, generator)
    nonnoise_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans, generator)
    interleaved = torch.stack([nonnoise_lengths, noise_lengths], dim=1).reshape(-1)  # (2S,)
    span_starts = torch.cumsum(interleaved, 0)[:-1]  # (2S - 1,) where spans 1..2S-1 begin
    span_start_indicator = torch.zeros(length, dtype=torch.long)
    span_start_indicator[span_starts] = 1
    span_num = torch.cumsum(span_start_indicator, 0)  # (T,) which span each token is in
    return (span_num % 2 == 1)[:orig_length]  # odd spans are noise


def _describe(x) -> str:
    """What was received, for error messages: dtype and shape of a tensor, else the type."""
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).removeprefix('torch.')} tensor of shape {tuple(x.shape)}"
    return f"{type(x).__name__} {x!r}" if isinstance(x, int | float) else type(x).__name__


def _check_token_tensor(tokens) -> None:
    is_ids = (
        isinstance(tokens, torch.Tensor)
        and tokens.dim() == 1
        and not (tokens.dtype.is_floating_point or tokens.dtype.is_complex)
        and tokens.dtype != torch.bool
    )
    if not is_ids:
        raise ValueError(f"tokens must be a 1-D integer tensor of ids; got {_describe(tokens)}")


def _check_vocab_size(vocab_size, num_sentinels) -> None:
    """The sentinels are the top `num_sentinels` ids, so the vocabulary must hold them and more."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be an int >= 1; got {_describe(vocab_size)}")
    if num_sentinels is None:
        return
    if isinstance(num_sentinels, bool) or not isinstance(num_sentinels, int) or num_sentinels < 1:
        raise ValueError(
            f"num_sentinels must be an int >= 1 or None; got {_describe(num_sentinels)}"
        )
    if vocab_size <= num_sentinels:
        raise ValueError(
            f"vocab_size must exceed num_sentinels={num_sentinels} (the sentinels are the top "
            f"{num_sentinels} ids, and ordinary tokens need ids below them); got "
            f"vocab_size={vocab_size}. Pass the tokenizer's full size, sentinels included "
            f"(e.g. 32100 for T5's)"
        )


def _check_tokens(tokens, noise_mask, vocab_size, num_sentinels) -> None:
    _check_token_tensor(tokens)
    _check_vocab_size(vocab_size, num_sentinels)
    if (
        not isinstance(noise_mask, torch.Tensor)
        or noise_mask.dtype != torch.bool
        or noise_mask.shape != tokens.shape
    ):
        raise ValueError(
            f"noise_mask must be a bool tensor of tokens' shape {tuple(tokens.shape)}; got "
            f"{_describe(noise_mask)}"
        )
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(
            f"tokens must be ids in [0, vocab_size={vocab_size}); got min {int(tokens.min())}, "
            f"max {int(tokens.max())}"
        )
    if num_sentinels is not None and tokens.numel():
        first_sentinel = vocab_size - num_sentinels
        if int(tokens.max()) >= first_sentinel:
            raise ValueError(
                f"tokens must not contain sentinel ids: ids below vocab_size - num_sentinels = "
                f"{first_sentinel} (ids {first_sentinel}..{vocab_size - 1} are the "
                f"{num_sentinels} sentinels); got max "
                f"{int(tokens.max())}. Is vocab_size={vocab_size} the tokenizer's full size, "
                f"sentinels included?"
            )


def noise_span_to_unique_sentinel(
    tokens: torch.Tensor,
    noise_mask: torch.Tensor,
    vocab_size: int,
    *,
    num_sentinels: int | None = None,
) -> torch.Tensor:
    """Replace each run of noise tokens with its own sentinel: the encoder input.

    The first run becomes `vocab_size - 1` (`<extra_id_0>`), the next `vocab_size - 2`, and so
    on down (T5 appropriates the top ids of the vocabulary). Only `noise_mask` says where runs
    are; token values are never used as markers, so id 0 in the text is kept as data.

    Args:
        tokens: int `(T,)` ids. noise_mask: bool `(T,)`. vocab_size: the tokenizer's size
            (sentinels included, `len(tokenizer)`).
        num_sentinels: if given (e.g. 100), raise when more runs than sentinels would spill
            into ordinary ids, or when `tokens` already holds sentinel ids.

    Returns:
        int `(T - noise + S,)` with the dtype of `tokens`, S the number of noise runs.

    Raises:
        ValueError: on shapes or dtypes other than above, `vocab_size` <= `num_sentinels`, ids
            outside `[0, vocab_size)` or among the sentinels, or too many runs for
            `num_sentinels` (or for `vocab_size`, when `num_sentinels` is None).
    """
    _check_tokens(tokens, noise_mask, vocab_size, num_sentinels)
    prev_is_noise = torch.cat([noise_mask.new_zeros(1), noise_mask[:-1]])  # (T,)
    first_noise = noise_mask & ~prev_is_noise
    subsequent_noise = noise_mask & prev_is_noise
    num_runs = int(first_noise.sum())
    if num_sentinels is not None and num_runs > num_sentinels:
        raise ValueError(
            f"noise_mask has {num_runs} spans but only num_sentinels={num_sentinels} exist; use "
            f"shorter sequences or fewer spans"
        )
    if num_runs > vocab_size:  # sentinel ids would go negative
        raise ValueError(
            f"vocab_size must be >= the number of noise spans ({num_runs}), one sentinel id "
            f"each; got vocab_size={vocab_size}"
        )
    sentinel = vocab_size - torch.cumsum(first_noise.long(), 0)  # (T,) the run's sentinel id
    out = torch.where(first_noise, sentinel.to(tokens.dtype), tokens)
    return out[~subsequent_noise]


def nonnoise_span_to_unique_sentinel(
    tokens: torch.Tensor,
    noise_mask: torch.Tensor,
    vocab_size: int,
    *,
    num_sentinels: int | None = None,
) -> torch.Tensor:
    """Replace each run of *non*-noise tokens with a sentinel: the decoder target.

    Because the mask starts with non-noise, the target starts with `<extra_id_0>`, followed by
    the first noise span, then `<extra_id_1>`, ... -- the same sentinel numbers as the inputs,
    so each dropped span is introduced by the sentinel that marks its place.
    """
    return noise_span_to_unique_sentinel(
        tokens, ~noise_mask, vocab_size, num_sentinels=num_sentinels
    )


def random_spans_helper(
    inputs_length: int,
    noise_density: float,
    mean_noise_span_length: float,
    extra_tokens_per_span_inputs: int,
    extra_tokens_per_span_targets: int,
) -> tuple[int, int]:
    """The raw token count and the target length that make inputs exactly `inputs_length`.

    T5's `random_spans_helper`: each noise span costs `extra_tokens_per_span_inputs` tokens in
    the inputs and each span `extra_tokens_per_span_targets` in the targets, and both end with
    eos. Returns `(tokens_length, targets_length)`: the longest raw sequence whose corrupted
    inputs fit in `inputs_length`, and the length of its targets.

    How it relates to T5's own `random_spans_helper`: that helper counts in float64 and without
    the mask's clamps, while T5's `random_spans_noise_mask` counts in float32 and clamps (at
    least one noise token and one noise span). Here the counts are the mask's, so the lengths
    returned are the ones T5's mask actually produces, and the inputs always come out exactly
    `inputs_length` long. At the defaults (0.15, 3.0) and inputs_length 2..1100 they differ
    in exactly these cases (checked by enumeration):

    - where `tokens_length * noise_density` is a half-integer: 0.15 is a little above 0.15 in
      float32 and a little below it in float64, so the noise count rounds up in the mask and
      down in T5's helper. For inputs_length=172 (190 raw tokens, 190 * 0.15 = 28.5) T5's
      helper says (190, 38), but its mask drops 29 tokens in 10 spans, 40 target tokens; this
      function returns (190, 40). Likewise 316, 352, 604, 640, 676, 712, 748;
    - below 10 tokens, where the clamps apply (for 8, T5's helper says 8 raw tokens with 0
      spans; its mask makes a span, so 7 raw tokens fit).

    For 512 both give (568, 114).

    Raises:
        ValueError: if `inputs_length` < 2 or the densities are out of range.
    """
    if isinstance(inputs_length, bool) or not isinstance(inputs_length, int) or inputs_length < 2:
        raise ValueError(f"inputs_length must be an int >= 2; got {inputs_length!r}")
    _check_density(noise_density, mean_noise_span_length)

    def lengths(tokens_length: int) -> tuple[int, int]:
        # The same counts as random_spans_noise_mask (float32 rounding and clamps), so the
        # promised lengths are the ones the mask produces (see the docstring).
        num_noise_tokens = _round_f32(tokens_length, noise_density, "*")
        num_noise_tokens = min(max(num_noise_tokens, 1), tokens_length - 1)
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = max(_round_f32(num_noise_tokens, mean_noise_span_length, "/"), 1)
        return (  # + 1: the eos appended to each
            num_nonnoise_tokens + num_noise_spans * extra_tokens_per_span_inputs + 1,
            num_noise_tokens + num_noise_spans * extra_tokens_per_span_targets + 1,
        )

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    # T5's hack: at density 0.5 make targets no longer than inputs (a round number, usually).
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """`(tokens_length, targets_length)` for span corruption with one sentinel per span.

    For T5's `inputs_length=512` at the defaults: 568 raw tokens and 114 target tokens (eos
    included). The name is the one HF's `run_t5_mlm_flax.py` uses for the same computation.
    """
    return random_spans_helper(inputs_length, noise_density, mean_noise_span_length, 1, 1)


@dataclass
class CorruptedSpans:
    """One span-corrupted example: `input_ids` `(Ti,)`, `labels` `(Tt,)` (each ending with eos)
    and the `noise_mask` `(T,)` that made them."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    noise_mask: torch.Tensor


def span_corruption(
    tokens: torch.Tensor,
    vocab_size: int,
    *,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    eos_token_id: int = 1,
    num_sentinels: int | None = 100,
    generator: torch.Generator | None = None,
) -> CorruptedSpans:
    """Corrupt one token sequence (no eos in it) into T5 `input_ids` and `labels`, eos appended.

    The composition T5's `span_corruption` task applies after `split_tokens`: the noise mask,
    `noise_span_to_unique_sentinel` for the inputs, `nonnoise_span_to_unique_sentinel` for the
    targets, then eos on both. A sequence of `compute_input_and_target_lengths(n)[0]` tokens
    gives inputs of exactly `n` tokens.

    Raises:
        ValueError: naming the argument, what was received and what is expected: `tokens` not
            a 1-D integer tensor (a float tensor, say), `vocab_size` not above `num_sentinels`
            (a vocabulary without room for the sentinels) or below the token ids,
            `eos_token_id` outside the vocabulary, and as `random_spans_noise_mask` and
            `noise_span_to_unique_sentinel`.
    """
    # Checked before the mask is drawn, so a bad call fails on its cause, not a later symptom.
    _check_token_tensor(tokens)
    _check_vocab_size(vocab_size, num_sentinels)
    if isinstance(eos_token_id, bool) or not isinstance(eos_token_id, int):
        raise ValueError(f"eos_token_id must be an int; got {_describe(eos_token_id)}")
    if not 0 <= eos_token_id < vocab_size:
        raise ValueError(
            f"eos_token_id must be in [0, vocab_size={vocab_size}); got {eos_token_id}"
        )
    mask = random_spans_noise_mask(
        tokens.numel(), noise_density, mean_noise_span_length, generator=generator
    )
    eos = tokens.new_tensor([eos_token_id])
    inputs = noise_span_to_unique_sentinel(tokens, mask, vocab_size, num_sentinels=num_sentinels)
    targets = nonnoise_span_to_unique_sentinel(
        tokens, mask, vocab_size, num_sentinels=num_sentinels
    )
    return CorruptedSpans(torch.cat([inputs, eos]), torch.cat([targets, eos]), mask)
