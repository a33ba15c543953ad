"""Data parallelism on the CPU: 2 gloo processes must reproduce the single-process run.

DDP and FSDP2 (`fully_shard`) runs are spawned with torch.multiprocessing; their per-step
losses must equal those of one process with the same global batch within 1e-5, and FSDP's
checkpoint (gathered from the shards) must hold the single-process weights.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from gloo_group import free_port, join

from t5edu.config import T5Config
from t5edu.data import collate
from t5edu.t5_model import T5ForConditionalGeneration
from t5edu.train import TrainConfig, Trainer, wrap_model
from t5edu.train.distributed import DistInfo, cleanup
from t5edu.train.toy import decode_ids, reverse_task

VOCAB = 64
STEPS = 4


def tiny_t5(backend: str = "naive") -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        attention_backend=backend,
    )  # fmt: skip
    return T5ForConditionalGeneration(cfg)


def run(
    strategy: str,
    micro: int,
    out_dir: str,
    info: DistInfo | None = None,
    optimizer="adamw_scale",
    backend="naive",
) -> Trainer:
    cfg = TrainConfig(
        steps=STEPS, batch_size=8, micro_batch_size=micro, lr=1e-2, warmup_steps=1,
        eval_every=STEPS, strategy=strategy, out_dir=out_dir, progress=False, max_new_tokens=8,
        optimizer=optimizer,
    )  # fmt: skip
    data, val = reverse_task(64, VOCAB), reverse_task(12, VOCAB, seed=7)
    t = Trainer(
        tiny_t5(backend), cfg, data, collate, val_data=val, info=info,
        generation_data={"reverse": val[:4]}, decode=decode_ids,
    )  # fmt: skip
    t.train()
    return t


def _worker(
    rank: int,
    world: int,
    port: int,
    strategy: str,
    micro: int,
    out_dir: str,
    optimizer: str,
    backend: str,
) -> None:
    info = join(rank, world, port)
    try:
        t = run(strategy, micro, out_dir, info, optimizer, backend)
        if rank == 0:
            evals = [r["val_loss"] for r in t.history if r["kind"] == "eval"]
            samples = [s["prediction"] for s in t.history[-1]["reverse/samples"]]
            result = {
                "losses": t.step_losses, "val": evals, "accumulation": t.accumulation,
                "samples": samples,
            }  # fmt: skip
            with open(os.path.join(out_dir, "result.json"), "w") as f:
                json.dump(result, f)
    finally:
        cleanup()


@pytest.fixture(scope="module")
def singles(tmp_path_factory):
    """One-process reference runs, one per optimizer (built on first use)."""
    cache = {}

    def get(optimizer, backend):
        key = (optimizer, backend)
        if key not in cache:
            out = str(tmp_path_factory.mktemp("single"))
            t = run("none", 8, out, optimizer=optimizer, backend=backend)
            cache[key] = (t, [r["val_loss"] for r in t.history if r["kind"] == "eval"])
        return cache[key]

    return get


def samples(t: Trainer) -> list[str]:
    return [s["prediction"] for s in t.history[-1]["reverse/samples"]]


@pytest.mark.parametrize(
    "strategy,micro,optimizer,backend",
    [
        ("ddp", 2, "adamw_scale", "naive"),
        ("fsdp", 4, "adamw_scale", "naive"),
        ("fsdp", 4, "adafactor", "naive"),
        # the bias-table path: its table must be gathered from the shards like any weight
        ("fsdp", 4, "adamw_scale", "t5_flash"),
    ],
)
def test_two_processes_equal_one(strategy, micro, optimizer, backend, singles, tmp_path):
    args = (2, free_port(), strategy, micro, str(tmp_path), optimizer, backend)
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    result = json.loads((tmp_path / "result.json").read_text())
    one, one_val = singles(optimizer, backend)
    # 8 examples per step = 2 processes x micro x accumulation
    assert result["accumulation"] == 8 // (2 * micro)
    assert result["losses"] == pytest.approx(one.step_losses, abs=1e-5)
    assert result["val"] == pytest.approx(one_val, abs=1e-5)
    # Generation works sharded (FSDP gathers the root's embedding and head explicitly).
    assert result["samples"] == samples(one)
    # The checkpoint written from the shards (FSDP) or a replica (DDP) holds the full model and
    # unsharded, name-keyed optimizer state: one process can resume it.
    resumed = Trainer(one.model_class(one.model.config), one.config, one.train_data, collate)
    resumed.load(tmp_path / "checkpoints")
    assert resumed.step == STEPS
    for (name, p), q in zip(one.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=0, msg=name)
        want, got = one.optimizer.state[p], resumed.optimizer.state[q]
        assert set(got) == set(want), name
        for key in want:  # exp_avg / exp_avg_sq (AdamWScale), factored rows / columns (Adafactor)
            torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5, msg=name + key)


def test_strategy_needs_a_process_group():
    with pytest.raises(ValueError, match="needs a process group: launch with torchrun"):
        wrap_model(tiny_t5(), "ddp", DistInfo())
    with pytest.raises(ValueError, match="strategy must be one of"):
        wrap_model(tiny_t5(), "zero3", DistInfo())
