"""Checkpoints: exact resume, atomic saves that survive a crash, clear errors for bad files.

References: an uninterrupted run (resume must reproduce its losses exactly) and HF transformers'
`from_pretrained` (the checkpoint must load there with the same logits).
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from t5edu.config import T5Config
from t5edu.data import collate
from t5edu.t5_model import T5ForConditionalGeneration
from t5edu.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    load_model_weights,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from t5edu.train import checkpoint as ckpt_module
from t5edu.train.toy import reverse_task

VOCAB = 64
DATA = reverse_task(48, VOCAB)


def tiny_t5(seed: int = 0, dropout: float = 0.0, **changes) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=dropout,
    ).replace(**changes)  # fmt: skip
    return T5ForConditionalGeneration(cfg)


def make_trainer(out_dir, model=None, **overrides) -> Trainer:
    kw = dict(
        steps=6, batch_size=8, lr=1e-2, warmup_steps=2, eval_every=0, progress=False,
        out_dir=str(out_dir), save_every=3,
    )  # fmt: skip
    kw.update(overrides)
    return Trainer(model or tiny_t5(), TrainConfig(**kw), DATA, collate)


@pytest.mark.parametrize(
    "optimizer,precision,micro,dropout",
    [("adamw_scale", "fp32", 8, 0.1), ("adafactor", "fp32", 4, 0.0), ("adamw", "fp16", 8, 0.1)],
)
def test_resume_equals_uninterrupted(tmp_path, optimizer, precision, micro, dropout):
    # 48 examples / batch 8: the run crosses an epoch boundary after the resume point, and
    # dropout > 0 checks that the RNG state travels with the checkpoint.
    kw = dict(optimizer=optimizer, precision=precision, micro_batch_size=micro, steps=7)
    full = make_trainer(tmp_path / "full", tiny_t5(dropout=dropout), save_every=0, **kw)
    full.train()
    part = make_trainer(tmp_path / "part", tiny_t5(dropout=dropout), **kw)
    part.config.steps = 3  # stop early, as if killed after the step-3 checkpoint
    part.train()
    resumed = make_trainer(tmp_path / "part", tiny_t5(seed=1, dropout=dropout), **kw)
    resumed.train(resume=tmp_path / "part" / "checkpoints")
    assert resumed.step_losses == full.step_losses[3:]  # exactly, step by step
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # metrics.jsonl holds one history: the resumed run's records replace nothing, duplicate nothing
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").open()]
    assert steps == sorted(set(steps))


def test_checkpoint_loads_in_transformers(tmp_path):
    t = make_trainer(tmp_path, steps=3, save_every=0)
    t.train()
    path = resolve_checkpoint(tmp_path / "checkpoints")
    assert path.name == "step-000003"
    assert {"config.json", "model.safetensors", "trainer_state.pt", "manifest.json"} <= {
        p.name for p in path.iterdir()
    }
    hf = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
    batch = collate(DATA[:4]).as_dict()
    with torch.no_grad():
        ours = t.model.eval()(**batch).logits
        theirs = hf(**batch).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_keep_prunes_old_checkpoints(tmp_path):
    t = make_trainer(tmp_path, steps=6, save_every=1, keep_checkpoints=2)
    t.train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == [
        "step-000005",
        "step-000006",
    ]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000006"


def test_interrupted_save_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    model = tiny_t5()
    good = save_checkpoint(tmp_path, 1, model, {"note": "good"})
    real_save = torch.save

    def crash(*args, **kwargs):  # the model file is written, then the process "dies"
        raise KeyboardInterrupt("simulated kill during save")

    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with torch.no_grad():
        model.shared.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, model, {"note": "never"})
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)

    assert resolve_checkpoint(tmp_path) == good
    assert not (tmp_path / "step-000002").exists()
    assert not list(tmp_path.glob(".tmp-*"))  # the half-written copy is gone
    verify_checkpoint(good)
    fresh = tiny_t5()
    load_model_weights(good, fresh)
    assert torch.equal(fresh.shared.weight, tiny_t5().shared.weight)


def test_killed_save_leftover_is_ignored_and_cleaned(tmp_path):
    good = save_checkpoint(tmp_path, 1, tiny_t5(), {})
    leftover = tmp_path / ".tmp-step-000002-12345"  # what `kill -9` mid-save leaves behind
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert resolve_checkpoint(tmp_path) == good
    save_checkpoint(tmp_path, 2, tiny_t5(), {})
    assert not leftover.exists()


def test_corrupted_file_is_detected(tmp_path):
    path = save_checkpoint(tmp_path, 1, tiny_t5(), {})
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, different content
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupted"):
        verify_checkpoint(path)
    with pytest.raises(ValueError, match="corrupted"):  # CheckpointError is a ValueError
        make_trainer(tmp_path / "run").load(path)


def test_truncated_state_is_detected(tmp_path):
    path = save_checkpoint(tmp_path, 1, tiny_t5(), {})
    f = path / "trainer_state.pt"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(
        CheckpointError, match=r"trainer_state\.pt is corrupted: expected \d+ bytes"
    ):
        verify_checkpoint(path)


@pytest.mark.parametrize("missing", ["manifest.json", "model.safetensors"])
def test_incomplete_checkpoint(tmp_path, missing):
    path = save_checkpoint(tmp_path, 1, tiny_t5(), {})
    (path / missing).unlink()
    with pytest.raises(CheckpointError, match=f"incomplete: {missing} is missing"):
        verify_checkpoint(path)


def test_checkpoint_from_another_config(tmp_path):
    path = save_checkpoint(tmp_path, 1, tiny_t5(), {})
    with pytest.raises(
        CheckpointError, match="different model config: d_model: checkpoint 16, model 32"
    ):
        load_model_weights(path, tiny_t5(d_model=32))
    with pytest.raises(CheckpointError, match="different model config: num_layers"):
        make_trainer(tmp_path / "run", tiny_t5(num_layers=2)).load(path)


def test_resume_with_other_settings_is_refused(tmp_path):
    make_trainer(tmp_path, steps=3).train()
    with pytest.raises(ValueError, match="batch_size=8, this run has batch_size=16"):
        make_trainer(tmp_path, steps=6, batch_size=16).train(resume=tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="optimizer='adamw_scale'; this run uses"):
        make_trainer(tmp_path, steps=6, optimizer="adamw").train(resume=tmp_path / "checkpoints")


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    path = save_checkpoint(tmp_path, 1, tiny_t5(), {})
    with pytest.raises(CheckpointError, match="no trainer state"):
        make_trainer(tmp_path / "run").load(path)


def test_nothing_to_resume(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path)
    save_checkpoint(tmp_path, 1, tiny_t5(), {})
    (tmp_path / "latest").unlink()
    with pytest.raises(CheckpointError, match="no 'latest' file"):
        resolve_checkpoint(tmp_path)


def test_save_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="keep >= 1"):
        save_checkpoint(tmp_path, 1, tiny_t5(), {}, keep=0)
