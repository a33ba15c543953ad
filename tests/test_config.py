"""T5Config: presets, validation, HF conversion and parameter counts (vs HF's built models)."""

import json

import pytest
import torch
import transformers

from t5edu.activations import FEED_FORWARD_PROJ
from t5edu.config import PRESETS, PUBLISHED_SIZES, T5Config, num_parameters


def _hf_count(config: T5Config) -> int:
    """Parameters of HF's model for `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        hf = transformers.T5ForConditionalGeneration(config.to_hf())
    n = sum(p.numel() for p in hf.parameters())  # parameters() counts a tied tensor once
    if not config.tie_word_embeddings and hf.lm_head.weight is hf.shared.weight:
        n += hf.lm_head.weight.numel()  # transformers 5 ties v1.1 heads on construction
    return n


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_num_parameters_equals_hf_model(name):
    config = T5Config.get_config(name)
    assert num_parameters(config) == _hf_count(config)


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_num_parameters_near_published(name):
    n, published = num_parameters(T5Config.get_config(name)), PUBLISHED_SIZES[name]
    # Published sizes are rounded (t5-large's 770M counts an untied head; see the docstring).
    assert abs(n - published) / published < 0.05, (name, n, published)


def test_num_parameters_t5_large_with_separate_head_is_770m():
    c = T5Config.get_config("t5-large")
    assert round(num_parameters(c.replace(tie_word_embeddings=False)) / 1e7) == 77


@pytest.mark.parametrize("size", ["small", "base", "large", "xl", "xxl"])
def test_v11_and_flan_presets_share_shapes(size):
    short = T5Config.get_config(size)
    assert short == T5Config.get_config(f"google/t5-v1_1-{size}")
    assert short == T5Config.get_config(f"google/flan-t5-{size}")
    assert short.feed_forward_proj == "gated-gelu" and not short.tie_word_embeddings
    assert not short.scale_decoder_outputs


def test_presets_spot_values():
    c = T5Config.get_config("t5-11b")
    assert (c.d_model, c.num_heads, c.d_kv, c.d_ff) == (1024, 128, 128, 65536)
    assert c.inner_dim != c.d_model  # allowed: T5 does not require H * Dh == D
    assert T5Config.get_config("google-t5/t5-small") == T5Config.get_config("t5-small")
    assert T5Config() == T5Config.get_config("t5-small")


def test_tiny_preset_and_overrides():
    tiny = T5Config.get_config("tiny")
    assert tiny.vocab_size == 8192 and tiny.d_model <= 256 and tiny.num_layers <= 4
    assert num_parameters(tiny) < 5e6
    small_vocab = T5Config.get_config("tiny", vocab_size=512)
    assert small_vocab.vocab_size == 512 and small_vocab.d_model == tiny.d_model


def test_get_config_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        T5Config.get_config("t5-huge")


def test_num_decoder_layers_defaults_to_num_layers():
    assert T5Config(num_layers=3).num_decoder_layers == 3
    assert T5Config(num_layers=3, num_decoder_layers=1).num_decoder_layers == 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("vocab_size", 0),
        ("d_model", -8),
        ("d_kv", 0),
        ("d_ff", 0),
        ("num_layers", 0),
        ("num_decoder_layers", 0),
        ("num_heads", 0),
        ("d_model", 64.0),
        ("dropout_rate", 1.0),
        ("layer_norm_epsilon", 0.0),
        ("feed_forward_proj", "gated-tanh"),
        ("position_encoding", "absolute"),
        ("norm_type", "batchnorm"),
        ("pad_token_id", 32128),
        ("eos_token_id", -1),
        ("decoder_start_token_id", 10**6),
    ],
)
def test_invalid_fields_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        T5Config(**{field: value})


@pytest.mark.parametrize(
    "num_buckets,max_distance",
    [(2, 128), (3, 128), (32, 16), (32, 8), (8, 4)],
)
def test_bucket_settings_that_cannot_work(num_buckets, max_distance):
    with pytest.raises(ValueError, match="relative_attention_num_buckets"):
        T5Config(
            relative_attention_num_buckets=num_buckets, relative_attention_max_distance=max_distance
        )


@pytest.mark.parametrize("num_buckets,max_distance", [(4, 3), (32, 17), (8, 5)])
def test_smallest_bucket_settings_that_work(num_buckets, max_distance):
    T5Config(
        relative_attention_num_buckets=num_buckets, relative_attention_max_distance=max_distance
    )


def test_bucket_settings_ignored_without_relative_bias():
    c = T5Config(position_encoding="alibi", relative_attention_max_distance=1)
    assert c.position_encoding == "alibi"


def test_rope_needs_even_head_dim():
    with pytest.raises(ValueError, match="d_kv"):
        T5Config(position_encoding="rope", d_kv=7)


def test_replace_validates_and_names_unknown_fields():
    c = T5Config()
    assert c.replace(d_ff=128).d_ff == 128
    assert c.replace(tie_word_embeddings=False).scale_decoder_outputs is False
    with pytest.raises(ValueError, match="d_fff"):
        c.replace(d_fff=1)
    with pytest.raises(ValueError, match="d_model"):
        c.replace(d_model=0)


@pytest.mark.parametrize("name", ["t5-small", "google/t5-v1_1-base", "t5-11b", "tiny"])
def test_hf_round_trip(name):
    c = T5Config.get_config(name, dropout_rate=0.05, relative_attention_max_distance=64)
    hf = c.to_hf()
    assert isinstance(hf, transformers.T5Config)
    for key in ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "vocab_size"):
        assert getattr(hf, key) == getattr(c, key)
    assert hf.is_gated_act == c.is_gated_act and hf.dense_act_fn == c.dense_act_fn
    assert T5Config.from_hf(hf) == c
    assert T5Config.from_hf(json.loads(json.dumps(c.to_hf_dict()))) == c


@pytest.mark.parametrize("proj", sorted(FEED_FORWARD_PROJ))
def test_every_feed_forward_proj_maps_onto_hf(proj):
    hf = T5Config(feed_forward_proj=proj).to_hf()
    gated, act = FEED_FORWARD_PROJ[proj]
    assert hf.is_gated_act == gated and hf.dense_act_fn == act
    back = T5Config.from_hf(hf)
    assert back.is_gated_act == gated and back.dense_act_fn == act


def test_from_hf_v11_hub_style_dict():
    d = {"d_model": 512, "d_ff": 1024, "num_layers": 8, "num_heads": 6, "d_kv": 64}
    d |= {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "model_type": "t5"}
    c = T5Config.from_hf(d)
    assert c == T5Config.get_config("google/t5-v1_1-small")


def test_to_hf_refuses_what_hf_cannot_represent():
    with pytest.raises(ValueError, match="position_encoding"):
        T5Config(position_encoding="rope").to_hf()


@pytest.mark.parametrize(
    "name,changes",
    [
        ("t5-small", {}),
        ("t5-11b", {}),
        ("xl", {}),
        ("tiny", {}),
        ("tiny", {"position_encoding": "rope"}),
        ("tiny", {"position_encoding": "alibi", "num_decoder_layers": 3}),
        ("t5-base", {"feed_forward_proj": "swiglu", "tie_word_embeddings": False}),
    ],
)
def test_num_parameters_equals_our_built_model(name, changes):
    from t5edu.t5_model import T5ForConditionalGeneration

    config = T5Config.get_config(name, **changes)
    with torch.device("meta"):
        model = T5ForConditionalGeneration(config)
    assert num_parameters(config) == sum(p.numel() for p in model.parameters())


def test_fast_rmsnorm_is_hf_compatible_and_other_norms_are_not():
    assert T5Config(norm_type="fast_rmsnorm").to_hf().d_model == 512
    with pytest.raises(ValueError, match="norm_type"):
        T5Config(norm_type="layernorm").to_hf()
