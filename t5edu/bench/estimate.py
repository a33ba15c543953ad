"""What a training run will cost on a Colab T4 and on an A100, before it starts.

Time comes from chapter 12's matmul FLOPs (`t5_flops`) over the data-sheet peak of each GPU in
the precision `t5edu.device.auto_precision` picks there (fp16 on the T4, bf16 on the A100): the
time at 100% of the peak is a hard lower bound; the time at `TYPICAL_MFU` is an assumption, not a
measurement, and small models at small batches land below it (launch overheads dominate).
Memory is `t5edu.device.training_bytes`, a lower estimate: a run whose estimate exceeds the
GPU's memory cannot fit there; one below it is only not ruled out. What it leaves out (the
feed-forward activations, attention probabilities, dropout masks) is several times larger: for
t5-small at 4 x 512/128 tokens in fp32, autograd saves 1.62 GiB besides the weights
(`t5edu.saved_tensor_bytes`), where this estimate counts 0.19 GiB of activations and logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from t5edu.bench.flops import t5_flops, vendor_peak_tflops
from t5edu.bench.report import table
from t5edu.device import training_bytes

# An assumed model-FLOPs utilisation for a dense T5 training step on one GPU. PaLM (Chowdhery
# et al. 2022, table 3) reports 46% at 540B parameters on TPUs; a small model does worse.
TYPICAL_MFU = 0.3


@dataclass(frozen=True)
class ReferenceGPU:
    name: str
    memory_bytes: int  # what torch reports as usable, not the marketing figure
    precision: str  # what `auto_precision` picks there
    dtype: str  # the data-sheet column for that precision

    @property
    def peak_flops(self) -> float:
        return vendor_peak_tflops(self.name, self.dtype) * 1e12


# T4: 16 GB on the data sheet, 15 GiB usable (Colab's nvidia-smi: 15360 MiB); compute
# capability 7.5, so fp16. A100 40GB (SXM or PCIe): capability 8.0, so bf16.
REFERENCE_GPUS = (
    ReferenceGPU("T4", 15 * 2**30, "fp16", "float16"),
    ReferenceGPU("A100 40GB", 40 * 2**30, "bf16", "bfloat16"),
)


def estimate_training(
    config,
    num_parameters: int,
    *,
    batch_size: int,
    src_len: int,
    tgt_len: int,
    steps: int,
    optimizer: str = "adamw_scale",
) -> list[dict]:
    """One row per `REFERENCE_GPUS` entry: gpu, precision, the run's seconds at the data-sheet
    peak (a lower bound) and at `TYPICAL_MFU`, its memory lower estimate in bytes, and
    `cannot_fit`: True when even that lower estimate exceeds the GPU's memory (False means not
    ruled out, not that it fits).

    Raises:
        ValueError: for sizes below 1 or an unknown optimizer (from `training_bytes`).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1; got {steps!r}")
    flops = t5_flops(config, batch_size, src_len, tgt_len).training * steps
    rows = []
    for gpu in REFERENCE_GPUS:
        need = training_bytes(
            config,
            num_parameters,
            batch_size=batch_size,
            src_len=src_len,
            tgt_len=tgt_len,
            optimizer=optimizer,
            precision=gpu.precision,
        )
        at_peak = flops / gpu.peak_flops
        rows.append(
            {
                "gpu": gpu.name,
                "precision": gpu.precision,
                "seconds_at_peak": at_peak,
                "seconds_typical": at_peak / TYPICAL_MFU,
                "memory_bytes_at_least": need,
                "cannot_fit": need > gpu.memory_bytes,
            }
        )
    return rows


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_table(rows: list[dict]) -> str:
    """`estimate_training`'s rows as a Markdown table (for `display(Markdown(...))`)."""
    mfu = f"{TYPICAL_MFU:.0%}"
    header = ["GPU", "precision", "time at peak (bound)", f"time at {mfu} MFU", "memory", "verdict"]
    body = [
        [
            r["gpu"],
            r["precision"],
            _duration(r["seconds_at_peak"]),
            _duration(r["seconds_typical"]),
            f">= {r['memory_bytes_at_least'] / 2**30:.2f} GiB",
            "cannot fit" if r["cannot_fit"] else "not ruled out",
        ]
        for r in rows
    ]
    return table(header, body)
