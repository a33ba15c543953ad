"""Checkpoints: exact resume, atomic saves that survive a crash, clear errors for bad files.

References: an uninterrupted run (resume must reproduce its losses exactly) and HF transformers'
`from_pretrained` (the checkpoint must load there with the same logits).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import transformers

from t5edu.config import T5Config
from t5edu.data import collate
from t5edu.t5_model import T5ForConditionalGeneration
from t5edu.train import (
    CheckpointError,
    MetricsLogger,
    TrainConfig,
    Trainer,
    load_model_weights,
    metrics_log,
    read_metrics,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from t5edu.train import checkpoint as ckpt_module
from t5edu.train.run_dir import RunDirBusy
from t5edu.train.toy import reverse_task
from t5edu.train.trainer import NonFiniteError

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


# --------------------------------------------------------------------------- issue 15
def test_stray_folders_do_not_break_saves_and_are_left_alone(tmp_path):
    save_checkpoint(tmp_path, 1, tiny_t5(), {})
    stray = tmp_path / "step-000003.bak"  # a user's copy: once crashed every later save
    stray.mkdir()
    (tmp_path / "step-notes").mkdir()
    for step in (2, 4, 5):
        save_checkpoint(tmp_path, step, tiny_t5(), {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [
        "step-000003.bak", "step-000004", "step-000005", "step-notes",
    ]  # fmt: skip


@pytest.mark.parametrize("pointer", ["../other/step-000001", "/tmp", "step-000001/..", "x"])
def test_latest_must_name_a_checkpoint_in_its_directory(tmp_path, pointer):
    save_checkpoint(tmp_path / "other", 1, tiny_t5(), {})
    save_checkpoint(tmp_path / "run", 1, tiny_t5(), {})
    (tmp_path / "run" / "latest").write_text(pointer + "\n")
    with pytest.raises(CheckpointError, match="must name a step-NNNNNN directory next to it"):
        resolve_checkpoint(tmp_path / "run")


def _hold_lock(directory):
    """Another process holding `directory`'s run lock (plain fcntl: no torch import)."""
    code = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('held', flush=True); "
        "time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory / ".lock")],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_leftover_tmp_files_are_cleaned_only_under_the_lock(tmp_path):
    save_checkpoint(tmp_path, 1, tiny_t5(), {})
    leftovers = [tmp_path / ".tmp-step-000002-999", tmp_path / ".latest.tmp-999"]
    leftovers[0].mkdir()
    leftovers[1].write_text("step-000002\n")  # was never cleaned: its name is .latest.tmp-*
    other = _hold_lock(tmp_path)  # e.g. a second trainer that is saving right now
    try:
        with pytest.raises(RunDirBusy, match=rf"{tmp_path} is in use by another trainer"):
            save_checkpoint(tmp_path, 2, tiny_t5(), {})
        assert all(p.exists() for p in leftovers)  # its save in progress is not deleted
    finally:
        other.kill()
        other.wait()
    save_checkpoint(tmp_path, 2, tiny_t5(), {})  # the killed holder released the lock
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".lock"]


def test_second_trainer_on_a_run_directory_is_refused(tmp_path):
    other = _hold_lock(tmp_path)
    try:
        with pytest.raises(RunDirBusy, match=r"in use by another trainer \(pid 4242\)"):
            make_trainer(tmp_path).train()
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        other.kill()
        other.wait()


def test_first_record_after_resume_averages_the_full_window(tmp_path):
    """log_every 4, checkpoint at step 3: the step-4 record must average steps 1-4 (it used to
    average step 4 alone)."""
    kw = dict(steps=8, log_every=4)
    full = make_trainer(tmp_path / "full", save_every=0, **kw)
    full.train()
    part = make_trainer(tmp_path / "part", **kw)  # saves at step 3 (save_every=3)
    real_step = part.train_step

    def killed_after_step_3():
        if part.step == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_step()

    part.train_step = killed_after_step_3
    with pytest.raises(KeyboardInterrupt):
        part.train()
    resumed = make_trainer(tmp_path / "part", tiny_t5(seed=1), **kw)
    resumed.train(resume=tmp_path / "part" / "checkpoints")

    def records(path):
        drop = ("tokens_per_s",)  # wall-clock
        rows = read_metrics(path / "metrics.jsonl", "train")
        return [{k: v for k, v in r.items() if k not in drop} for r in rows if r["step"] > 3]

    assert records(tmp_path / "part") == records(tmp_path / "full")
    assert [r["step"] for r in records(tmp_path / "full")] == [4, 8]


def test_nan_weights_are_never_saved(tmp_path):
    t = make_trainer(tmp_path, steps=2, save_every=1, warmup_steps=1)
    t.train()
    with torch.no_grad():
        t.model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="parameter lm_head.weight holds NaN/inf; not saved"):
        t.save()
    assert resolve_checkpoint(tmp_path / "checkpoints").name == "step-000002"
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert kept == ["step-000001", "step-000002"]  # the rotation pushed out nothing


def test_metrics_resume_rewrite_is_atomic(tmp_path, monkeypatch):
    """A kill during the resume-time rewrite once left metrics.jsonl empty (3 of 3 tries)."""
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)]
    path.write_text("".join(lines))

    def killed(*args):
        raise KeyboardInterrupt("simulated kill before the rename")

    monkeypatch.setattr(metrics_log.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLogger(path, resume_step=2)
    assert path.read_text() == "".join(lines)  # the old file is whole
    assert len(list(tmp_path.glob(".metrics.jsonl.tmp-*"))) == 1
    monkeypatch.undo()
    MetricsLogger(path, resume_step=2)
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert not list(tmp_path.glob(".metrics.jsonl.tmp-*"))  # the killed rewrite's leftover


def test_read_metrics_drops_a_torn_last_line_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    with pytest.warns(UserWarning, match="dropped a torn last line"):
        assert read_metrics(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):  # damage, not a crash: refuse
        read_metrics(path)
