"""Training checkpoints: the model in `save_pretrained` format plus everything needed to resume.

Layout of `out_dir/checkpoints/`:

    step-000300/            one complete checkpoint (never a half-written one)
        config.json         } written by the model's `save_pretrained`: a directory that
        model.safetensors   } `transformers.T5ForConditionalGeneration.from_pretrained` loads
        trainer_state.pt    optimizer, scheduler, loss scaler, RNG states, data position, config
        manifest.json       size and SHA-256 of every file above: corruption is detected on load
    latest                  a one-line text file naming the newest complete checkpoint

A checkpoint is written into a hidden temporary directory, flushed to disk, then renamed into
place with `os.replace` (atomic on POSIX), and only then is `latest` switched (again tmp file +
`os.replace`). A save interrupted at any point leaves the previous checkpoint and `latest`
untouched; the leftover temporary files are ignored and removed by the next save, which holds
the directory's lock (`run_dir.run_dir_lock`), so they cannot belong to a live writer. Only
`step-NNNNNN` directories count as checkpoints (a `step-000003.bak` copy is left alone), and
`latest` must name one of them: it cannot point outside the directory.
Chapter 11 resumes a run from one; tests/test_checkpoint.py simulates a crash mid-save.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from t5edu.train.run_dir import run_dir_lock

FORMAT_VERSION = 1
STATE_FILE = "trainer_state.pt"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"
STEP_DIR = re.compile(r"step-(\d{6,})")  # a checkpoint's name; anything else is not ours
# Temporary names of our own writes (see below and `_write_text_atomic`): stale if no one holds
# the lock, since a live writer would.
_OUR_TMP = (".tmp-*", f".{LATEST_FILE}.tmp-*")
# config.json keys that describe the file or the runtime, not the network: ignored on comparison.
_NON_ARCH_KEYS = {
    "transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype",
    "use_cache", "return_dict", "output_attentions", "output_hidden_states",
    "gradient_checkpointing", "_attn_implementation", "_attn_implementation_autoset",
    "dropout_rate", "classifier_dropout",
}  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupted, or belongs to another model config."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    # Flush file contents (and directory entries) to the disk before the rename publishes them;
    # otherwise a power cut after the rename could still leave an empty file behind it.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def config_dict(model: nn.Module) -> dict:
    """The model's config as a JSON-compatible dict (HF `PretrainedConfig` or a dataclass)."""
    cfg = model.config
    if hasattr(cfg, "to_dict"):
        d = cfg.to_dict()
    elif dataclasses.is_dataclass(cfg):
        d = dataclasses.asdict(cfg)
    else:
        d = dict(vars(cfg))
    return json.loads(json.dumps(d, default=str))


def check_same_config(saved: dict, model: nn.Module, where: str) -> None:
    """Raise `CheckpointError` listing every architecture field where `saved` and `model` differ."""
    current = config_dict(model)
    diffs = [
        f"{k}: checkpoint {saved[k]!r}, model {current[k]!r}"
        for k in sorted(set(saved) & set(current) - _NON_ARCH_KEYS)
        if saved[k] != current[k]
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {where} was saved from a different model config: " + "; ".join(diffs)
        )


def rng_state() -> dict:
    """Every RNG the trainer draws from (Python, NumPy, torch CPU and CUDA), as plain data."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


def checkpoint_dirs(directory: Path) -> list[Path]:
    """The `step-NNNNNN` checkpoint directories in `directory`, oldest first."""
    found = [p for p in directory.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(STEP_DIR.fullmatch(p.name)[1]))


def save_checkpoint(
    directory: str | os.PathLike, step: int, model: nn.Module, state: dict, keep: int = 2
) -> Path:
    """Write `directory/step-{step:06d}` atomically and point `directory/latest` at it.

    Args:
        model: an unwrapped model with `save_pretrained(dir)` (HF's or t5edu's T5).
        state: the trainer's state (optimizer, scheduler, scaler, RNG, data position, ...):
            tensors and plain Python containers only, so it loads with `weights_only=True`.
        keep: how many most recent checkpoints to keep (older ones are deleted); >= 1.

    Returns the checkpoint's path. Call on one process only (rank 0).

    Raises:
        ValueError: if `keep < 1` or `step < 0`. Any error while writing propagates after the
            temporary directory is removed; the previous checkpoint stays the latest.
    """
    if keep < 1 or step < 0:
        raise ValueError(f"save_checkpoint needs keep >= 1 and step >= 0; got {keep=}, {step=}")
    with run_dir_lock(directory):  # one writer: the stale .tmp files below are not live
        return _save_locked(Path(directory), step, model, state, keep)


def _save_locked(directory: Path, step: int, model: nn.Module, state: dict, keep: int) -> Path:
    for pattern in _OUR_TMP:  # left by a save that was killed (we hold the lock: not live)
        for stale in directory.glob(pattern):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    final = directory / f"step-{step:06d}"
    tmp = directory / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        torch.save({"format_version": FORMAT_VERSION, "step": step, **state}, tmp / STATE_FILE)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {
            "format_version": FORMAT_VERSION,
            "step": step,
            # The model's own config (config.json is in HF's spelling, which can differ).
            "model_config": config_dict(model),
            "files": {
                n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in files
            },
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
        for name in [*files, MANIFEST_FILE]:
            _fsync(tmp / name)
        _fsync(tmp)
        if final.exists():  # re-saving the same step: move the old copy aside first
            trash = directory / f".tmp-old-{final.name}-{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash)
        os.replace(tmp, final)
        _write_text_atomic(directory / LATEST_FILE, final.name + "\n")
        _fsync(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(directory)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from either itself or its parent (then `latest` decides).

    Raises:
        CheckpointError: if `path` holds neither a checkpoint nor a `latest` pointer, or the
            pointer names a checkpoint that is not there.
    """
    path = Path(path)
    if (path / LATEST_FILE).is_file():
        name = (path / LATEST_FILE).read_text().strip()
        if not STEP_DIR.fullmatch(name):  # e.g. "../other-run/step-000010" or "/etc"
            raise CheckpointError(
                f"{path / LATEST_FILE} must name a step-NNNNNN directory next to it; "
                f"it holds {name[:80]!r}"
            )
        target = path / name
        if not target.is_dir():
            raise CheckpointError(f"{path / LATEST_FILE} points to {target.name}, which is missing")
        return target
    if (path / MANIFEST_FILE).is_file() or (path / STATE_FILE).exists():
        return path
    if path.is_dir() and checkpoint_dirs(path):
        # A parent whose `latest` was lost: refuse to guess rather than resume the wrong run.
        raise CheckpointError(f"{path} has checkpoints but no '{LATEST_FILE}' file; pass one")
    raise CheckpointError(
        f"no checkpoint found at {path} (expected {MANIFEST_FILE} or {LATEST_FILE})"
    )


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check that every file the manifest lists is there with its recorded size and SHA-256.

    Returns the manifest. Raises `CheckpointError` naming the first missing or corrupted file.
    """
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_FILE} is corrupted ({e})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {manifest.get('format_version')!r}; "
            f"this t5edu reads {FORMAT_VERSION}"
        )
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if f.stat().st_size != meta["bytes"] or _sha256(f) != meta["sha256"]:
            raise CheckpointError(
                f"checkpoint file {f} is corrupted: expected {meta['bytes']} bytes with "
                f"sha256 {meta['sha256'][:12]}..., found {f.stat().st_size} bytes with "
                f"sha256 {_sha256(f)[:12]}..."
            )
    return manifest


def check_checkpoint_config(path: str | os.PathLike, model: nn.Module) -> None:
    """Raise `CheckpointError` if the checkpoint at `path` was saved from another model config.

    Compares the model config recorded in the manifest (or, for a plain `save_pretrained`
    directory, config.json) with `model.config`, field by field.
    """
    path = Path(path)
    manifest = path / MANIFEST_FILE
    saved = json.loads(manifest.read_text()).get("model_config") if manifest.is_file() else None
    if saved is None:
        if not (path / "config.json").is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: config.json is missing")
        saved = json.loads((path / "config.json").read_text())
    check_same_config(saved, model, str(path))


def load_model_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Copy `path/model.safetensors` into `model` in place, checking config and every key.

    Keys absent from the file are accepted only when they are tied to a key that is present
    (`save_pretrained` writes a tied embedding once).

    Raises:
        CheckpointError: for another config, unexpected/missing keys, or mismatched shapes.
    """
    from safetensors.torch import load_file

    path = Path(path)
    check_checkpoint_config(path, model)
    weights = load_file(path / "model.safetensors")
    own = model.state_dict()
    unexpected = sorted(set(weights) - set(own))
    by_storage = {own[k].untyped_storage().data_ptr(): k for k in weights if k in own}
    missing = sorted(
        k for k in set(own) - set(weights) if own[k].untyped_storage().data_ptr() not in by_storage
    )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and v.shape != own[k].shape
    ]
    if unexpected or missing or wrong:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: unexpected keys {unexpected[:5]}, "
            f"missing keys {missing[:5]}, shape mismatches {wrong[:5]}"
        )
    model.load_state_dict(weights, strict=False)


def load_trainer_state(path: str | os.PathLike) -> dict:
    """The dict `save_checkpoint` stored in `trainer_state.pt` (loaded with `weights_only=True`)."""
    path = Path(path)
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which one
        raise CheckpointError(f"checkpoint file {path / STATE_FILE} cannot be read: {e}") from None
