"""Bad input found by a new-user review: each raises ValueError naming what was wrong."""

import pytest
import torch

import t5edu


@pytest.fixture(scope="module")
def tiny():
    config = t5edu.T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    return t5edu.T5ForConditionalGeneration(config).eval()


def test_encoder_alone_checks_ids(tiny):
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, vocab_size=50\); got 60"):
        tiny.encoder(torch.tensor([[1, 60]]))


def test_encoder_checks_inputs_embeds_width(tiny):
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(batch, length, d_model=32\)"):
        tiny.encoder(inputs_embeds=torch.randn(1, 3, 16))


def test_get_config_rejects_unknown_override():
    with pytest.raises(ValueError, match=r"unknown T5Config fields \['foo'\]"):
        t5edu.T5Config.get_config("tiny", foo=1)


def test_rope_base_must_exceed_one():
    with pytest.raises(ValueError, match="rope_base must be > 1; got 0.5"):
        t5edu.T5Config(position_encoding="rope", rope_base=0.5)


@pytest.mark.parametrize("broken", ["model.safetensors", "config.json"])
def test_corrupted_checkpoint_file_is_named(tiny, tmp_path, broken):
    tiny.save_pretrained(tmp_path)
    (tmp_path / broken).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=broken):
        t5edu.T5ForConditionalGeneration.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=torch.randn(1, 2, 4, 8, dtype=torch.float64)), "one floating-point dtype"),
        (dict(v=torch.randn(1, 2, 4, 16)), r"v must be .*\(1, 2, 4, 8\)"),
    ],
)
def test_attention_dtype_and_value_width(kwargs, match):
    args = dict(q=torch.randn(1, 2, 3, 8), k=torch.randn(1, 2, 4, 8), v=torch.randn(1, 2, 4, 8))
    args |= kwargs
    with pytest.raises(ValueError, match=match):
        t5edu.scaled_dot_product_attention(args["q"], args["k"], args["v"])


def test_multi_head_attention_checks_backend_and_width():
    with pytest.raises(ValueError, match="backend must be one of"):
        t5edu.MultiHeadAttention(32, 4, backend="nope")
    mha = t5edu.MultiHeadAttention(32, 4)
    with pytest.raises(
        ValueError, match=r"x must be \(batch, len, d_model=32\); got shape \(2, 5, 16\)"
    ):
        mha(torch.randn(2, 5, 16))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": "0.5"}, r"scale must be None or a positive finite number; got scale='0.5'"),
        ({"scale": 0.0}, r"got scale=0.0"),
        ({"scale": float("nan")}, r"got scale=nan"),
        ({"dropout_p": -0.1}, r"dropout_p must be in \[0, 1\]; got dropout_p=-0.1"),
        ({"dropout_p": 1.5}, r"dropout_p must be in \[0, 1\]; got dropout_p=1.5"),
    ],
)
@pytest.mark.parametrize("backend", ["reference", "naive", "sdpa"])
def test_attention_scale_and_dropout(kwargs, match, backend):
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match=match):
        if backend == "reference":
            t5edu.scaled_dot_product_attention(q, q, q, **kwargs)
        else:
            t5edu.backends.attention(q, q, q, backend=backend, **kwargs)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: t5edu.RMSNorm(0), r"RMSNorm: dim must be a positive int; got dim=0"),
        (lambda: t5edu.RMSNorm(8, eps=-1e-6), r"RMSNorm: eps must be >= 0; got eps=-1e-06"),
        (lambda: t5edu.FastRMSNorm(8.0), r"FastRMSNorm: dim must be a positive int; got dim=8.0"),
        (lambda: t5edu.FastRMSNorm(8, eps=float("inf")), r"eps must be a finite number"),
        (lambda: t5edu.AdaptiveRMSNorm(8, 0), r"cond_dim must be a positive int; got cond_dim=0"),
        (lambda: t5edu.GroupRMSNorm(8, 2, eps=-1.0), r"GroupRMSNorm: eps must be >= 0"),
        (lambda: t5edu.GroupRMSNorm(-8, 2), r"GroupRMSNorm: dim must be a positive int"),
    ],
)
def test_norm_constructor_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_superglue_cli_unknown_task_is_a_usage_error(capsys):
    from t5edu.superglue.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["format", "--task", "nope"])
    assert exit_info.value.code == 2
    assert "--task: task must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("value", [-1, 2])
def test_model_mask_values_must_be_0_or_1(tiny, value):
    ids = torch.tensor([[3, 4, 5, 1]])
    mask = torch.tensor([[1, 1, value, 1]])
    pattern = rf"attention_mask must hold only 0/1 \(1 = attend\); got values such as \[{value}\]"
    with pytest.raises(ValueError, match=pattern):
        tiny(input_ids=ids, attention_mask=mask, decoder_input_ids=ids)
    with pytest.raises(ValueError, match=pattern):
        tiny.generate(ids, attention_mask=mask, max_new_tokens=2)


@pytest.mark.parametrize("name", [None, 3, "nope"])
def test_get_config_names_a_bad_preset(name):
    with pytest.raises(ValueError, match=rf"name must be one of .*got {name!r}"):
        t5edu.T5Config.get_config(name)
