"""t5edu.bench.estimate: a run's time and memory on a T4 and an A100, before it starts."""

from types import SimpleNamespace

import pytest
import torch

from t5edu.bench.estimate import REFERENCE_GPUS, TYPICAL_MFU, estimate_table, estimate_training
from t5edu.bench.flops import t5_flops
from t5edu.config import T5Config
from t5edu.device import check_training_fits, training_bytes

SMALL = T5Config.get_config("t5-small")
SMALL_PARAMS = 60_506_624  # HF's t5-small (chapter 3 counts it)


def test_time_is_the_flops_over_each_gpus_peak_in_its_precision():
    rows = estimate_training(SMALL, SMALL_PARAMS, batch_size=128, src_len=512, tgt_len=114,
                             steps=1000)  # fmt: skip
    flops = t5_flops(SMALL, 128, 512, 114).training * 1000
    t4, a100 = rows
    assert (t4["gpu"], t4["precision"], a100["gpu"], a100["precision"]) == (
        "T4",
        "fp16",
        "A100 40GB",
        "bf16",
    )
    assert t4["seconds_at_peak"] == pytest.approx(flops / 65e12, rel=1e-12)  # T4 fp16: 65 TFLOP/s
    assert a100["seconds_at_peak"] == pytest.approx(flops / 312e12, rel=1e-12)  # A100 bf16: 312
    for r in rows:
        assert r["seconds_typical"] == pytest.approx(r["seconds_at_peak"] / TYPICAL_MFU)


def test_memory_is_the_lower_estimate_in_the_gpus_precision():
    kw = dict(batch_size=64, src_len=512, tgt_len=128)
    rows = estimate_training(SMALL, SMALL_PARAMS, steps=1, **kw)
    for gpu, row in zip(REFERENCE_GPUS, rows, strict=True):
        want = training_bytes(
            SMALL, SMALL_PARAMS, optimizer="adamw_scale", precision=gpu.precision, **kw
        )
        assert row["memory_bytes_at_least"] == want
        assert row["cannot_fit"] == (want > gpu.memory_bytes)


def test_fits_agrees_with_the_refusal_on_a_faked_gpu_of_that_size(monkeypatch):
    config = T5Config.get_config("t5-large")
    kw = dict(batch_size=96, src_len=512, tgt_len=128)
    t4, a100 = estimate_training(config, 737_668_096, steps=1, **kw)
    assert t4["cannot_fit"] and not a100["cannot_fit"]
    for gpu, row in zip(REFERENCE_GPUS, (t4, a100), strict=True):
        props = SimpleNamespace(total_memory=gpu.memory_bytes)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None, p=props: p)
        if not row["cannot_fit"]:
            check_training_fits(row["memory_bytes_at_least"], torch.device("cuda"), "-")
        else:
            with pytest.raises(ValueError, match="cannot fit on cuda"):
                check_training_fits(row["memory_bytes_at_least"], torch.device("cuda"), "-")


def test_table_has_a_row_per_gpu_and_says_what_is_a_bound():
    rows = estimate_training(SMALL, SMALL_PARAMS, batch_size=8, src_len=64, tgt_len=16, steps=10)
    text = estimate_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| GPU") and "time at peak (bound)" in lines[0]
    assert "time at 30% MFU" in lines[0]
    assert len(lines) == 2 + len(REFERENCE_GPUS)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "T4" and cells[4].endswith("GiB") and cells[5] == "not ruled out", cells


@pytest.mark.parametrize("steps", [0, 2.5, True])
def test_bad_steps_are_refused_by_name(steps):
    with pytest.raises(ValueError, match="steps: expected an int >= 1"):
        estimate_training(SMALL, SMALL_PARAMS, batch_size=1, src_len=1, tgt_len=1, steps=steps)
