"""The machine record stored with every benchmark result: hardware, software, load, date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess

import torch

from t5edu._version import __version__
from t5edu.device import device_memory_bytes

_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma", "neon", "asimd")


def _cpuinfo() -> dict:
    """CPU model name and the SIMD flags that decide which kernels PyTorch can use (Linux)."""
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if m:
        info["model"] = m.group(1).strip()
    m = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M)
    if m:
        have = set(m.group(2).split())
        info["flags"] = [f for f in _CPU_FLAGS if f in have]
    return info


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (runnable processes); compare with the core count to
    see whether other work shared the machine during a run."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_record(device: torch.device | str = "cpu") -> dict:
    """Everything needed to interpret a figure later: CPU, cores, GPU, library versions, date."""
    device = torch.device(device)
    cpu = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    rec = {
        "device": device.type,
        "cpu_model": cpu["model"],
        "cpu_flags": cpu["flags"],
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": device_memory_bytes(torch.device("cpu")),
        "gpu_name": None,
        "gpu_memory_bytes": None,
        "gpu_count": 0,
        "cuda_version": torch.version.cuda,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": None,
        "triton": None,
        "t5edu": __version__,
        "git_commit": _git_commit(),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average": load_average(),
    }
    try:
        import transformers

        rec["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        import triton

        rec["triton"] = triton.__version__
    except ImportError:
        pass
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        rec["gpu_name"] = props.name
        rec["gpu_memory_bytes"] = int(props.total_memory)
        rec["gpu_count"] = torch.cuda.device_count()
        rec["gpu_capability"] = f"{props.major}.{props.minor}"
    return rec


def machine_slug(rec: dict) -> str:
    """A short file-name-safe id for a machine, e.g. `cpu-amd-epyc-2c` or `cuda-nvidia-h200`."""
    if rec["device"] == "cuda" and rec.get("gpu_name"):
        name = rec["gpu_name"]
        slug = "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    else:
        name = rec["cpu_model"] or "cpu"
        slug = "cpu-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        slug += f"-{rec['cpu_usable']}c"
    return re.sub(r"-(r|tm)-", "-", slug)
