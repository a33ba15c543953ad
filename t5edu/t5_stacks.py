"""The encoder and decoder stacks: embed, blocks sharing one position bias, final norm (ch. 3).

B batch, S source length, T target length, H heads, D d_model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from t5edu.config import T5Config
from t5edu.feed_forward import dropout
from t5edu.kv_cache import T5Cache
from t5edu.norms import build_norm
from t5edu.t5_attention import RelativeBiasTable
from t5edu.t5_blocks import T5Block
from t5edu.t5_checks import (
    check_embeds,
    check_ids_structure,
    check_mask_structure,
    check_values,
)
from t5edu.t5_outputs import T5DecoderOutput, T5EncoderOutput


class _T5Stack(nn.Module):
    """Shared by both stacks: blocks, final norm, and the position encoding chosen by config.

    The position bias is computed once per forward and added in every layer: T5's relative bias
    (owned by block 0, as in HF) or ALiBi; RoPE instead rotates q and k inside each layer. When
    every self-attention layer runs the `t5_flash` backend, T5's bias is not materialised: the
    layers get a `RelativeBiasTable` (the table and the query offset) and gather it per tile.
    """

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.config, self.is_decoder, self.embed_tokens = config, is_decoder, embed_tokens
        n = config.num_decoder_layers if is_decoder else config.num_layers
        relative = config.position_encoding == "relative_bias"
        self.block = nn.ModuleList(
            [T5Block(config, relative and i == 0, is_decoder, i) for i in range(n)]
        )
        self.final_layer_norm = build_norm(
            config.norm_type, config.d_model, config.layer_norm_epsilon
        )
        self.dropout = nn.Dropout(config.dropout_rate)
        self.rope = self.alibi = None
        if config.position_encoding == "rope":
            from t5edu.rope import RoPE

            self.rope = RoPE(config.d_kv, base=config.rope_base)
        elif config.position_encoding == "alibi":
            from t5edu.alibi import ALiBi

            self.alibi = ALiBi(config.num_heads)
        self.gradient_checkpointing = False

    def position_bias(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor | None:
        """`(1, H, q_len, k_len)` bias for queries at offset.., keys at 0..; None with RoPE."""
        if self.alibi is not None:
            # ALiBi aligns queries bottom-right, which is offset = k_len - q_len, as with a cache.
            return self.alibi.bias(q_len, k_len, causal=self.is_decoder).unsqueeze(0)
        if self.rope is not None:
            return None
        return self.relative_attention_bias(q_len, k_len, offset)

    def self_attention_bias(
        self, q_len: int, k_len: int, offset: int = 0
    ) -> torch.Tensor | RelativeBiasTable | None:
        """What the self-attention layers get as `position_bias`: a `RelativeBiasTable` when the
        stack has T5's relative bias and every layer runs `t5_flash` (no `(1, H, q_len, k_len)`
        tensor: the point of that backend), else `position_bias(q_len, k_len, offset)`."""
        if self.reads_bias_table:
            return RelativeBiasTable(self.relative_attention_bias, offset)
        return self.position_bias(q_len, k_len, offset)

    @property
    def reads_bias_table(self) -> bool:
        """True when the stack has T5's relative bias and every self-attention layer runs
        `t5_flash`, which gathers the bias from the table tile by tile."""
        return self.relative_attention_bias is not None and all(
            b.layer[0].SelfAttention.backend == "t5_flash" for b in self.block
        )

    @property
    def relative_attention_bias(self):
        """The stack's `RelativePositionBias` (owned by block 0, as in HF); None with RoPE/ALiBi."""
        if self.alibi is not None or self.rope is not None:
            return None
        return self.block[0].layer[0].SelfAttention.relative_attention_bias

    def _check(self, input_ids, inputs_embeds, masks, name="inputs_embeds"):
        """Check the input of a stack called on its own; return `masks` `[(name, mask, shape)]`
        in their final form (see `t5edu.t5_checks.check_values`): one host sync in all."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"pass exactly one of input_ids and {name}")
        ids = []
        if inputs_embeds is None:
            check_ids_structure("input_ids", input_ids)
            ids.append(("input_ids", input_ids, False))
        else:
            check_embeds(name, inputs_embeds, self.config.d_model, self.embed_tokens.weight.dtype)
        for mask_name, mask, shape in masks:
            check_mask_structure(mask_name, mask, shape)
        vocab = self.embed_tokens.num_embeddings
        return check_values(ids, vocab, [(n, m) for n, m, _ in masks])

    def _embed(self, input_ids, inputs_embeds):
        return self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds

    def _run(self, h, position_bias, attention_mask, enc=None, enc_mask=None, cache=None):
        # The masks arrive in their final form: bool, or None when they hide nothing (dropped
        # once where the input was checked, which spares every layer building and adding a
        # (B, H, Tq, Tk) mask; HF builds it regardless). Same outputs either way.
        h = dropout(self.dropout, h)
        for block in self.block:
            if self.gradient_checkpointing and self.training and cache is None:
                h = checkpoint(
                    block, h, position_bias, attention_mask, enc, enc_mask, None, self.rope,
                    use_reentrant=False,
                )  # fmt: skip
            else:
                h = block(h, position_bias, attention_mask, enc, enc_mask, cache, self.rope)
        return dropout(self.dropout, self.final_layer_norm(h))


class T5Encoder(_T5Stack):
    """Bidirectional stack: forward(input_ids `(B, S)` | inputs_embeds `(B, S, D)`,
    attention_mask `(B, S)` 1 = token, 0 = padding, validate) -> `T5EncoderOutput`. HF's
    encoder `T5Stack`.

    `validate=True` (a call from outside) checks the input as `T5Model.forward` does (ValueError
    naming the argument; the value checks are one host sync, skipped under `torch.compile`).
    The model, which checked its input already, passes `validate=False` with the mask in its
    final form (bool, or None when it hides nothing).
    """

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding):
        super().__init__(config, embed_tokens, is_decoder=False)

    def forward(
        self, input_ids=None, attention_mask=None, inputs_embeds=None, validate: bool = True
    ) -> T5EncoderOutput:
        if validate:
            x = input_ids if inputs_embeds is None else inputs_embeds
            shape = None if x is None else tuple(x.shape[:2])
            (attention_mask,) = self._check(
                input_ids, inputs_embeds, [("attention_mask", attention_mask, shape)]
            )
        h = self._embed(input_ids, inputs_embeds)  # (B, S, D)
        bias = self.self_attention_bias(h.shape[1], h.shape[1])
        return T5EncoderOutput(self._run(h, bias, attention_mask))


class T5Decoder(_T5Stack):
    """Causal stack with cross-attention to the encoder output. HF's decoder `T5Stack`.

    forward(input_ids `(B, T)` | inputs_embeds, encoder_hidden_states `(B, S, D)`,
    encoder_attention_mask `(B, S)`, attention_mask `(B, past + T)`, past_key_values: a
    `T5Cache` holding `past` positions or None, use_cache, position_bias: a precomputed
    `(1, H, T, past + T)` bias (generation slices one table) or None to compute it; a given
    tensor is used as is, also by `t5_flash`, which then runs `flash` with it), validate
    -> `T5DecoderOutput`. With use_cache and no cache given, a new `T5Cache` is started.

    `validate=True` (a call from outside) checks ids, embeds, masks, the encoder states' and
    the given bias's shapes (ValueError naming the argument; value checks in one host sync,
    skipped under `torch.compile`). The model and each decoding step pass `validate=False`
    with masks in their final form (bool, or None when they hide nothing): no step re-checks.
    """

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding):
        super().__init__(config, embed_tokens, is_decoder=True)

    def forward(
        self,
        input_ids=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        attention_mask=None,
        inputs_embeds=None,
        past_key_values: T5Cache | None = None,
        use_cache: bool = False,
        position_bias: torch.Tensor | None = None,
        validate: bool = True,
    ) -> T5DecoderOutput:
        cache = past_key_values
        past = cache.length if cache is not None else 0
        if validate:
            attention_mask, encoder_attention_mask = self._check_decoder_input(
                input_ids, inputs_embeds, encoder_hidden_states, encoder_attention_mask,
                attention_mask, past, position_bias,
            )  # fmt: skip
        h = self._embed(input_ids, inputs_embeds)  # (B, T, D)
        if use_cache and cache is None:
            cache = T5Cache(len(self.block))
        t = h.shape[1]
        if position_bias is None:
            position_bias = self.self_attention_bias(t, past + t, past)
        h = self._run(h, position_bias, attention_mask, encoder_hidden_states,
                      encoder_attention_mask, cache)  # fmt: skip
        if cache is not None:
            cache.advance(t)
        return T5DecoderOutput(h, cache)

    def _check_decoder_input(self, input_ids, inputs_embeds, enc, enc_mask, mask, past, bias):
        x = input_ids if inputs_embeds is None else inputs_embeds
        b, t = (None, None) if x is None else tuple(x.shape[:2])
        d = self.config.d_model
        if not isinstance(enc, torch.Tensor) or enc.dim() != 3 or enc.shape[-1] != d:
            got = tuple(enc.shape) if isinstance(enc, torch.Tensor) else type(enc).__name__
            raise ValueError(
                f"encoder_hidden_states must be (batch, src_len, d_model={d}); got {got}"
            )
        masks = [("encoder_attention_mask", enc_mask, tuple(enc.shape[:2]))]
        if t is not None:
            masks.append(("attention_mask", mask, (b, past + t)))
            if b != enc.shape[0]:
                raise ValueError(
                    f"input_ids must have the encoder's batch size {enc.shape[0]}; got {b}"
                )
            if isinstance(bias, torch.Tensor):
                full = (b, self.config.num_heads, t, past + t)
                ok = 2 <= bias.dim() <= 4 and all(
                    s in (1, f) for s, f in zip(bias.shape[::-1], full[::-1], strict=False)
                )
                if not ok:
                    raise ValueError(
                        f"position_bias must broadcast to (batch, heads, tgt_len, past + "
                        f"tgt_len) = {full}; got shape {tuple(bias.shape)}"
                    )
        final = self._check(input_ids, inputs_embeds, masks)
        return (final[1] if t is not None else mask), final[0]


__all__ = ["T5Encoder", "T5Decoder", "T5EncoderOutput", "T5DecoderOutput"]
