"""The `t5_flash` backend: a whole T5 whose self-attention gathers its relative bias per tile.

T5's self-attention layers call `t5edu.t5_flash_attention` with block 0's `(num_buckets, H)`
table (no `(1, H, Tq, Tk)` bias is built); cross-attention and the registry function
`t5edu.attention(..., backend="t5_flash")` run `flash`. Checked against the `naive` backend on
the same weights: loss, every gradient (the bias tables included), cached decoding, generate.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch

import t5edu
from t5edu import T5Config, T5ForConditionalGeneration, attention
from t5edu.relative_position import RelativePositionBias
from t5edu.t5_attention import RelativeBiasTable, T5Attention
from t5edu.t5_flash import t5_flash_attention

VOCAB = 61
# 8 buckets with max_distance 20: lengths up to 25 reach the log-spaced and the last buckets.
CONFIG = dict(
    vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
    num_decoder_layers=2, relative_attention_num_buckets=8, relative_attention_max_distance=20,
    dropout_rate=0.0,
)  # fmt: skip


def pair(backend: str = "t5_flash", **overrides):
    """(model with `backend`, the same weights with `naive`), float32, eval mode."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**{**CONFIG, **overrides}))
    ref = copy.deepcopy(model)
    model.set_attention_backend(backend)
    ref.set_attention_backend("naive")
    return model.eval(), ref.eval()


def batch(seed: int = 1, src_len: int = 25, tgt_len: int = 23):
    """Padded encoder and decoder rows (one source row keeps only 6 tokens), labels with -100."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (3, src_len), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = 0
    labels = torch.randint(2, VOCAB, (3, tgt_len), generator=g)
    dec_mask = torch.ones_like(labels)
    dec_mask[0, 15:] = 0
    labels[0, 15:] = -100
    return dict(input_ids=ids, attention_mask=mask, labels=labels, decoder_attention_mask=dec_mask)


@pytest.fixture
def calls(monkeypatch):
    """Record every `t5_flash_attention_unchecked` call T5Attention makes (its keyword
    arguments), running the checked `t5_flash_attention`, so its checks pass on them too."""
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return t5_flash_attention(*args, **kwargs)

    monkeypatch.setattr("t5edu.t5_attention.t5_flash_attention_unchecked", spy)
    return seen


def small_tiles(monkeypatch):
    """Run the model's t5_flash calls with 8 x 8 tiles: several tiles, ragged last ones."""
    fn = functools.partial(t5_flash_attention, block_q=8, block_k=8)
    monkeypatch.setattr("t5edu.t5_attention.t5_flash_attention_unchecked", fn)


def test_backend_is_registered_and_accepted_by_the_model():
    assert "t5_flash" in t5edu.BACKENDS
    model = T5ForConditionalGeneration(T5Config(**CONFIG, attention_backend="t5_flash"))
    backends = {m.backend for m in model.modules() if isinstance(m, T5Attention)}
    assert backends == {"t5_flash"}
    assert t5edu.t5_flash_attention is t5_flash_attention


@pytest.mark.parametrize("tiles", ["default", "8x8"])
def test_loss_and_every_gradient_match_naive(tiles, monkeypatch):
    if tiles == "8x8":
        small_tiles(monkeypatch)
    model, ref = pair()
    inputs = batch()
    got, want = model(**inputs), ref(**inputs)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    got.loss.backward()
    want.loss.backward()
    theirs = dict(ref.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in names
    assert "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in names
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-5, rtol=0, msg=name)


def test_self_attention_uses_the_tables_and_never_materialises_the_bias(calls, monkeypatch):
    def no_materialised_bias(self, *args, **kwargs):
        raise AssertionError("RelativePositionBias.bias built a (1, H, Tq, Tk) bias")

    monkeypatch.setattr(RelativePositionBias, "bias", no_materialised_bias)
    model, _ = pair()
    model(**batch()).loss.backward()  # forward and backward, no materialised bias
    enc = model.encoder.relative_attention_bias
    dec = model.decoder.relative_attention_bias
    assert [c["bidirectional"] for c in calls] == [True, True, False, False]
    assert all(c["num_buckets"] == 8 and c["max_distance"] == 20 for c in calls)
    assert [c["causal"] for c in calls] == [False, False, True, True]
    assert [c["offset"] for c in calls] == [0, 0, 0, 0]
    assert enc.weight.grad is not None and dec.weight.grad is not None
    assert enc.weight.grad.abs().sum() > 0 and dec.weight.grad.abs().sum() > 0


def test_cached_decoding_passes_the_cache_length_as_offset(calls):
    model, ref = pair()
    inputs = batch()
    enc_in = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    tokens = inputs["labels"].clamp_min(0)[:, :6]
    with torch.no_grad():
        full = ref(**enc_in, decoder_input_ids=tokens).logits  # (3, 6, V), no cache
        enc = model.encoder(**enc_in).last_hidden_state
        cache, steps = None, []
        for t in range(tokens.shape[1]):
            out = model(
                encoder_outputs=enc, attention_mask=inputs["attention_mask"],
                decoder_input_ids=tokens[:, t : t + 1], past_key_values=cache, use_cache=True,
            )  # fmt: skip
            cache = out.past_key_values
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    decoder_calls = [c for c in calls if not c["bidirectional"]]
    assert [c["offset"] for c in decoder_calls] == [t for t in range(6) for _ in range(2)]
    assert not any(c["causal"] for c in decoder_calls)  # one query sees every cached key


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generate_gives_the_naive_tokens(use_cache):
    model, ref = pair()
    inputs = batch()
    args = dict(max_new_tokens=12, use_cache=use_cache)
    got = model.generate(inputs["input_ids"], inputs["attention_mask"], **args)
    want = ref.generate(inputs["input_ids"], inputs["attention_mask"], **args)
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "args",
    [
        dict(max_new_tokens=30, use_cache=True),  # past max_distance 20: the last bucket
        dict(max_new_tokens=30, use_cache=False),
        dict(max_new_tokens=10, num_beams=3),
    ],
    ids=["greedy-cached", "greedy-uncached", "beam-3"],
)
def test_generate_reads_the_table_and_builds_no_bias_rows(args, calls, monkeypatch):
    """With every decoder layer on t5_flash, generate hands the layers the table (offset = the
    cache length) instead of bias rows: no by-distance vector, no (1, H, Tq, Tk) bias."""
    model, ref = pair()
    inputs = batch()
    want = ref.generate(inputs["input_ids"], inputs["attention_mask"], **args)

    def no_bias(self, *a, **kw):
        raise AssertionError("a decoding step built bias rows instead of reading the table")

    monkeypatch.setattr(RelativePositionBias, "bias_by_distance", no_bias)
    monkeypatch.setattr(RelativePositionBias, "bias", no_bias)
    got = model.generate(inputs["input_ids"], inputs["attention_mask"], **args)
    assert torch.equal(got, want)
    offsets = [c["offset"] for c in calls if not c["bidirectional"]]
    steps = got.shape[1] - 1  # tokens decoded after the start token
    if args.get("use_cache", True):
        assert offsets == [t for t in range(steps) for _ in range(2)]
    else:  # each step runs the whole prefix from position 0
        assert offsets == [0] * (2 * steps)


def test_gradient_checkpointing_gives_the_same_gradients():
    model, _ = pair()
    plain = copy.deepcopy(model)
    model.gradient_checkpointing_enable()
    model.train()
    plain.train()
    inputs = batch()
    model(**inputs).loss.backward()
    plain(**inputs).loss.backward()
    theirs = dict(plain.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-6, rtol=0, msg=name)


def test_training_with_dropout_raises_the_no_dropout_error():
    model, _ = pair(dropout_rate=0.1)
    model.train()
    with pytest.raises(ValueError, match="dropout_p must be 0.0 for the 't5_flash' backend"):
        model(**batch())
    model.eval()  # no dropout at evaluation: runs
    assert torch.isfinite(model(**batch()).loss)


def test_registry_function_falls_back_to_flash_with_the_materialised_bias():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 3, 9, 9, generator=g, requires_grad=True)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    kw = dict(bias=bias, attention_mask=mask, causal=True, scale=1.0)
    got = attention(q, k, v, backend="t5_flash", **kw)
    grads = torch.autograd.grad(got.sum(), (q, k, v, bias))
    want = attention(q, k, v, backend="flash", **kw)
    assert torch.equal(got, want)
    for a, b in zip(grads, torch.autograd.grad(want.sum(), (q, k, v, bias)), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="dropout_p must be 0.0 for the 't5_flash' backend"):
        attention(q, k, v, dropout_p=0.1, backend="t5_flash")


def test_a_layer_on_another_backend_materialises_a_table_spec():
    torch.manual_seed(0)
    layer = T5Attention(T5Config(**CONFIG), has_relative_attention_bias=True).eval()
    x = torch.randn(2, 7, 32)
    rpb = layer.relative_attention_bias
    spec = RelativeBiasTable(rpb, offset=0)
    with torch.no_grad():
        want = layer(x, position_bias=rpb(7, 7))
        got = layer(x, position_bias=spec)  # naive backend: materialised, same numbers
        assert torch.equal(got, want)
        layer.backend = "t5_flash"
        torch.testing.assert_close(layer(x, position_bias=spec), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("position_encoding", ["rope", "alibi"])
def test_models_without_a_bias_table_run_flash(position_encoding, calls):
    model, ref = pair(position_encoding=position_encoding)
    inputs = batch()
    got, want = model(**inputs), ref(**inputs)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=0)
    assert calls == []  # no table: every layer ran flash through the registry
