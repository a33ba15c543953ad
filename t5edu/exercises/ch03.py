"""Exercises of chapter 3 (the T5 architecture). Expected outputs come from t5edu's model, which
equals HF Transformers' T5 bit for bit (tests/test_t5_parity.py), built at check time: shapes
and logits from running `T5ForConditionalGeneration`, parameter counts from a built model's
`num_parameters()` (not the formula of `t5edu.presets`), a decoder block from `T5Block`, and
FLOPs from `torch.utils.flop_counter.FlopCounterMode` counting that model's matrix products.

B batch, S source length, T target length, H heads, Dh d_kv, D d_model, F d_ff, V vocab_size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from t5edu.config import T5Config
from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.t5_blocks import T5Block
from t5edu.t5_model import T5ForConditionalGeneration

# Small configs the counting exercises run on: heads * d_kv != d_model in some, more decoder
# than encoder blocks, gated and dense feed-forwards, tied and untied heads, other bucket counts.
_CONFIGS = [
    dict(vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2),
    dict(vocab_size=57, d_model=24, d_kv=10, num_heads=3, d_ff=48, num_layers=1,
         num_decoder_layers=3),
    dict(vocab_size=90, d_model=16, d_kv=4, num_heads=2, d_ff=40, num_layers=2,
         feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    dict(vocab_size=64, d_model=20, d_kv=6, num_heads=5, d_ff=36, num_layers=3,
         num_decoder_layers=2, feed_forward_proj="gated-gelu"),
    dict(vocab_size=70, d_model=12, d_kv=4, num_heads=6, d_ff=28, num_layers=1,
         relative_attention_num_buckets=16, relative_attention_max_distance=64,
         tie_word_embeddings=False),
]  # fmt: skip


def _model(fields: dict) -> T5ForConditionalGeneration:
    """The eval-mode model of a config given by its fields (dropout off: outputs deterministic)."""
    return T5ForConditionalGeneration(T5Config(**fields, dropout_rate=0.0)).eval()


def _with_config(answer, inputs: dict):
    """Call the reader's function with a `T5Config` built from the case's `config` fields."""
    rest = {k: v for k, v in inputs.items() if k != "config"}
    return answer(T5Config(**inputs["config"]), **rest)


def _ids(b: int, n: int, vocab: int) -> torch.Tensor:
    return (torch.arange(b * n).view(b, n) * 7 + 2) % vocab  # (b, n), any valid ids


# --- ch03.stack_shapes: what each stack returns (exercise 2) ----------------------------------


def _shape_cases() -> list[dict]:
    sizes = [(2, 7, 3), (1, 5, 9), (3, 1, 1), (2, 4, 4), (1, 6, 2)]
    return [
        {"config": c, "batch": b, "src_len": s, "tgt_len": t}
        for c, (b, s, t) in zip(_CONFIGS, sizes, strict=True)
    ]


def _shapes(inputs: dict) -> tuple:
    m, (b, s, t) = _model(inputs["config"]), (inputs["batch"], inputs["src_len"], inputs["tgt_len"])
    v = m.config.vocab_size
    with torch.no_grad():
        enc = m.encoder(_ids(b, s, v)).last_hidden_state
        dec = m.decoder(_ids(b, t, v), encoder_hidden_states=enc).last_hidden_state
        logits = m(input_ids=_ids(b, s, v), decoder_input_ids=_ids(b, t, v)).logits
        enc_bias, dec_bias = m.encoder.position_bias(s, s), m.decoder.position_bias(t, t)
    return tuple(tuple(x.shape) for x in (enc, dec, logits, enc_bias, dec_bias))


def _shapes_solution(config, batch, src_len, tgt_len):
    b, s, t, d, h = batch, src_len, tgt_len, config.d_model, config.num_heads
    return (b, s, d), (b, t, d), (b, t, config.vocab_size), (1, h, s, s), (1, h, t, t)


register(
    Exercise(
        id="ch03.stack_shapes",
        task="stack_shapes(config, batch, src_len, tgt_len) -> the shapes (tuples of ints) of "
        "(encoder output, decoder output, logits, encoder position bias, decoder position bias)",
        cases=_shape_cases,
        expected=_shapes,
        solution=lambda: _shapes_solution,
        run=_with_config,
    )
)

# --- ch03.lm_logits: the tied and the untied head (exercise 3) --------------------------------


def _head_cases() -> list[dict]:
    gen = seeded(301)
    cases = []
    for b, t, d, v, tied in [(2, 3, 64, 50, True), (2, 3, 64, 50, False), (1, 4, 24, 37, True),
                             (3, 1, 24, 37, False)]:  # fmt: skip
        head = None if tied else randn(gen, v, d) * d**-0.5
        cases.append(
            {"hidden": randn(gen, b, t, d), "shared_weight": randn(gen, v, d),
             "lm_head_weight": head}
        )  # fmt: skip
    return cases


def _lm_logits(inputs: dict) -> torch.Tensor:
    shared, head = inputs["shared_weight"], inputs["lm_head_weight"]
    v, d = shared.shape
    fields = dict(vocab_size=v, d_model=d, d_kv=8, num_heads=2, d_ff=8, num_layers=1)
    m = _model({**fields, "tie_word_embeddings": head is None})
    with torch.no_grad():
        m.shared.weight.copy_(shared)
        if head is not None:
            m.lm_head.weight.copy_(head)
        return m.logits_from_hidden(inputs["hidden"])


def _lm_logits_solution(hidden, shared_weight, lm_head_weight=None):
    if lm_head_weight is None:  # v1.0: the embedding is the head, its input rescaled
        return (hidden * shared_weight.shape[1] ** -0.5) @ shared_weight.T
    return hidden @ lm_head_weight.T


register(
    Exercise(
        id="ch03.lm_logits",
        task="lm_logits(hidden (B, T, D), shared_weight (V, D), lm_head_weight (V, D) or None) "
        "-> (B, T, V) logits; None means the head is tied to the embedding (T5 v1.0)",
        cases=_head_cases,
        expected=_lm_logits,
        solution=lambda: _lm_logits_solution,
        atol=1e-5,
        rtol=1e-5,
        why_tol="float32; relative too, since untied logits reach about sqrt(D)",
    )
)

# --- ch03.num_parameters: a config's parameter count (exercise 5) -----------------------------


def _count_solution(config):
    c, d = config, config.d_model
    attention = 4 * d * c.num_heads * c.d_kv  # q, k, v: D -> H * Dh; o: H * Dh -> D
    ffn = (3 if c.is_gated_act else 2) * d * c.d_ff  # (wi_0, wi_1 or wi), wo
    bias = c.relative_attention_num_buckets * c.num_heads  # block 0 of each stack
    encoder = c.num_layers * (attention + ffn + 2 * d) + d + bias  # 2 norms a block, final norm
    decoder = c.num_decoder_layers * (2 * attention + ffn + 3 * d) + d + bias
    return c.vocab_size * d * (1 if c.tie_word_embeddings else 2) + encoder + decoder


register(
    Exercise(
        id="ch03.num_parameters",
        task="count_parameters(config) -> int, the parameters of T5ForConditionalGeneration("
        "config) (a tied head counted once), from the config's fields alone",
        cases=lambda: [{"config": c} for c in _CONFIGS],
        expected=lambda inputs: _model(inputs["config"]).num_parameters(),
        solution=lambda: _count_solution,
        run=_with_config,
    )
)


# --- ch03.decoder_block: one decoder block from its weights (exercise 6) ----------------------


class _Weights(dict):
    """A block's state dict, printed short when a case fails (its tensors would fill pages)."""

    def __repr__(self) -> str:
        gated = "layer.2.DenseReluDense.wi_0.weight" in self
        d = self["layer.0.layer_norm.weight"].shape[0]
        inner = self["layer.0.SelfAttention.q.weight"].shape[0]
        f = self["layer.2.DenseReluDense.wo.weight"].shape[1]
        return f"<{'gated' if gated else 'dense'} decoder block, D={d}, H*Dh={inner}, F={f}>"


def _block_config(d, dh, h, f, gated) -> T5Config:
    ffn = "gated-gelu" if gated else "relu"
    return T5Config(vocab_size=8, d_model=d, d_kv=dh, num_heads=h, d_ff=f, num_layers=1,
                    feed_forward_proj=ffn, dropout_rate=0.0)  # fmt: skip


def _block_cases() -> list[dict]:
    gen = seeded(302)
    cases = []
    for d, dh, h, f, gated, b, t, s, pad in [
        (24, 8, 4, 40, False, 2, 5, 7, 3),  # the second source has 3 padding positions
        (16, 4, 2, 24, True, 1, 1, 6, 0),  # one target position: the causal mask hides nothing
        (32, 8, 4, 48, True, 3, 6, 4, 1),
        (12, 6, 3, 20, False, 2, 4, 9, 5),
    ]:
        block = T5Block(_block_config(d, dh, h, f, gated), False, is_decoder=True, i=1)
        weights = _Weights()
        for name, p in block.state_dict().items():  # random norms too, so they must be applied
            weights[name] = 1 + 0.3 * randn(gen, *p.shape) if p.dim() == 1 else (
                randn(gen, *p.shape) * p.shape[1] ** -0.5)  # fmt: skip
        mask = torch.ones(b, s, dtype=torch.bool)
        mask[-1, s - pad :] = False
        cases.append(
            {"x": randn(gen, b, t, d), "encoder_hidden_states": randn(gen, b, s, d),
             "weights": weights, "position_bias": randn(gen, 1, h, t, t),
             "encoder_attention_mask": mask, "num_heads": h}
        )  # fmt: skip
    return cases


def _decoder_block(inputs: dict) -> torch.Tensor:
    w, h = inputs["weights"], inputs["num_heads"]
    d, inner = w["layer.0.layer_norm.weight"].shape[0], w["layer.0.SelfAttention.q.weight"].shape[0]
    gated = "layer.2.DenseReluDense.wi_0.weight" in w
    f = w["layer.2.DenseReluDense.wo.weight"].shape[1]
    block = T5Block(_block_config(d, inner // h, h, f, gated), False, is_decoder=True, i=1)
    block.load_state_dict(w)
    with torch.no_grad():
        return block.eval()(
            inputs["x"], inputs["position_bias"], None, inputs["encoder_hidden_states"],
            inputs["encoder_attention_mask"],
        )  # fmt: skip


def _block_solution(x, encoder_hidden_states, weights, position_bias, encoder_attention_mask,
                    num_heads):  # fmt: skip
    w, t = weights, x.shape[1]

    def norm(y, name):
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * w[f"{name}.weight"]

    def attention(p, y, kv, bias, mask):
        def split(z):
            return z.view(z.shape[0], z.shape[1], num_heads, -1).transpose(1, 2)  # (B, H, T, Dh)

        q, k, v = (split(a @ w[f"{p}.{n}.weight"].T) for n, a in (("q", y), ("k", kv), ("v", kv)))
        scores = q @ k.transpose(-1, -2) + bias  # no 1/sqrt(Dh): folded into q's init
        scores = scores.masked_fill(~mask, -math.inf)
        out = scores.softmax(-1) @ v  # (B, H, T, Dh)
        return out.transpose(1, 2).flatten(2) @ w[f"{p}.o.weight"].T

    causal = torch.ones(t, t, dtype=torch.bool).tril()  # (T, T)
    h = norm(x, "layer.0.layer_norm")
    x = x + attention("layer.0.SelfAttention", h, h, position_bias, causal)
    h = norm(x, "layer.1.layer_norm")
    enc_mask = encoder_attention_mask[:, None, None, :]  # (B, 1, 1, S)
    x = x + attention("layer.1.EncDecAttention", h, encoder_hidden_states, 0.0, enc_mask)
    h, ff = norm(x, "layer.2.layer_norm"), "layer.2.DenseReluDense"
    if f"{ff}.wi_0.weight" in w:  # GEGLU: gelu (tanh approximation) gate times a linear unit
        a = F.gelu(h @ w[f"{ff}.wi_0.weight"].T, approximate="tanh") * (
            h @ w[f"{ff}.wi_1.weight"].T
        )
    else:
        a = F.relu(h @ w[f"{ff}.wi.weight"].T)
    return x + a @ w[f"{ff}.wo.weight"].T


register(
    Exercise(
        id="ch03.decoder_block",
        task="decoder_block(x (B, T, D), encoder_hidden_states (B, S, D), weights (a T5Block "
        "state dict), position_bias (1, H, T, T), encoder_attention_mask (B, S) bool, num_heads) "
        "-> (B, T, D), in eval mode; RMSNorm eps 1e-6; gated when weights has wi_0",
        cases=_block_cases,
        expected=_decoder_block,
        solution=lambda: _block_solution,
        atol=1e-5,
        rtol=1e-5,
        why_tol="float32; relative too, since the residual stream reaches about 10",
    )
)

# --- ch03.forward_flops: the matmul FLOPs of a forward pass (exercise 7) ----------------------


def _flop_cases() -> list[dict]:
    sizes = [(2, 7, 3), (1, 5, 9), (3, 8, 8), (2, 16, 4), (1, 3, 6)]
    return [
        {"config": c, "batch": b, "src_len": s, "tgt_len": t}
        for c, (b, s, t) in zip(_CONFIGS, sizes, strict=True)
    ]


def _flops(inputs: dict) -> int:
    # The "naive" backend computes q k^T and weights @ v as plain batched matmuls, which the
    # counter sees (it has no formula for CPU's fused attention kernels).
    from torch.utils.flop_counter import FlopCounterMode

    m = _model({**inputs["config"], "attention_backend": "naive"})
    b, s, t, v = inputs["batch"], inputs["src_len"], inputs["tgt_len"], m.config.vocab_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(input_ids=_ids(b, s, v), decoder_input_ids=_ids(b, t, v))
    return int(counter.get_total_flops())


def _flops_solution(config, batch, src_len, tgt_len):
    c, b, s, t = config, batch, src_len, tgt_len
    d, inner, n_ff = c.d_model, c.num_heads * c.d_kv, 3 if c.is_gated_act else 2

    def matmul(rows, k, n):  # a (rows, k) @ (k, n) product: rows * n dot products of length k
        return 2 * rows * k * n

    def attention(tq, tk):  # q, o on the queries, k, v on the keys, two score products
        proj = 2 * matmul(b * tq, d, inner) + 2 * matmul(b * tk, d, inner)
        return proj + 2 * matmul(b * tq, tk, inner)  # q k^T and weights @ v, all heads

    encoder = c.num_layers * (attention(s, s) + n_ff * matmul(b * s, d, c.d_ff))
    decoder = c.num_decoder_layers * (
        attention(t, t) + attention(t, s) + n_ff * matmul(b * t, d, c.d_ff)
    )
    return encoder + decoder + matmul(b * t, d, c.vocab_size)  # + the LM head


register(
    Exercise(
        id="ch03.forward_flops",
        task="forward_flops(config, batch, src_len, tgt_len) -> int, the FLOPs of every matrix "
        "product in model(input_ids, decoder_input_ids), 2 per multiply-add, as "
        "torch.utils.flop_counter counts them",
        cases=_flop_cases,
        expected=_flops,
        solution=lambda: _flops_solution,
        run=_with_config,
    )
)
