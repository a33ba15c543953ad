"""Output records of the T5 models, with HF's field names (chapter 3).

B batch, S source length, T target length, D d_model, V vocab_size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from t5edu.kv_cache import T5Cache


@dataclass
class T5EncoderOutput:
    """last_hidden_state `(B, S, D)`, after the final norm and dropout (HF `BaseModelOutput`)."""

    last_hidden_state: torch.Tensor


@dataclass
class T5DecoderOutput:
    """last_hidden_state `(B, T, D)`; past_key_values: the updated `T5Cache` or None."""

    last_hidden_state: torch.Tensor
    past_key_values: T5Cache | None = None


@dataclass
class Seq2SeqModelOutput:
    """HF's fields: decoder last_hidden_state `(B, T, D)`, past_key_values, encoder output."""

    last_hidden_state: torch.Tensor
    past_key_values: T5Cache | None = None
    encoder_last_hidden_state: torch.Tensor | None = None


@dataclass
class Seq2SeqLMOutput:
    """HF's fields: loss (scalar, mean over labels != -100), logits `(B, T, V)`, cache, encoder."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: T5Cache | None = None
    encoder_last_hidden_state: torch.Tensor | None = None


__all__ = ["T5EncoderOutput", "T5DecoderOutput", "Seq2SeqModelOutput", "Seq2SeqLMOutput"]
