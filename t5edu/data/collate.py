"""Pad text-to-text examples into a batch for T5 (chapters 10, 11).

B batch, Ti input length, Tt target length.

Padding is decided by each example's length, never by looking for id 0 in the data. Labels are
-100 on padding so `cross_entropy(ignore_index=-100)` (HF's convention) skips them; the decoder's
inputs are the labels shifted right behind T5's start token (the pad id, 0).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

IGNORE_INDEX = -100  # HF / torch.nn.CrossEntropyLoss's default ignore_index


@dataclass
class Batch:
    """A padded batch with HF's field names; all int64.

    input_ids `(B, Ti)`, attention_mask `(B, Ti)` (1 = real token), labels `(B, Tt)` (-100 on
    padding), decoder_input_ids `(B, Tt)` (labels shifted right, starting with the pad id),
    decoder_attention_mask `(B, Tt)` (1 = real target token).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    decoder_input_ids: torch.Tensor
    decoder_attention_mask: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> Batch:
        """The same batch on `device`."""
        return Batch(
            *(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self))
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        """`{field: tensor}`, e.g. for `hf_model(**batch.as_dict())`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) input plus target tokens: what tokens/s counts."""
        return int(self.attention_mask.sum() + self.decoder_attention_mask.sum())


def _pad(seqs, width: int, value: int, what: str) -> torch.Tensor:
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for b, s in enumerate(seqs):
        if len(s) > width:
            raise ValueError(
                f"examples[{b}].{what} has {len(s)} tokens, longer than {what} length {width}"
            )
        out[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(
    examples,
    *,
    inputs_length: int | None = None,
    targets_length: int | None = None,
    pad_token_id: int = 0,
    decoder_start_token_id: int = 0,
) -> Batch:
    """Pad `examples` (objects with `input_ids` and `labels` lists) into a `Batch`.

    Args:
        inputs_length, targets_length: pad to these fixed widths (steady shapes for
            `torch.compile` and CUDA graphs); None pads to the longest in the batch.

    Raises:
        ValueError: if `examples` is empty, an example has no input or label tokens, or one is
            longer than the fixed length asked for (naming the example, its length and the limit).
    """
    examples = list(examples)
    if not examples:
        raise ValueError("examples must be a non-empty list; got an empty batch")
    for b, ex in enumerate(examples):
        if len(ex.input_ids) == 0 or len(ex.labels) == 0:
            raise ValueError(
                f"examples[{b}] has {len(ex.input_ids)} input_ids and {len(ex.labels)} labels; "
                f"both must be non-empty"
            )
    ti = inputs_length or max(len(ex.input_ids) for ex in examples)
    tt = targets_length or max(len(ex.labels) for ex in examples)
    input_ids = _pad([ex.input_ids for ex in examples], ti, pad_token_id, "input_ids")
    labels = _pad([ex.labels for ex in examples], tt, IGNORE_INDEX, "labels")
    lengths_in = torch.tensor([len(ex.input_ids) for ex in examples])
    lengths_out = torch.tensor([len(ex.labels) for ex in examples])
    attention_mask = (torch.arange(ti) < lengths_in[:, None]).long()  # (B, Ti)
    decoder_attention_mask = (torch.arange(tt) < lengths_out[:, None]).long()  # (B, Tt)
    decoder_input_ids = torch.full_like(labels, pad_token_id)
    decoder_input_ids[:, 0] = decoder_start_token_id
    shifted = labels[:, :-1]  # (B, Tt - 1)
    decoder_input_ids[:, 1:] = torch.where(shifted == IGNORE_INDEX, pad_token_id, shifted)
    return Batch(input_ids, attention_mask, labels, decoder_input_ids, decoder_attention_mask)
