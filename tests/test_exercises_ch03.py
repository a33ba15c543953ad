"""Chapter 3's exercises: typical wrong answers fail with a verdict that names what is wrong, and
the block diagram's data (`t5edu.viz_blocks`) is what t5edu's blocks and stacks call, in order.

`WRONG` is run by `tests/test_exercises.py`, with every chapter's, by one test.
"""

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import t5edu  # noqa: E402
from t5edu import viz_blocks  # noqa: E402
from t5edu.exercises import ch03 as ex3  # noqa: E402
from t5edu.exercises import check  # noqa: E402


def _shapes(inner_width=False, bias_without_batch=False, logits_width_d=False):
    def fn(config, batch, src_len, tgt_len):
        b, s, t, h = batch, src_len, tgt_len, config.num_heads
        d = config.num_heads * config.d_kv if inner_width else config.d_model
        v = config.d_model if logits_width_d else config.vocab_size
        bias = (lambda q, k: (h, q, k)) if bias_without_batch else (lambda q, k: (1, h, q, k))
        return (b, s, d), (b, t, d), (b, t, v), bias(s, s), bias(t, t)

    return fn


def _lm_logits(never_rescale=False, always_rescale=False):
    def fn(hidden, shared_weight, lm_head_weight=None):
        head = shared_weight if lm_head_weight is None else lm_head_weight
        rescale = always_rescale or (lm_head_weight is None and not never_rescale)
        scale = shared_weight.shape[1] ** -0.5 if rescale else 1.0
        return (hidden * scale) @ head.T

    return fn


def _count(always_untied=False, square_attention=False, ignore_gate=False, bias_per_block=False,
           no_final_norms=False):  # fmt: skip
    def fn(config):
        c, d = config, config.d_model
        inner = d if square_attention else c.num_heads * c.d_kv
        attention, n_ff = 4 * d * inner, 2 if ignore_gate else (3 if c.is_gated_act else 2)
        ffn, bias = n_ff * d * c.d_ff, c.relative_attention_num_buckets * c.num_heads
        final = 0 if no_final_norms else d
        enc = c.num_layers * (attention + ffn + 2 * d + bias * bias_per_block) + final + bias
        dec = c.num_decoder_layers * (2 * attention + ffn + 3 * d + bias * bias_per_block)
        dec += final + bias
        tied = c.tie_word_embeddings and not always_untied
        return c.vocab_size * d * (1 if tied else 2) + enc + dec - 2 * bias * bias_per_block

    return fn


def _block(norm_encoder=False, no_causal=False, scaled=False, post_norm=False, no_enc_mask=False,
           bias_in_cross=False):  # fmt: skip
    def fn(x, encoder_hidden_states, weights, position_bias, encoder_attention_mask, num_heads):
        w, t = weights, x.shape[1]

        def norm(y, name):
            return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * w[f"{name}.weight"]

        def attention(p, y, kv, bias, mask):
            def split(z):
                return z.view(z.shape[0], z.shape[1], num_heads, -1).transpose(1, 2)

            q, k, v = (split(a @ w[f"{p}.{n}.weight"].T) for n, a in (("q", y), ("k", kv),
                                                                       ("v", kv)))  # fmt: skip
            scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scaled else 1.0) + bias
            out = scores.masked_fill(~mask, -math.inf).softmax(-1) @ v
            return out.transpose(1, 2).flatten(2) @ w[f"{p}.o.weight"].T

        def sublayer(x, name, f):  # pre-norm x + f(norm(x)), or post-norm norm(x + f(x))
            return norm(x + f(x), name) if post_norm else x + f(norm(x, name))

        causal = torch.ones(t, t, dtype=torch.bool)
        causal = causal if no_causal else causal.tril()
        enc = encoder_hidden_states
        enc = norm(enc, "layer.1.layer_norm") if norm_encoder else enc
        enc_mask = encoder_attention_mask[:, None, None, :]
        enc_mask = torch.ones_like(enc_mask) if no_enc_mask else enc_mask
        cross_bias = position_bias if bias_in_cross else 0.0
        x = sublayer(
            x,
            "layer.0.layer_norm",
            lambda h: attention("layer.0.SelfAttention", h, h, position_bias, causal),
        )
        cross = "layer.1.EncDecAttention"
        x = sublayer(x, "layer.1.layer_norm",
                     lambda h: attention(cross, h, enc, cross_bias, enc_mask))  # fmt: skip

        def ffn(h, p="layer.2.DenseReluDense"):
            if f"{p}.wi_0.weight" in w:
                a = F.gelu(h @ w[f"{p}.wi_0.weight"].T, approximate="tanh")
                a = a * (h @ w[f"{p}.wi_1.weight"].T)
            else:
                a = F.relu(h @ w[f"{p}.wi.weight"].T)
            return a @ w[f"{p}.wo.weight"].T

        return sublayer(x, "layer.2.layer_norm", ffn)

    return fn


def _flops(macs=False, cross_kv_on_target=False, no_head=False, no_scores=False):
    def fn(config, batch, src_len, tgt_len):
        c, b, s, t = config, batch, src_len, tgt_len
        d, inner, n_ff = c.d_model, c.num_heads * c.d_kv, 3 if c.is_gated_act else 2
        per = 1 if macs else 2

        def attention(tq, tk):
            proj = 2 * per * b * tq * d * inner + 2 * per * b * tk * d * inner
            return proj + (0 if no_scores else 2 * per * b * tq * tk * inner)

        ffn = lambda n: n_ff * per * b * n * d * c.d_ff  # noqa: E731
        enc = c.num_layers * (attention(s, s) + ffn(s))
        dec = c.num_decoder_layers * (attention(t, t) + attention(t, t if cross_kv_on_target else s)
                                      + ffn(t))  # fmt: skip
        return enc + dec + (0 if no_head else per * b * t * d * c.vocab_size)

    return fn


WRONG = [
    ("ch03.stack_shapes", _shapes(inner_width=True), "output[0][2]: expected 24, got 30"),
    ("ch03.stack_shapes", _shapes(bias_without_batch=True), "output[3]: expected a tuple of 4"),
    ("ch03.stack_shapes", _shapes(logits_width_d=True), "output[2][2]: expected 100, got 32"),
    ("ch03.lm_logits", _lm_logits(never_rescale=True), "wrong values"),
    ("ch03.lm_logits", _lm_logits(always_rescale=True), "wrong values"),
    ("ch03.num_parameters", _count(always_untied=True), "expected 44800, got 48000"),
    ("ch03.num_parameters", _count(square_attention=True), "expected 31248, got 27216"),
    ("ch03.num_parameters", _count(ignore_gate=True), "expected 13952, got 11392"),
    ("ch03.num_parameters", _count(bias_per_block=True), "expected 44800, got 45056"),
    ("ch03.num_parameters", _count(no_final_norms=True), "expected 44800, got 44736"),
    ("ch03.decoder_block", _block(norm_encoder=True), "wrong values"),
    ("ch03.decoder_block", _block(no_causal=True), "wrong values"),
    ("ch03.decoder_block", _block(scaled=True), "wrong values"),
    ("ch03.decoder_block", _block(post_norm=True), "wrong values"),
    ("ch03.decoder_block", _block(no_enc_mask=True), "case 1/4 (x (2, 5, 24)"),
    ("ch03.decoder_block", _block(bias_in_cross=True), "raised RuntimeError"),
    ("ch03.forward_flops", _flops(macs=True), "expected 898048, got 449024"),
    ("ch03.forward_flops", _flops(cross_kv_on_target=True), "expected 525720, got 573240"),
    ("ch03.forward_flops", _flops(no_head=True), "expected 898048, got 859648"),
    ("ch03.forward_flops", _flops(no_scores=True), "expected 898048, got 857600"),
]  # fmt: skip


def test_a_decoder_block_without_the_encoder_mask_fails_only_where_a_source_is_padded(capsys):
    assert check("ch03.decoder_block", _block(no_enc_mask=True)) is False
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "  case 2/4: ok"  # one source, no padding
    assert "weights=<dense decoder block, D=24, H*Dh=32, F=40>" in lines[1]


# ---- the diagram's data against the model ----------------------------------------------------

_TINY = dict(vocab_size=40, d_model=16, d_kv=4, num_heads=2, d_ff=24, num_layers=2,
             num_decoder_layers=3, dropout_rate=0.1)  # fmt: skip


@pytest.mark.parametrize("ffn", ["relu", "gated-gelu"])
@pytest.mark.parametrize("is_decoder", [False, True])
def test_block_spec_is_the_order_t5edu_calls_its_modules(ffn, is_decoder):
    config = t5edu.T5Config(**_TINY, feed_forward_proj=ffn)
    model = t5edu.T5ForConditionalGeneration(config).train()  # train: dropout modules run
    stack = model.decoder if is_decoder else model.encoder
    x, enc = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    block = stack.block[1]
    got = viz_blocks.call_order(block, lambda: block(x, None, None, enc if is_decoder else None))
    assert got == viz_blocks.block_call_order(viz_blocks.block_spec(config, is_decoder))
    norms = [m for m in block.modules() if isinstance(m, t5edu.RMSNorm)]
    assert len(norms) == len(viz_blocks.block_spec(config, is_decoder)) == 2 + is_decoder
    ids = torch.randint(0, 40, (2, 5))
    run = (lambda: stack(ids, encoder_hidden_states=enc)) if is_decoder else (lambda: stack(ids))
    top = [n for d, n in viz_blocks.call_order(stack, run) if d == 0]
    assert top == viz_blocks.stack_call_order(config, is_decoder)


def test_call_order_sees_no_dropout_in_eval_and_removes_its_hooks():
    model = t5edu.T5ForConditionalGeneration(t5edu.T5Config(**_TINY)).eval()
    block = model.encoder.block[0]
    got = viz_blocks.call_order(block, lambda: block(torch.randn(1, 3, 16)))
    assert "layer.0.dropout" not in [n for _, n in got]
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in block.modules())


def test_the_diagram_draws_and_refuses_configs_that_are_not_t5():
    config = t5edu.T5Config(**_TINY, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    ax = viz_blocks.draw_t5_blocks(config)
    texts = [t.get_text() for t in ax.texts]
    assert "encoder block \u00d7 2" in texts and "decoder block \u00d7 3" in texts
    assert sum(t == "RMSNorm" for t in texts) == 2 + 3
    assert sum(t == "dropout" for t in texts) == (2 + 3) + 2 * 2  # sub-layers, stack ends
    plt.close("all")
    with pytest.raises(ValueError, match="position_encoding='rope'"):
        viz_blocks.block_spec(config.replace(position_encoding="rope"), False)


def test_the_exercise_configs_cover_what_the_counts_depend_on():
    configs = [t5edu.T5Config(**c) for c in ex3._CONFIGS]
    assert any(c.num_heads * c.d_kv != c.d_model for c in configs)
    assert {c.is_gated_act for c in configs} == {True, False}
    assert {c.tie_word_embeddings for c in configs} == {True, False}
    assert any(c.num_layers != c.num_decoder_layers for c in configs)
    assert len({c.relative_attention_num_buckets for c in configs}) > 1
