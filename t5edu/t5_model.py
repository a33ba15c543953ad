"""T5Model and T5ForConditionalGeneration: shared embedding, encoder, decoder, LM head (ch. 3).

B batch, S source length, T target length, D d_model, V vocab_size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t5edu.config import T5Config
from t5edu.feed_forward import T5DenseActDense, T5DenseGatedActDense
from t5edu.t5_attention import T5Attention
from t5edu.t5_checks import (
    check_embeds,
    check_ids_structure,
    check_mask_structure,
    check_values,
)
from t5edu.t5_outputs import Seq2SeqLMOutput, Seq2SeqModelOutput
from t5edu.t5_stacks import T5Decoder, T5Encoder, T5EncoderOutput


class T5Model(nn.Module):
    """Encoder-decoder without the LM head; parameter names as HF's `T5Model`.

    forward(input_ids `(B, S)`, attention_mask `(B, S)`, decoder_input_ids `(B, T)`,
    decoder_attention_mask `(B, past + T)`, encoder_outputs (skip the encoder), past_key_values,
    inputs_embeds, decoder_inputs_embeds, use_cache) -> `Seq2SeqModelOutput`. Masks are bool or
    0/1 integers, 1 = attend (HF). The weights are initialised as HF's `_init_weights`.

    Input is checked once, here, before any compute (`_check_inputs`): shapes and dtypes in
    Python, every value check (ids in range, masks 0/1, whether a mask hides anything) in one
    host sync; the masks then reach the layers as bool or None and nothing below checks again.
    Under `torch.compiler.is_compiling()` the value checks are skipped (a graph cannot raise on
    a value without a sync), so the model compiles to one graph; the shape checks remain.

    Raises:
        ValueError: naming the argument, for ids that are not `(batch, length)` integer tensors
            in `[0, vocab_size)`, masks of another shape, mismatched batch sizes, or an unknown
            `config.attention_backend`.
    """

    def __init__(self, config: T5Config):
        super().__init__()
        from t5edu.backends import check_backend

        check_backend(config.attention_backend, "attention_backend")
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Encoder(config, self.shared)
        self.decoder = T5Decoder(config, self.shared)
        self._init_weights()

    # --- helpers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.shared.weight.dtype

    def num_parameters(self) -> int:
        """Distinct parameters (a tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def set_attention_backend(self, backend: str) -> None:
        """Run every attention layer with another backend from `t5edu.backends.BACKENDS`.

        With `"t5_flash"` the self-attention layers with T5's relative bias gather it per tile
        from the bucket table (O(N) memory, see `t5edu.t5_attention.T5Attention`)."""
        from t5edu.backends import check_backend

        check_backend(backend)
        self.config.attention_backend = backend
        for m in self.modules():
            if isinstance(m, T5Attention):
                m.backend = backend

    def gradient_checkpointing_enable(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (training)."""
        self.encoder.gradient_checkpointing = self.decoder.gradient_checkpointing = enable

    @torch.no_grad()
    def _init_weights(self) -> None:
        """HF's initialisation (Mesh TensorFlow's): unit-variance embeddings, 1/sqrt(fan-in)
        projections, and the attention scale folded into q: std (D * Dh)^-0.5."""
        c, f = self.config, self.config.initializer_factor
        nn.init.normal_(self.shared.weight, std=f)
        for m in self.modules():
            if isinstance(m, T5Attention):
                nn.init.normal_(m.q.weight, std=f * (c.d_model * c.d_kv) ** -0.5)
                nn.init.normal_(m.k.weight, std=f * c.d_model**-0.5)
                nn.init.normal_(m.v.weight, std=f * c.d_model**-0.5)
                nn.init.normal_(m.o.weight, std=f * (c.num_heads * c.d_kv) ** -0.5)
                if m.has_relative_attention_bias:
                    nn.init.normal_(m.relative_attention_bias.weight, std=f * c.d_model**-0.5)
            elif isinstance(m, (T5DenseActDense, T5DenseGatedActDense)):
                for name in ("wi", "wi_0", "wi_1"):
                    if hasattr(m, name):
                        nn.init.normal_(getattr(m, name).weight, std=f * c.d_model**-0.5)
                nn.init.normal_(m.wo.weight, std=f * c.d_ff**-0.5)
            elif hasattr(m, "weight") and m.weight is not None and m.weight.dim() == 1:
                nn.init.constant_(m.weight, f)  # norms
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def _embed_both(self, input_ids, decoder_input_ids):
        """Embed source and target with one lookup: training then builds one dense
        (vocab, d_model) embedding gradient instead of two that must be added."""
        n = input_ids.numel()
        emb = self.shared(torch.cat([input_ids.reshape(-1), decoder_input_ids.reshape(-1)]))
        src = emb[:n].view(*input_ids.shape, -1)  # (B, S, D)
        return src, emb[n:].view(*decoder_input_ids.shape, -1)  # (B, T, D)

    def _check_inputs(
        self, input_ids, attention_mask, inputs_embeds, encoder_outputs, decoder_input_ids,
        decoder_attention_mask, decoder_inputs_embeds, past_key_values, labels=None,
        decoder_ids_from_labels=False,
    ):  # fmt: skip
        """Every check of `forward`, once, before any compute: shapes and dtypes in Python,
        then all value checks (ids in range, masks 0/1) in one host sync (`check_values`,
        skipped under `torch.compile`). Returns `(attention_mask, decoder_attention_mask)` in
        their final form: bool, or None when they hide nothing. Stacks, blocks, layers and
        decoding steps check nothing more."""
        c, ids = self.config, []
        if labels is not None:
            check_ids_structure("labels", labels)
            ids.append(("labels", labels, True))
        if encoder_outputs is not None:
            src_shape = tuple(encoder_outputs.last_hidden_state.shape[:2])
        else:
            if input_ids is not None:
                check_ids_structure("input_ids", input_ids)
                ids.append(("input_ids", input_ids, False))
            elif inputs_embeds is None:
                raise ValueError("pass input_ids (or inputs_embeds, or encoder_outputs)")
            src_shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape[:2])
            check_mask_structure("attention_mask", attention_mask, src_shape)
            if input_ids is not None and inputs_embeds is not None:
                raise ValueError("pass exactly one of input_ids and inputs_embeds")
            if inputs_embeds is not None:
                check_embeds("inputs_embeds", inputs_embeds, c.d_model, self.dtype)
        if decoder_input_ids is not None:
            check_ids_structure("decoder_input_ids", decoder_input_ids)
            if not decoder_ids_from_labels:  # shifted labels are in range when labels are
                ids.append(("decoder_input_ids", decoder_input_ids, False))
            if decoder_inputs_embeds is not None:
                raise ValueError("pass exactly one of decoder_input_ids and decoder_inputs_embeds")
            b, t = decoder_input_ids.shape
        elif decoder_inputs_embeds is not None:
            check_embeds("decoder_inputs_embeds", decoder_inputs_embeds, c.d_model, self.dtype)
            b, t = decoder_inputs_embeds.shape[:2]
        else:
            raise ValueError("pass decoder_input_ids (or labels, or decoder_inputs_embeds)")
        if b != src_shape[0]:
            raise ValueError(
                f"decoder_input_ids must have the encoder's batch size {src_shape[0]}; got {b}"
            )
        check_mask_structure("attention_mask", attention_mask, src_shape)
        past = past_key_values.length if past_key_values is not None else 0
        check_mask_structure("decoder_attention_mask", decoder_attention_mask, (b, past + t))
        masks = [
            ("attention_mask", attention_mask),
            ("decoder_attention_mask", decoder_attention_mask),
        ]
        return check_values(ids, c.vocab_size, masks)

    @staticmethod
    def _as_encoder_output(encoder_outputs):
        if isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = encoder_outputs[0]
        if isinstance(encoder_outputs, torch.Tensor):
            encoder_outputs = T5EncoderOutput(encoder_outputs)
        return encoder_outputs

    def _run(
        self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
        encoder_outputs, past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache,
        labels=None, decoder_ids_from_labels=False,
    ):  # fmt: skip
        """Check once, then encode (unless `encoder_outputs`) and decode; `(enc, dec)` outputs."""
        enc = self._as_encoder_output(encoder_outputs)
        attention_mask, decoder_attention_mask = self._check_inputs(
            input_ids, attention_mask, inputs_embeds, enc, decoder_input_ids,
            decoder_attention_mask, decoder_inputs_embeds, past_key_values, labels,
            decoder_ids_from_labels,
        )  # fmt: skip
        if (
            torch.is_grad_enabled()
            and self.shared.weight.requires_grad
            and input_ids is not None
            and decoder_input_ids is not None
            and enc is None
            and past_key_values is None
        ):
            inputs_embeds, decoder_inputs_embeds = self._embed_both(input_ids, decoder_input_ids)
            input_ids = decoder_input_ids = None
        if enc is None:
            enc = self.encoder(input_ids, attention_mask, inputs_embeds, validate=False)
        if use_cache is None:
            use_cache = past_key_values is not None
        dec = self.decoder(
            decoder_input_ids, enc.last_hidden_state, attention_mask, decoder_attention_mask,
            decoder_inputs_embeds, past_key_values, use_cache, validate=False,
        )  # fmt: skip
        return enc, dec

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        past_key_values=None,
        inputs_embeds=None,
        decoder_inputs_embeds=None,
        use_cache=None,
    ) -> Seq2SeqModelOutput:
        enc, dec = self._run(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
            encoder_outputs, past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache,
        )  # fmt: skip
        return Seq2SeqModelOutput(dec.last_hidden_state, dec.past_key_values, enc.last_hidden_state)


def lm_head_init_std(config: T5Config) -> float:
    """Init std of an untied LM head (`config.lm_head_init`).

    "hf": `initializer_factor` (HF's `_init_weights`, copied by nanoT5). The head then sees a
    normalised hidden state of RMS ~1 and returns logits of std ~sqrt(d_model), so a fresh
    model's loss is tens of nats instead of ln V. "fan_in": `initializer_factor * d_model**-0.5`,
    Mesh TensorFlow's default for the untied `logits` dense layer (variance 1/fan_in), which
    gives logits of std ~1 and a first loss near ln V. Discussed in HF PR 26441 and nanoT5
    issue 25; the tied head (T5 v1.0) instead rescales its input by d_model**-0.5.
    """
    scale = config.d_model**-0.5 if config.lm_head_init == "fan_in" else 1.0
    return config.initializer_factor * scale


class T5ForConditionalGeneration(T5Model):
    """T5 with its language-model head: the model HF's `T5ForConditionalGeneration` runs.

    forward(..., labels `(B, T)` with -100 = ignore) -> `Seq2SeqLMOutput` with `.loss`,
    `.logits` `(B, T, V)`, `.past_key_values`, `.encoder_last_hidden_state`. Without
    decoder_input_ids, labels shifted right (decoder_start_token_id first, -100 -> pad) are
    the decoder input. The head is tied to `shared` when `config.tie_word_embeddings` (T5 v1.0)
    and separate otherwise (v1.1, FLAN-T5); when `config.scale_decoder_outputs` (default: when
    tied) the decoder output is multiplied by d_model**-0.5 first, since the unit-variance
    embedding would otherwise give logits sqrt(D) times too large. The loss is cross-entropy in
    float32, averaged over the labels that are not -100. In float16, each sub-layer's output is
    clamped below the fp16 maximum once it overflows (T5's feed-forward outputs exceed 65504;
    see `t5edu.t5_blocks.clamp_fp16_inf`), exactly as HF's T5 does; bf16 needs no clamp.

    Also: `generate(...)` (see `t5edu.generation.generate`), `from_pretrained(path)` and
    `save_pretrained(path)` (see `t5edu.hf`). Raises ValueError as `T5Model`, and for labels
    outside `[0, vocab_size)` other than -100.
    """

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=lm_head_init_std(config))

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """`(B, T)` decoder inputs: decoder_start_token_id, then labels[:, :-1]; -100 -> pad."""
        shifted = labels.new_empty(labels.shape)
        shifted[:, 1:] = labels[:, :-1]
        shifted[:, 0] = self.config.decoder_start_token_id
        return shifted.masked_fill_(shifted == -100, self.config.pad_token_id)

    _shift_right = prepare_decoder_input_ids_from_labels = shift_right  # HF's names

    def logits_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """LM head on decoder output `(B, T, D)` -> `(B, T, V)`, rescaled first when configured."""
        if self.config.scale_decoder_outputs:
            h = h * (self.config.d_model**-0.5)
        return self.lm_head(h)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        past_key_values=None,
        inputs_embeds=None,
        decoder_inputs_embeds=None,
        labels=None,
        use_cache=None,
    ) -> Seq2SeqLMOutput:
        from_labels = (
            labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None
        )
        if from_labels:
            check_ids_structure("labels", labels)  # before shifting it
            decoder_input_ids = self.shift_right(labels)
        enc, dec = self._run(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
            encoder_outputs, past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache,
            labels, from_labels,
        )  # fmt: skip
        logits = self.logits_from_hidden(dec.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(
                    f"labels must be (batch, tgt_len) = {tuple(logits.shape[:2])} like the decoder "
                    f"input; got shape {tuple(labels.shape)}"
                )
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
            )
        return Seq2SeqLMOutput(loss, logits, dec.past_key_values, enc.last_hidden_state)

    def generate(self, input_ids, attention_mask=None, **kwargs) -> torch.Tensor:
        """Greedy, sampling or beam search; see `t5edu.generation.generate` for the arguments."""
        from t5edu.generation import generate

        return generate(self, input_ids, attention_mask, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_name, **kwargs) -> T5ForConditionalGeneration:
        """Load an HF checkpoint directory; see `t5edu.hf.from_pretrained`."""
        from t5edu.hf import from_pretrained

        return from_pretrained(path_or_name, **kwargs)

    def save_pretrained(self, path) -> None:
        """Write an HF checkpoint directory; see `t5edu.hf.save_pretrained`."""
        from t5edu.hf import save_pretrained

        save_pretrained(self, path)


__all__ = ["T5Model", "T5ForConditionalGeneration", "Seq2SeqLMOutput", "Seq2SeqModelOutput"]
