"""Where a run goes and in which precision: the one place that decides (CUDA, Apple MPS, CPU).

Chapters (`t5edu.setup`), the trainer and the CLIs all ask here, so a Colab T4, an A100, an
Apple-silicon Mac and a CPU each get the right choice:

- device ("auto"): CUDA when torch sees a GPU, else Apple's MPS, else the CPU.
- precision ("auto"): bf16 on GPUs with bf16 tensor cores (compute capability 8.0 and up: A100,
  L4, H100); fp16 with loss scaling on older GPUs (T4, V100: 7.x), where torch only emulates
  bf16 (`torch.cuda.is_bf16_supported()` is True there unless `including_emulation=False`, and
  the emulation is slower than fp32); fp32 on MPS and the CPU.
- what MPS cannot run (`MPS_UNSUPPORTED`): refused before any work, naming what to use instead.
  Ops that MPS lacks inside torch itself fall back to the CPU only when the environment variable
  `PYTORCH_ENABLE_MPS_FALLBACK=1` is set before Python starts (torch reads it at import).
- whether a training run can fit (`check_training_fits`): a lower estimate of its bytes against
  the device's memory, refused with the sizes and what to lower.

Tested on the CPU by faking the device properties (tests/test_device.py); no MPS machine was
available to the authors, so MPS support is what the torch documentation promises, not measured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"

# What t5edu cannot run on Apple's MPS, and what to use instead (torch 2.x on macOS 14).
MPS_UNSUPPORTED: Mapping[str, str] = {
    "float64": "MPS has no float64 tensors; run float64 checks (gradcheck) on the CPU",
    "attention_backend=triton": "Triton kernels need CUDA; use sdpa or flash",
    "attention_backend=flex": "FlexAttention compiles through Triton, which needs CUDA; use sdpa",
    "strategy=ddp": "torch.distributed has no MPS backend; train on one device (strategy=none)",
    "strategy=fsdp": "torch.distributed has no MPS backend; train on one device (strategy=none)",
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(requested: str | torch.device = "auto") -> torch.device:
    """The device a run uses: `requested`, or for "auto" CUDA, else MPS, else the CPU.

    Raises:
        ValueError: `requested` is not one of auto, cpu, cuda, cuda:N, mps, or names a device
            torch cannot see (no CUDA GPU, an index past the GPUs, no MPS).
    """
    if isinstance(requested, str) and requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected {DEVICE_CHOICES}; got {requested!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: got {requested!r}, but no CUDA GPU is visible to torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: got {requested!r}, but torch sees {torch.cuda.device_count()} CUDA "
                f"GPU(s), indices 0..{torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device: got {requested!r}, but MPS is not available (Apple silicon)")
    elif device.type != "cpu":
        raise ValueError(f"device: expected {DEVICE_CHOICES}; got {requested!r}")
    return device


def native_bf16(device: torch.device) -> bool:
    """True on a CUDA GPU with bf16 tensor cores (compute capability >= 8.0), False elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def auto_precision(device: torch.device) -> str:
    """ "bf16" with bf16 tensor cores, "fp16" (the trainer adds loss scaling) on older CUDA GPUs
    such as the T4, "fp32" on MPS and the CPU. See the module docstring for why not bf16 on a T4."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if native_bf16(device) else "fp16"
    return "fp32"


def check_supported(
    device: torch.device,
    *,
    attention_backend: str | None = None,
    strategy: str = "none",
    dtype: torch.dtype | None = None,
) -> None:
    """Refuse what `device` cannot run, before any work starts (MPS only, see `MPS_UNSUPPORTED`).

    Raises:
        ValueError: naming the argument, the device and what to use instead.
    """
    if torch.device(device).type != "mps":
        return
    asked = []
    if dtype == torch.float64:
        asked.append("float64")
    if attention_backend is not None:
        asked.append(f"attention_backend={attention_backend}")
    if strategy != "none":
        asked.append(f"strategy={strategy}")
    for key in asked:
        if key in MPS_UNSUPPORTED:
            raise ValueError(f"{key} cannot run on mps: {MPS_UNSUPPORTED[key]}")


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of `device` in bytes: the GPU's for CUDA, physical RAM for the CPU and for
    MPS (Apple silicon shares it with the GPU); None where it is not known."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type in ("cpu", "mps"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    return None


# Bytes per parameter kept between steps: fp32 weights, fp32 gradients, optimizer state.
# AdamW keeps two fp32 moments; Adafactor's factored second moment is a row and a column per
# matrix, which rounds to 0 bytes per parameter in a lower estimate.
STATE_BYTES_PER_PARAMETER = {"adamw": 16, "adamw_scale": 16, "adafactor": 8}


def training_bytes(
    config,
    num_parameters: int,
    *,
    batch_size: int,
    src_len: int,
    tgt_len: int,
    optimizer: str = "adamw",
    precision: str = "fp32",
) -> int:
    """A lower estimate of the memory one training step needs, in bytes.

    Counted: weights, gradients and optimizer state (`STATE_BYTES_PER_PARAMETER`), the input of
    every sublayer saved for backward (2 per encoder layer of (B, S, d_model), 3 per decoder
    layer of (B, T, d_model), in the compute dtype: 2 bytes in bf16/fp16, 4 in fp32) and the
    float32 logits with their gradient (2 x (B, T, vocab)). Everything else (attention scores,
    feed-forward activations, the allocator's slack) only adds to it, so a run whose estimate
    exceeds the device's memory cannot fit; one below may still not (chapter 12 measures peaks).

    Raises:
        ValueError: for an unknown optimizer or precision, a size or parameter count that is
            not an int >= 1, or a config without T5's fields.
    """
    for name in ("d_model", "num_layers", "num_decoder_layers", "vocab_size"):
        if not isinstance(getattr(config, name, None), int):
            raise ValueError(
                f"config: expected a T5Config (with an int {name}); got {type(config).__name__}"
            )
    if optimizer not in STATE_BYTES_PER_PARAMETER:
        raise ValueError(
            f"optimizer: expected one of {sorted(STATE_BYTES_PER_PARAMETER)}; got {optimizer!r}"
        )
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision: expected fp32, bf16 or fp16; got {precision!r}")
    sizes = dict(
        num_parameters=num_parameters, batch_size=batch_size, src_len=src_len, tgt_len=tgt_len
    )
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1; got {value!r}")
    act = 4 if precision == "fp32" else 2
    d, b = config.d_model, batch_size
    encoder, decoder = config.num_layers, config.num_decoder_layers
    saved = 2 * encoder * b * src_len * d + 3 * decoder * b * tgt_len * d
    logits = 2 * b * tgt_len * config.vocab_size * 4
    return STATE_BYTES_PER_PARAMETER[optimizer] * num_parameters + act * saved + logits


def check_training_fits(need_bytes: int, device: torch.device, what: str) -> None:
    """ValueError when `need_bytes` (from `training_bytes`) exceeds `device`'s memory, saying
    both sizes in GiB and `what` to change (e.g. "lower --batch-size or --max-input-length").
    Devices whose memory is unknown pass."""
    total = device_memory_bytes(device)
    if total is None or need_bytes <= total:
        return
    gib = 2**30
    raise ValueError(
        f"this run cannot fit on {device}: it needs at least {need_bytes / gib:.1f} GiB "
        f"(weights, gradients, optimizer state, saved activations, logits), more than the "
        f"{total / gib:.1f} GiB there; {what}"
    )
