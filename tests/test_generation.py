"""generate() against HF's generate: greedy, beam search and sampling, token for token.

Random models rarely emit EOS, so each comparison first makes EOS win wherever the model's most
frequent output token would have (its LM-head row becomes 1.01x that token's): rows then stop
at different steps, which exercises per-row stopping, padding and beam bookkeeping.

transformers 5.24 cannot generate with its cache when num_decoder_layers > num_layers (its
cache is sized by num_layers: IndexError); for such configs HF runs with use_cache=False.
"""

import pytest
import torch
from test_t5_parity import CONFIGS, batch, hf_model
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from t5edu.hf import from_hf
from t5edu.kv_cache import T5Cache
from t5edu.logits_processing import warp_logits

NEW = 12


def hf_generate(hf, ids, mask, **kwargs):
    # transformers 5.24's cache has num_layers slots: a deeper decoder must run without it.
    use_cache = hf.config.num_decoder_layers <= hf.config.num_layers
    return hf.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=NEW, use_cache=use_cache, **kwargs
    )


def with_eos(name, **kwargs):
    """HF model where EOS takes over a frequent output token, and ours converted from it.

    Tries the model's most frequent output tokens in turn and keeps the first for which some
    but not all rows stop early (deterministic: the models and inputs are seeded).
    """
    inputs = batch()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    hf = hf_model(name)
    eos = hf.config.eos_token_id
    tokens, counts = hf_generate(hf, ids, mask, **kwargs)[:, 1:].unique(return_counts=True)
    for tok in tokens[counts.argsort(descending=True)][:6]:
        hf = hf_model(name)
        with torch.no_grad():
            hf.lm_head.weight[eos] = 1.01 * hf.lm_head.weight[tok]
        stopped = (hf_generate(hf, ids, mask, **kwargs) == eos).any(dim=1)
        if stopped.any() and not stopped.all():
            break
    return hf, from_hf(hf), ids, mask


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam4"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tokens_identical_to_hf_on_padded_batch(name, num_beams):
    hf, ours, ids, mask = with_eos(name, num_beams=num_beams)
    want = hf_generate(hf, ids, mask, num_beams=num_beams)
    for use_cache in (True, False):
        got = ours.generate(ids, mask, max_new_tokens=NEW, num_beams=num_beams, use_cache=use_cache)
        assert torch.equal(got, want), (use_cache, got, want)
    assert (want == hf.config.eos_token_id).any()  # the comparison covered stopping at EOS
    assert (got[:, 0] == ours.config.decoder_start_token_id).all()


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -1.0])
def test_beam_search_scoring_and_stopping_match_hf(length_penalty, early_stopping):
    hf, ours, ids, mask = with_eos("v11_gated_gelu_untied", num_beams=4)
    kwargs = dict(num_beams=4, length_penalty=length_penalty, early_stopping=early_stopping)
    want = hf_generate(hf, ids, mask, **kwargs)
    got = ours.generate(ids, mask, max_new_tokens=NEW, **kwargs)
    assert torch.equal(got, want), (got, want)


@pytest.mark.parametrize("num_beams", [1, 3], ids=["sample", "beam_sample"])
@pytest.mark.parametrize("name", ["v1_relu_tied", "decoder_shallower"])
def test_sampling_identical_to_hf_under_the_same_seed(name, num_beams):
    hf, ours, ids, mask = with_eos(name)
    kwargs = dict(do_sample=True, num_beams=num_beams, temperature=0.8, top_k=20, top_p=0.9)
    torch.manual_seed(5)
    want = hf_generate(hf, ids, mask, **kwargs)
    torch.manual_seed(5)
    got = ours.generate(ids, mask, max_new_tokens=NEW, **kwargs)
    assert torch.equal(got, want), (got, want)


def test_sampling_with_generator_is_reproducible_and_degenerates_to_greedy():
    _, ours, ids, mask = with_eos("v1_relu_tied")
    greedy = ours.generate(ids, mask, max_new_tokens=NEW)

    def sample(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return ours.generate(ids, mask, max_new_tokens=NEW, do_sample=True, generator=g, **kw)

    assert torch.equal(sample(3), sample(3))
    assert torch.equal(sample(3, top_k=1), greedy)
    assert torch.equal(sample(4, top_p=1e-6), greedy)


def test_greedy_pads_after_eos_and_respects_max_new_tokens():
    hf, ours, ids, mask = with_eos("v11_gated_gelu_untied")
    out = ours.generate(ids, mask, max_new_tokens=NEW)
    assert out.shape[1] <= 1 + NEW
    eos, pad = ours.config.eos_token_id, ours.config.pad_token_id
    for row in out.tolist():
        if eos in row:
            assert all(t == pad for t in row[row.index(eos) + 1 :])
    short = ours.generate(ids, mask, max_new_tokens=3)
    assert short.shape[1] == min(4, out.shape[1]) and torch.equal(short, out[:, : short.shape[1]])


@pytest.mark.parametrize("name", ["v1_relu_tied", "decoder_deeper", "buckets_8_maxdist_20"])
def test_incremental_forward_with_cache_equals_full_forward(name):
    ours = from_hf(hf_model(name))
    inputs = batch(tgt_len=30)  # past the 20-position max distance of the small-bucket config
    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    dec = ours.shift_right(labels)
    with torch.no_grad():
        full = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        enc = ours.encoder(ids, mask)
        cache, steps = None, []
        for t in range(dec.shape[1]):
            out = ours(
                attention_mask=mask,
                encoder_outputs=enc,
                decoder_input_ids=dec[:, t : t + 1],
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            steps.append(out.logits)
    assert isinstance(cache, T5Cache) and cache.get_seq_length() == dec.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_full_raises():
    cache = T5Cache(1, max_length=2)
    k = torch.zeros(1, 2, 2, 4)
    cache.update(0, k, k)
    cache.advance(2)
    with pytest.raises(ValueError, match="max_length"):
        cache.update(0, k[:, :, :1], k[:, :, :1])


def test_cache_grows_by_doubling_and_keeps_its_contents():
    from t5edu.kv_cache import MIN_CAPACITY

    cache, ref = T5Cache(1, max_length=50), T5Cache(1)  # preallocated-and-grown vs concatenated
    g = torch.Generator().manual_seed(0)
    capacities = []
    for t in (3, 1, 20, 1, 25):
        k, v = torch.randn(2, 2, t, 4, generator=g), torch.randn(2, 2, t, 4, generator=g)
        got, want = cache.update(0, k, v), ref.update(0, k, v)
        cache.advance(t)
        ref.advance(t)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        capacities.append(cache.self_k[0].shape[2])
        index = torch.tensor([1, 0])
        cache.reorder(index)
        ref.reorder(index)
    assert capacities == [MIN_CAPACITY, MIN_CAPACITY, 2 * MIN_CAPACITY, 2 * MIN_CAPACITY, 50]


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(0.7, None, None), (1.0, 5, None), (1.0, None, 0.8), (1.3, 7, 0.6)]
)
def test_warp_logits_equals_hf_warpers(temperature, top_k, top_p):
    scores = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    scores[0, :5] = scores[0, 5]  # ties at the top-k boundary
    want = scores
    if temperature != 1.0:
        want = TemperatureLogitsWarper(temperature)(None, want)
    if top_k is not None:
        want = TopKLogitsWarper(top_k)(None, want)
    if top_p is not None:
        want = TopPLogitsWarper(top_p)(None, want)
    assert torch.equal(warp_logits(scores, temperature, top_k, top_p), want)


@pytest.mark.parametrize("position_encoding", ["rope", "alibi"])
def test_rope_and_alibi_cached_equals_uncached(position_encoding):
    from t5edu.config import T5Config
    from t5edu.t5_model import T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
        num_heads=4, position_encoding=position_encoding, tie_word_embeddings=False,
    )  # fmt: skip
    model = T5ForConditionalGeneration(config).eval()
    inputs = batch()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for num_beams in (1, 4):
        cached = model.generate(ids, mask, max_new_tokens=NEW, num_beams=num_beams)
        uncached = model.generate(
            ids, mask, max_new_tokens=NEW, num_beams=num_beams, use_cache=False
        )
        assert torch.equal(cached, uncached)


# --- memory that grows with the output, and sizes that cannot fit -----------------------------


def tiny_model(position_encoding="relative_bias"):
    from t5edu.config import T5Config
    from t5edu.t5_model import T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        position_encoding=position_encoding,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


def eos_after(model, steps):
    """Make EOS the top logit from the `steps`-th decoding step on (a forward hook on the LM
    head, which decoding calls for this small vocabulary), so generation stops there."""
    calls = []

    def hook(module, args, out):
        calls.append(1)
        if len(calls) >= steps:
            out = out.clone()
            out[..., model.config.eos_token_id] = 1e4
        return out

    return model.lm_head.register_forward_hook(hook)


def test_long_max_new_tokens_keeps_no_length_squared_table():
    """generate(max_new_tokens=3000) used to build (and keep on the model) the (3001, 3001)
    bucket table, 72 MB, before the first step; now nothing of that size is built or kept."""
    model = tiny_model()
    rpb = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias
    inputs = batch()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    handle = eos_after(model, 3)
    for use_cache in (True, False):
        out = model.generate(ids, mask, max_new_tokens=3000, use_cache=use_cache)
        assert out.shape[1] <= 4  # stopped at EOS
        kept = sum(t.numel() * t.element_size() for t in rpb._bucket_cache.values())
        assert kept <= 64 * 1024, f"the decoder's bucket cache keeps {kept} bytes"
    out = model.generate(ids, mask, max_new_tokens=40000, num_beams=2)  # used to crash
    assert out.shape[1] <= 4
    handle.remove()


def test_decoding_state_grows_with_the_positions_reached():
    from t5edu.generation import _Decoder
    from t5edu.kv_cache import MIN_CAPACITY

    model = tiny_model()
    ids = batch()["input_ids"]
    dec = _Decoder(model, ids, None, 40001, use_cache=True)
    tokens = torch.zeros(ids.shape[0], 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(MIN_CAPACITY + 1):  # one position past the first capacity
            dec.step(tokens)
    n = MIN_CAPACITY + 1
    assert dec.by_distance.shape[1] == 2 * (2 * MIN_CAPACITY) - 1  # doubled once, not 40001
    assert dec.cache.self_k[0].shape[2] == 2 * MIN_CAPACITY and dec.cache.length == n
    # and the logits equal a full forward over the same positions
    with torch.no_grad():
        full = model(input_ids=ids, decoder_input_ids=torch.zeros(ids.shape[0], n + 1).long())
        last = dec.step(tokens)
    torch.testing.assert_close(last, full.logits[:, -1].float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position_encoding", ["relative_bias", "alibi"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_equals_uncached_past_the_growth_points(position_encoding, num_beams):
    """40 positions: the KV cache and the bias vector grow twice (16 -> 32 -> 41)."""
    model = tiny_model(position_encoding)
    inputs = batch()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    kw = dict(max_new_tokens=40, num_beams=num_beams)
    cached, uncached = (
        model.generate(ids, mask, **kw),
        model.generate(ids, mask, **kw, use_cache=False),
    )
    assert cached.shape[1] == 41 and torch.equal(cached, uncached)


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam4"])
def test_long_outputs_identical_to_hf_past_max_distance_and_growth(num_beams):
    """45 new tokens: past the config's max_distance of 20 and two growth points (16, 32)."""
    hf = hf_model("buckets_8_maxdist_20")
    ours = from_hf(hf)
    inputs = batch()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    kw = dict(max_new_tokens=45, num_beams=num_beams)
    want = hf.generate(input_ids=ids, attention_mask=mask, **kw)
    assert want.shape[1] > 33  # reached past the second growth point
    for use_cache in (True, False):
        assert torch.equal(ours.generate(ids, mask, **kw, use_cache=use_cache), want)


def test_generation_that_cannot_fit_is_refused_naming_max_new_tokens():
    model = tiny_model()
    ids = batch()["input_ids"]
    with pytest.raises(ValueError, match=r"max_new_tokens=1000000000000 cannot fit: .*GiB.*"
                                         r"GiB of memory on cpu"):  # fmt: skip
        model.generate(ids, max_new_tokens=10**12)
    with pytest.raises(ValueError, match=r"max_new_tokens=1000000 cannot fit.*use_cache=False"):
        model.generate(ids, max_new_tokens=10**6, use_cache=False)  # (N, H, L, L) scores
