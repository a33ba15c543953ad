"""A "modern T5" is one config away: each position encoding, GLU feed-forward and norm trains.

B batch, S source length, T target length (chapters 5-8).
"""

import pytest
import torch

from t5edu import ALiBi, T5Config
from t5edu.t5_model import T5ForConditionalGeneration

POSITIONS = ["relative_bias", "rope", "alibi"]
FFNS = ["relu", "gated-gelu", "swiglu", "geglu", "reglu", "bilinear"]


def tiny(**kwargs):
    fields = dict(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
    )
    return T5Config(**(fields | kwargs))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(2, 64, (4, 10), generator=g)
    labels = torch.randint(2, 64, (4, 7), generator=g)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[1, 7:] = 0  # some padding, so masks meet the biases
    return src, mask, labels


def train_losses(config, steps=6):
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    src, mask, labels = batch()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=src, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def check_trains(losses):
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < 0.9 * losses[0], losses  # memorising one batch: the loss must fall


@pytest.mark.parametrize("ffn", FFNS)
@pytest.mark.parametrize("position", POSITIONS)
def test_each_position_encoding_and_ffn_trains(position, ffn):
    check_trains(train_losses(tiny(position_encoding=position, feed_forward_proj=ffn)))


@pytest.mark.parametrize("norm_type", ["fast_rmsnorm", "layernorm"])  # rmsnorm: the test above
@pytest.mark.parametrize("position", POSITIONS)
def test_each_norm_trains(position, norm_type):
    config = tiny(position_encoding=position, norm_type=norm_type, feed_forward_proj="swiglu")
    check_trains(train_losses(config))


@pytest.mark.parametrize("position", POSITIONS)
def test_encoder_sees_positions(position):
    # Without position information self-attention is permutation-equivariant; with it, not.
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny(position_encoding=position)).eval()
    src = torch.arange(2, 12)[None]
    perm = torch.tensor([3, 0, 7, 1, 9, 2, 5, 8, 4, 6])
    with torch.no_grad():
        h = model.encoder(src).last_hidden_state
        h_perm = model.encoder(src[:, perm]).last_hidden_state
    assert (h[:, perm] - h_perm).abs().max() > 1e-3


@pytest.mark.parametrize("position", POSITIONS)
def test_cached_decoding_equals_full_decoding(position):
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny(position_encoding=position)).eval()
    src, mask, labels = batch()
    dec = model.shift_right(labels)
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec)
        enc, past, steps = full.encoder_last_hidden_state, None, []
        for t in range(dec.shape[1]):
            out = model(
                encoder_outputs=enc,
                attention_mask=mask,
                decoder_input_ids=dec[:, t : t + 1],
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full.logits, atol=1e-5, rtol=1e-5)


def test_alibi_stacks_use_bidirectional_encoder_and_causal_decoder_bias():
    model = T5ForConditionalGeneration(tiny(position_encoding="alibi"))
    alibi = ALiBi(4)
    assert torch.equal(model.encoder.position_bias(5, 5), alibi.bias(5, 5)[None])
    assert torch.equal(model.decoder.position_bias(5, 5), alibi.bias(5, 5, causal=True)[None])
    names = [n for n, _ in model.named_parameters()]
    assert not any("relative_attention_bias" in n for n in names)


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_bf16_model_runs_with_float32_positions(position):
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny(position_encoding=position)).to(torch.bfloat16)
    src, mask, labels = batch()
    out = model(input_ids=src, attention_mask=mask, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    if position == "alibi":
        assert model.encoder.alibi.slopes.dtype == torch.float32
    else:
        assert model.encoder.rope.cos_sin(4)[0].dtype == torch.float32


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_generate_with_and_without_cache_agree(position):
    # generate() slices one precomputed ALiBi table per step; RoPE rotates with the cache offset.
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny(position_encoding=position)).eval()
    src, mask, _ = batch()
    cached = model.generate(src, mask, max_new_tokens=12, use_cache=True)
    uncached = model.generate(src, mask, max_new_tokens=12, use_cache=False)
    assert torch.equal(cached, uncached)
    beams = model.generate(src, mask, max_new_tokens=8, num_beams=3)
    assert beams.shape[0] == 4 and torch.equal(beams[:, 0], torch.zeros(4, dtype=torch.long))
