"""HF checkpoint directories: our save loads in transformers, theirs in ours; strict loading."""

import json
import warnings

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from test_t5_parity import BASE, CONFIGS, batch, hf_model

from t5edu.config import T5Config
from t5edu.hf import from_hf, from_pretrained, save_pretrained
from t5edu.t5_model import T5ForConditionalGeneration


def logits(model, inputs):
    with torch.no_grad():
        return model.eval()(**inputs).logits


@pytest.mark.parametrize("name", ["v1_relu_tied", "v11_gated_gelu_untied", "decoder_deeper"])
def test_our_checkpoint_loads_in_transformers(name, tmp_path):
    hf = hf_model(name)
    ours = from_hf(hf)
    ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = transformers.T5ForConditionalGeneration.from_pretrained(
            tmp_path, attn_implementation="eager"
        )
    for key, value in hf.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    inputs = batch()
    assert torch.equal(logits(loaded, inputs), logits(hf, inputs))
    again = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert again.config == ours.config and not again.training
    assert torch.equal(logits(again, inputs), logits(ours, inputs))


@pytest.mark.parametrize("name", ["v1_relu_tied", "v11_gated_gelu_untied", "decoder_shallower"])
def test_transformers_checkpoint_loads_in_ours(name, tmp_path):
    hf = hf_model(name)
    hf.save_pretrained(tmp_path)
    ours = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert (ours.lm_head.weight is ours.shared.weight) == (hf.lm_head.weight is hf.shared.weight)
    inputs = batch()
    torch.testing.assert_close(logits(ours, inputs), logits(hf, inputs), atol=1e-5, rtol=1e-5)


def test_reads_pytorch_model_bin_and_shards(tmp_path):
    hf = hf_model("v11_gated_gelu_untied")
    ours = from_hf(hf)
    ours.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    inputs = batch()
    want = logits(ours, inputs)
    # pytorch_model.bin, with the embedding aliases older checkpoints carry
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((tmp_path / "config.json").read_text())
    full = dict(sd, **{"encoder.embed_tokens.weight": sd["shared.weight"]})
    torch.save(full, bin_dir / "pytorch_model.bin")
    assert torch.equal(logits(from_pretrained(bin_dir), inputs), want)
    # two safetensors shards and an index
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((tmp_path / "config.json").read_text())
    keys = sorted(sd)
    halves = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for file, names in halves.items():
        save_file({k: sd[k] for k in names}, shard_dir / file)
    index = {"weight_map": {k: f for f, names in halves.items() for k in names}}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(logits(from_pretrained(shard_dir), inputs), want)


def _saved(tmp_path, name="v1_relu_tied"):
    save_pretrained(from_hf(hf_model(name)), tmp_path)
    return load_file(tmp_path / "model.safetensors")


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path):
    sd = _saved(tmp_path)
    del sd["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
    sd["encoder.block.0.layer.0.SelfAttention.q.bias"] = torch.zeros(32)
    sd["encoder.final_layer_norm.weight"] = torch.ones(33)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as err:
        from_pretrained(tmp_path)
    text = str(err.value)
    assert "missing: ['decoder.block.1.layer.2.DenseReluDense.wo.weight']" in text
    assert "unexpected: ['encoder.block.0.layer.0.SelfAttention.q.bias']" in text
    assert "encoder.final_layer_norm.weight: checkpoint (33,), model (32,)" in text


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    _saved(tmp_path)
    with pytest.raises(ValueError, match="mis-shaped: .*SelfAttention.q.weight"):
        from_pretrained(tmp_path, d_kv=4)
    with pytest.raises(ValueError, match="missing: .*block.2"):
        from_pretrained(tmp_path, num_layers=3)


def test_disagreeing_embedding_aliases_are_refused(tmp_path):
    sd = _saved(tmp_path)
    sd["decoder.embed_tokens.weight"] = sd["shared.weight"] + 1
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="decoder.embed_tokens.weight differs"):
        from_pretrained(tmp_path)


def test_old_unused_cross_attention_bias_is_dropped_with_a_warning(tmp_path):
    sd = _saved(tmp_path)
    sd["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(
        32, 4
    )
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match="EncDecAttention.relative_attention_bias"):
        from_pretrained(tmp_path)


def test_no_network_by_default(tmp_path):
    with pytest.raises(ValueError, match="allow_download=True"):
        from_pretrained("google-t5/t5-small")
    with pytest.raises(ValueError, match="path_or_name"):
        from_pretrained(tmp_path)  # a directory without weights


def test_save_is_atomic(tmp_path, monkeypatch):
    ours = from_hf(hf_model("v1_relu_tied"))
    ours.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with torch.no_grad():
        ours.shared.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        ours.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before  # old file intact


@pytest.mark.parametrize("position_encoding", ["rope", "alibi"])
def test_variants_hf_cannot_run_round_trip_and_are_marked(position_encoding, tmp_path):
    torch.manual_seed(0)
    config = T5Config(**BASE, **CONFIGS["v1_relu_tied"], position_encoding=position_encoding)
    ours = T5ForConditionalGeneration(config)
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "t5edu"
    again = from_pretrained(tmp_path)
    assert again.config == config
    inputs = batch()
    assert torch.equal(logits(again, inputs), logits(ours, inputs))
    with pytest.raises(ValueError, match="t5edu"):
        transformers.AutoConfig.from_pretrained(tmp_path)


def test_dtype_and_overrides(tmp_path):
    _saved(tmp_path)
    model = from_pretrained(
        tmp_path, dtype=torch.bfloat16, dropout_rate=0.0, attention_backend="sdpa"
    )
    assert model.dtype == torch.bfloat16 and model.config.dropout_rate == 0.0
    assert model.config.attention_backend == "sdpa"


# ---------------------------------------------------------------- config.json checked first (#15)
def _with_config(tmp_path, **changes):
    _saved(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        # once: "can't allocate 256000000000 bytes"; and 222 s to 5.3 GB, then MemoryError
        ({"d_model": 10**9}, r"d_model is 1000000000, but model.safetensors stores shared"),
        ({"num_layers": 10**6}, r"num_layers is 1000000, but model.safetensors stores 2 encoder"),
        ({"vocab_size": 7}, r"vocab_size is 7, but model.safetensors stores shared.weight"),
        ({"d_kv": 3}, r"num_heads x d_kv is 12, but model.safetensors stores .*q.weight"),
        ({"d_model": 1e3}, r"d_model must be an integer >= 1; got 1000.0"),
        ({"dropout_rate": "0.1"}, r"dropout_rate must be a number in \[0, 1\); got '0.1'"),
        ({"tie_word_embeddings": "false"}, r"tie_word_embeddings must be true or false; got 'f"),
        ({"layer_norm_epsilon": -1}, r"layer_norm_epsilon must be a number in \(0, 1\)"),
    ],
)
def test_config_json_is_checked_against_the_weights_before_building(tmp_path, changes, message):
    import time

    path = _with_config(tmp_path, **changes)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=message) as err:
        from_pretrained(tmp_path)
    assert str(err.value).startswith(f"{path}: ")  # names the file, then the field
    assert time.perf_counter() - t0 < 5  # refused from the headers: nothing was built


def test_config_json_must_be_an_object(tmp_path):
    _saved(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json: expected a JSON object; got a list"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/hostname", "sub/x.safetensors"])
def test_shard_names_must_stay_in_the_checkpoint_directory(tmp_path, shard):
    sd = _saved(tmp_path / "ckpt")
    save_file(sd, tmp_path / "outside.safetensors")  # a loadable file one level up
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    index = {"weight_map": dict.fromkeys(sd, shard)}
    (tmp_path / "ckpt" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="is not a file name inside"):
        from_pretrained(tmp_path / "ckpt")
