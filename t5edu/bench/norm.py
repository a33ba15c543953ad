"""RMSNorm variants: t5edu's autograd RMSNorm, FastRMSNorm (hand-written backward),
torch.nn.RMSNorm and torch.compile'd RMSNorm; forward+backward time, saved activations, peak.

N rows (batch * length), D model width.
"""

from __future__ import annotations

import time

import torch
from torch import nn

import t5edu
from t5edu.bench.timing import checked_peak_memory, sync, time_alternating


def default_shape(device: torch.device, quick: bool) -> tuple[int, int, int]:
    """(batch, length, width): t5-small's activations (8 x 512 x 512) on the CPU, t5-base-like
    larger ones on CUDA where the small ones take microseconds."""
    if quick:
        return (4, 128, 512)
    return (16, 1024, 1024) if device.type == "cuda" else (8, 512, 512)


def _variants(dim: int, eps: float, compile_: bool) -> tuple[dict, dict]:
    """name -> module (sharing one weight), and name -> reason for variants not available."""
    made, skipped = {}, {}
    made["t5edu.RMSNorm"] = t5edu.RMSNorm(dim, eps=eps)
    fast = getattr(t5edu, "FastRMSNorm", None)
    if fast is None:
        skipped["t5edu.FastRMSNorm"] = "not in this version of t5edu"
    else:
        made["t5edu.FastRMSNorm"] = fast(dim, eps=eps)
    made["torch.nn.RMSNorm"] = nn.RMSNorm(dim, eps=eps)
    if compile_:
        made["torch.compile(t5edu.RMSNorm)"] = t5edu.RMSNorm(dim, eps=eps)
    else:
        skipped["torch.compile(t5edu.RMSNorm)"] = "compilation switched off (--no-compile)"
    return made, skipped


def run(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    quick: bool = False,
    compile: bool = True,
    repeats: int | None = None,
) -> dict:
    """Compare the norms on one activation-sized input; a JSON-ready dict."""
    from t5edu.fast_rmsnorm import saved_tensor_bytes

    device = torch.device(device)
    b, t, d = default_shape(device, quick)
    repeats = repeats or (5 if quick else 10)
    gen = torch.Generator(device="cpu").manual_seed(0)
    weight = 1 + 0.1 * torch.randn(d, generator=gen)
    x = torch.randn(b, t, d, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    grad = torch.randn(b, t, d, generator=gen).to(device=device, dtype=dtype)
    mods, skipped = _variants(d, 1e-6, compile)
    for m in mods.values():
        with torch.no_grad():
            m.weight.copy_(weight)
        m.to(device=device, dtype=dtype)

    def step(m):
        def fn():
            x.grad = None
            m.weight.grad = None
            m(x).backward(grad)

        return fn

    calls = {}
    compile_s = None
    for name, m in mods.items():
        if name.startswith("torch.compile"):
            try:
                compiled = torch.compile(m, dynamic=False)
                sync(device)
                t0 = time.perf_counter()
                step(compiled)()  # the first call compiles forward and backward
                sync(device)
                compile_s = time.perf_counter() - t0
            except Exception as err:  # no C++ compiler / unsupported device: record and go on
                skipped[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"[:300]
                continue
            calls[name] = compiled
        else:
            calls[name] = m

    # Correctness first: every variant must give RMSNorm's output and gradients.
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    ref_y = calls["t5edu.RMSNorm"](x)
    ref_gx, ref_gw = torch.autograd.grad(ref_y, (x, mods["t5edu.RMSNorm"].weight), grad)
    max_diff = {}
    for name, m in calls.items():
        y = m(x)
        gx, gw = torch.autograd.grad(y, (x, mods[name].weight), grad)
        with torch.no_grad():
            # the weight gradient sums N rows: compare it relative to its scale
            gw_scale = ref_gw.abs().max().clamp_min(1.0)
            diffs = [(y - ref_y).abs().max(), (gx - ref_gx).abs().max()]
            diffs.append((gw - ref_gw).abs().max() / gw_scale)
            max_diff[name] = max(v.item() for v in diffs)
        # fp32 disagreement is a bug (the norm tests would fail too): stop. In half precision the
        # variants round differently (torch.nn.RMSNorm may compute in the input dtype), so the gap
        # is recorded next to the timings instead.
        if dtype == torch.float32 and not max_diff[name] <= tol:
            raise AssertionError(
                f"norm bench: {name} differs from t5edu.RMSNorm by {max_diff[name]}"
            )

    timings = time_alternating(
        {n: step(m) for n, m in calls.items()},
        device=device,
        warmup=2,
        repeats=repeats,
        min_sample_s=0.02 if quick else 0.1,
    )
    rows = []
    for name, m in calls.items():
        # a step returns the input's and the weight's gradients
        w = mods[name].weight
        grads = x.numel() * x.element_size() + w.numel() * w.element_size()
        mem = checked_peak_memory(step(m), device, grads, f"norm bench, {name}")
        rows.append(
            {
                "variant": name,
                "time": timings[name].to_dict(),
                "saved_bytes": saved_tensor_bytes(lambda m=m: m(x)),
                "peak_bytes": mem["peak_bytes"],
                "gradient_bytes": mem["gradient_bytes"],
                "max_abs_diff_vs_rmsnorm": max_diff[name],
                "compile_s": compile_s if name.startswith("torch.compile") else None,
            }
        )
    return {
        "config": {"shape": [b, t, d], "dtype": str(dtype).replace("torch.", ""), "eps": 1e-6},
        "rows": rows,
        "skipped": skipped,
        "input_bytes": x.numel() * x.element_size(),
    }
