"""t5edu's T5 against HF Transformers' on random configs: logits, loss, gradients, padding, dtypes.

HF's model (eager attention, the reference) is built randomly initialised from a config, then
converted with `from_hf`; both run the same inputs on the CPU in float32.
"""

import copy
import functools
import os

import pytest
import torch
import transformers

from t5edu.backends import BACKENDS
from t5edu.config import T5Config
from t5edu.hf import from_hf, to_hf
from t5edu.t5_model import T5ForConditionalGeneration

VOCAB = 128
BASE = dict(vocab_size=VOCAB, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
CONFIGS = {
    # T5 v1.0: ReLU, tied head with the d_model**-0.5 rescale.
    "v1_relu_tied": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    # T5 v1.1: GEGLU, untied head, no rescale.
    "v11_gated_gelu_untied": dict(
        d_model=48, d_kv=8, d_ff=96, num_layers=2, num_heads=6,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    ),
    # More decoder than encoder layers, and heads * d_kv != d_model (as t5-3b/11b).
    "decoder_deeper": dict(
        d_model=32, d_kv=24, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=2
    ),
    "decoder_shallower": dict(
        d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=1, num_heads=4,
        feed_forward_proj="gated-silu", tie_word_embeddings=False,
    ),
    # Few buckets, short max distance: the inputs below reach the log-spaced and last buckets.
    "buckets_8_maxdist_20": dict(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
    ),
}  # fmt: skip
TOL = {"naive": 1e-5}  # every other backend: 1e-4 (a different summation order)


def hf_model(name: str):
    """A fresh copy of the random HF T5 for `name` (built once per session)."""
    return copy.deepcopy(_hf_model(name))


@functools.cache
def _hf_model(name: str):
    """A random HF T5 (eval mode, eager attention); v1.1 heads untied as the hub's are."""
    torch.manual_seed(0)
    cfg = transformers.T5Config(**BASE, **CONFIGS[name], attn_implementation="eager")
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    if not CONFIGS[name].get("tie_word_embeddings", True):
        # transformers 5 ties the head on construction; the hub's v1.1 checkpoints do not.
        hf.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, cfg.d_model) * 0.05)
    return hf


def batch(seed: int = 1, src_len: int = 25, tgt_len: int = 23):
    """Padded batch: rows of different source lengths, labels with -100 and a decoder mask."""
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


def backend_params(configs):
    out = []
    others = [b for b in sorted(BACKENDS) if b not in ("naive", "sdpa")]
    for name, config in ((b, c) for c in configs for b in others):
        marks = []
        if (
            name == "triton"
            and not torch.cuda.is_available()
            and not os.environ.get("TRITON_INTERPRET")
        ):
            marks.append(pytest.mark.skip(reason="Triton needs CUDA (CPU: test_triton_kernels.py)"))
        out.append(pytest.param(config, name, marks=marks, id=f"{config}-{name}"))
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_reference_attention_is_bit_identical_to_hf_eager(name):
    """The README's claim, exactly: float32, naive backend vs HF eager with `use_cache=False`.

    HF's default (`use_cache=True`) copies K/V into its cache even in a plain forward, and that
    copy changes the summation layout by about one ulp (chapter 3), so the claim names the flag.
    """
    hf = hf_model(name)
    ours = from_hf(hf, attention_backend="naive")
    inputs = batch()
    with torch.no_grad():
        want, got = hf(**inputs, use_cache=False), ours(**inputs)
    assert torch.equal(got.encoder_last_hidden_state, want.encoder_last_hidden_state)
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.loss, want.loss)


# Every config with the reference and PyTorch's SDPA; every registered backend on two configs.
@pytest.mark.parametrize(
    "name,backend",
    [(c, b) for c in sorted(CONFIGS) for b in ("naive", "sdpa")]
    + backend_params(["v1_relu_tied", "v11_gated_gelu_untied"]),
)
def test_logits_and_loss_match_hf(name, backend):
    hf = hf_model(name)
    ours = from_hf(hf, attention_backend=backend)
    inputs = batch()
    with torch.no_grad():  # the flex backend has no CPU backward
        want, got = hf(**inputs), ours(**inputs)
    tol = TOL.get(backend, 1e-4)
    assert got.logits.shape == (3, 23, VOCAB)
    # fp32 logits reach |30|, where one ulp is 2e-6: absolute 1e-5 plus 1e-5 relative.
    torch.testing.assert_close(got.logits, want.logits, atol=tol, rtol=tol)
    torch.testing.assert_close(
        got.encoder_last_hidden_state, want.encoder_last_hidden_state, atol=tol, rtol=tol
    )
    torch.testing.assert_close(got.loss, want.loss, atol=tol, rtol=tol)


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients_match_hf(name, backend):
    hf = hf_model(name)
    ours = from_hf(hf, attention_backend=backend)
    inputs = batch()
    hf(**inputs).loss.backward()
    ours(**inputs).loss.backward()
    theirs = dict(hf.named_parameters())
    tol = TOL.get(backend, 1e-4)
    for key, p in ours.named_parameters():
        assert p.grad is not None, key
        torch.testing.assert_close(p.grad, theirs[key].grad, atol=tol, rtol=tol, msg=key)


@pytest.mark.parametrize("name", ["v1_relu_tied", "v11_gated_gelu_untied"])
def test_fast_rmsnorm_model_matches_hf(name):
    hf = hf_model(name)
    ours = from_hf(hf, norm_type="fast_rmsnorm")
    inputs = batch()
    want, got = hf(**inputs), ours(**inputs)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    want.loss.backward()
    got.loss.backward()
    theirs = dict(hf.named_parameters())
    for key, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[key].grad, atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_from_hf_to_hf_round_trip_is_exact(name):
    hf = hf_model(name)
    back = to_hf(from_hf(hf), attn_implementation="eager")
    want, got = hf.state_dict(), back.state_dict()
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert (back.lm_head.weight is back.shared.weight) == (hf.lm_head.weight is hf.shared.weight)
    for key in ("d_model", "d_kv", "num_heads", "num_decoder_layers", "dense_act_fn"):
        assert getattr(back.config, key) == getattr(hf.config, key)
    with torch.no_grad():
        inputs = batch()
        assert torch.equal(back.eval()(**inputs).logits, hf(**inputs).logits)


@pytest.mark.parametrize("name", ["v1_relu_tied", "v11_gated_gelu_untied"])
def test_to_hf_of_a_native_model(name):
    torch.manual_seed(0)
    ours = T5ForConditionalGeneration(T5Config(**BASE, **CONFIGS[name])).eval()
    hf = to_hf(ours, attn_implementation="eager").eval()
    inputs = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, hf(**inputs).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["v1_relu_tied", "v11_gated_gelu_untied", "buckets_8_maxdist_20"])
def test_padded_rows_equal_rows_alone(name):
    ours = from_hf(hf_model(name))
    inputs = batch()
    with torch.no_grad():
        full = ours(**inputs).logits
        for row in range(3):
            n_src = int(inputs["attention_mask"][row].sum())
            n_tgt = int(inputs["decoder_attention_mask"][row].sum())
            alone = ours(
                input_ids=inputs["input_ids"][row : row + 1, :n_src],
                labels=inputs["labels"][row : row + 1, :n_tgt],
            ).logits
            torch.testing.assert_close(full[row : row + 1, :n_tgt], alone, atol=1e-4, rtol=1e-4)


def test_relative_bias_owned_by_first_block_only():
    ours = from_hf(hf_model("decoder_deeper"))
    for stack in (ours.encoder, ours.decoder):
        owners = [b.layer[0].SelfAttention.has_relative_attention_bias for b in stack.block]
        assert owners == [True] + [False] * (len(owners) - 1)
    assert not any(
        b.layer[1].EncDecAttention.has_relative_attention_bias for b in ours.decoder.block
    )


def test_state_dict_names_are_hfs():
    hf = hf_model("v11_gated_gelu_untied")
    ours = from_hf(hf)
    assert list(ours.state_dict()) == list(hf.state_dict()) or set(ours.state_dict()) == set(
        hf.state_dict()
    )


def test_shift_right_and_ignored_labels():
    ours = from_hf(hf_model("v1_relu_tied"))
    labels = torch.tensor([[5, 6, -100, -100], [7, 8, 9, 1]])
    assert ours.shift_right(labels).tolist() == [[0, 5, 6, 0], [0, 7, 8, 9]]
    inputs = dict(input_ids=torch.tensor([[3, 4, 5], [6, 7, 8]]), labels=labels)
    with torch.no_grad():
        out = ours(**inputs)
    kept = labels != -100
    logp = out.logits.log_softmax(-1).gather(-1, labels.clamp_min(0)[..., None])[..., 0]
    torch.testing.assert_close(out.loss, -logp[kept].mean(), atol=1e-6, rtol=1e-6)


def test_untied_head_is_separate_and_tied_head_is_shared():
    tied = T5ForConditionalGeneration(T5Config(**BASE, **CONFIGS["v1_relu_tied"]))
    untied = T5ForConditionalGeneration(T5Config(**BASE, **CONFIGS["v11_gated_gelu_untied"]))
    assert tied.lm_head.weight is tied.shared.weight and tied.config.scale_decoder_outputs
    assert untied.lm_head.weight is not untied.shared.weight
    assert not untied.config.scale_decoder_outputs
    assert untied.encoder.embed_tokens is untied.shared is untied.decoder.embed_tokens


def test_t5model_without_head_matches_hf():
    from t5edu.hf import load_state_dict_strict
    from t5edu.t5_model import T5Model

    hf_full = hf_model("decoder_deeper")
    hf = transformers.T5Model(hf_full.config).eval()
    hf.load_state_dict(hf_full.state_dict(), strict=False)
    ours = T5Model(from_hf(hf_full).config).eval()
    load_state_dict_strict(ours, hf.state_dict())
    inputs = batch()
    dec = hf_full._shift_right(inputs["labels"])
    kwargs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with torch.no_grad():
        want = hf(**kwargs, decoder_input_ids=dec)
        got = ours(**kwargs, decoder_input_ids=dec)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        got.encoder_last_hidden_state, want.encoder_last_hidden_state, atol=1e-5, rtol=1e-5
    )
