"""T5's bias from its `(num_buckets, H)` table vs a materialised `(1, H, N, N)` bias: peak memory
and time of one attention layer's forward+backward against N (chapter 9).

B batch, H heads, N sequence length (queries = keys), Dh head dim. Three sides, each learning the
table (its gradient is part of the cost):

- `naive, materialised bias` and `flash, materialised bias`: `RelativePositionBias` gathers the
  `(1, H, N, N)` bias inside the measured call, so its `(H, N, N)` gradient exists and flows back
  to the table through the gather's backward;
- `t5_flash, bias table`: `t5_flash_attention` reads the table tile by tile and scatter-adds its
  gradient, never holding anything of size N x N.

Every peak is recorded beside its analytic lower bound, the bytes of dq, dk, dv and the table
gradient the call returns, and refused below it (`checked_peak_memory`).
"""

from __future__ import annotations

import torch

from t5edu.backends import attention
from t5edu.bench import attention as attention_bench
from t5edu.bench.timing import checked_peak_memory, time_alternating
from t5edu.relative_position import RelativePositionBias
from t5edu.t5_flash import t5_flash_attention

SIDES = ("naive, materialised bias", "flash, materialised bias", "t5_flash, bias table")
BUCKETS = {"num_buckets": 32, "max_distance": 128, "bidirectional": True}  # T5's encoder


def default_sweep(device: torch.device, quick: bool) -> dict:
    if quick:
        return {"batch": 1, "heads": 8, "head_dim": 64, "lengths": [64, 128]}
    return {"batch": 1, "heads": 8, "head_dim": 64, "lengths": [512, 1024, 2048, 4096]}


def _side(name: str, q, k, v, rpb: RelativePositionBias, grad):
    n = q.shape[-2]

    def run():
        for t in (q, k, v, rpb.weight):
            t.grad = None  # a fresh step, as in training
        if name.startswith("t5_flash"):
            out = t5_flash_attention(q, k, v, rpb.weight, **BUCKETS)
        else:
            backend = name.split(",")[0]
            out = attention(q, k, v, bias=rpb(n, n), scale=1.0, backend=backend)
        out.backward(grad)

    return run


def _inputs(b, h, n, dh, device, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        x = torch.randn(*shape, generator=gen) * scale
        return x.to(device=device, dtype=dtype).requires_grad_()

    rpb = RelativePositionBias(num_heads=h, **BUCKETS).to(device=device, dtype=dtype)
    # q scaled by Dh^-1/2 as T5's initialisation does (T5 passes scale=1.0 to attention)
    return rnd(b, h, n, dh, scale=dh**-0.5), rnd(b, h, n, dh), rnd(b, h, n, dh), rpb


def check_sides_agree(device, dtype, n: int = 96) -> float:
    """Largest difference of any side's output or gradients (q, k, v, table) from naive's on a
    small input; raises AssertionError above 1e-4 (fp32), so nothing unequal is timed."""
    q, k, v, rpb = _inputs(1, 2, n, 16, device, dtype, seed=1)
    grad = torch.randn(1, 2, n, 16, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    results = {}
    for name in SIDES:
        _side(name, q, k, v, rpb, grad)()
        results[name] = [t.grad.clone() for t in (q, k, v, rpb.weight)]
    ref = results[SIDES[0]]
    pairs = [(a, b) for r in results.values() for a, b in zip(r, ref, strict=True)]
    diff = max((a - b).abs().max().item() for a, b in pairs)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    if not diff <= tol:
        raise AssertionError(f"bias-table bench: sides differ by {diff:.2e} (> {tol:.0e})")
    return diff


def gradient_bytes(b: int, h: int, n: int, dh: int, itemsize: int, num_buckets: int) -> int:
    """dq, dk, dv `(b, h, n, dh)` each and the `(num_buckets, h)` table gradient, in bytes."""
    return attention_bench.gradient_bytes(b, h, n, dh, itemsize, False) + num_buckets * h * itemsize


def run(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    quick: bool = False,
    lengths: list[int] | None = None,
    repeats: int | None = None,
) -> dict:
    """Peak memory (with its lower bound) and time of the three sides over the sweep."""
    device = torch.device(device)
    sweep = default_sweep(device, quick)
    if lengths is not None:
        sweep["lengths"] = list(lengths)
    repeats = repeats or 3
    b, h, dh = sweep["batch"], sweep["heads"], sweep["head_dim"]
    max_diff = check_sides_agree(device, dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    rows = []
    for n in sweep["lengths"]:
        q, k, v, rpb = _inputs(b, h, n, dh, device, dtype)
        grad = torch.ones(b, h, n, dh, device=device, dtype=dtype)
        fns = {name: _side(name, q, k, v, rpb, grad) for name in SIDES}
        timings = time_alternating(fns, device=device, warmup=1, repeats=repeats)
        lower = gradient_bytes(b, h, n, dh, itemsize, BUCKETS["num_buckets"])
        for name in SIDES:
            mem = checked_peak_memory(fns[name], device, lower, f"{name} at N={n}")
            rows.append(
                {
                    "side": name,
                    "seq_len": n,
                    "time": timings[name].to_dict(),
                    "peak_bytes": mem["peak_bytes"],
                    "gradient_bytes": mem["gradient_bytes"],
                    "memory_method": mem["method"],
                }
            )
        del q, k, v, rpb, grad, fns
    return {
        "config": {**sweep, **BUCKETS, "dtype": str(dtype).replace("torch.", "")},
        "sides": list(SIDES),
        "max_abs_diff_vs_naive": max_diff,
        "rows": rows,
    }
