"""Attention backends with T5's bias: forward+backward time and peak memory vs sequence length.

B batch, H heads, N sequence length (queries = keys), Dh head dim.

Every backend in `t5edu.backends.BACKENDS` is discovered at run time and first checked on a tiny
input against the naive reference; a backend that raises or disagrees on this device and dtype
is skipped with the reason recorded. The bias is T5's per-head relative bias `(1, H, N, N)`,
learned, so its gradient is part of the cost; peak memory is also measured with the bias frozen
(no `(H, N, N)` gradient), the case where tiled kernels can stay O(N).

Every measured peak is recorded beside its analytic lower bound, the bytes of the gradients the
call returns (`gradient_bytes`); a measurement below that bound is a broken measurement, and the
benchmark raises instead of recording it.
"""

from __future__ import annotations

import torch

from t5edu.backends import BACKENDS, attention
from t5edu.bench.timing import checked_peak_memory, time_alternating

# Backends whose CPU path is a correctness tool (an interpreter, an unfused reference), far too
# slow to be worth timing; on CUDA they are probed like the rest.
CUDA_ONLY = {
    "triton": "Triton kernels need CUDA (on the CPU only TRITON_INTERPRET, for tests)",
    "flex": "FlexAttention is compiled to a fused kernel only on CUDA; on the CPU its eager "
    "reference path materialises the scores (and has no backward)",
}


# Backends that take T5's bias from its table, not as the materialised (1, H, N, N) tensor this
# sweep passes: given one they run another backend, so they are measured where their path runs.
TABLE_ONLY = {
    "t5_flash": "given a materialised bias it runs 'flash' (measured under that name); its "
    "bias-table path is measured by `python -m t5edu.bench bias-table`",
}


def default_sweep(device: torch.device, quick: bool) -> dict:
    """Shapes of the sweep. On the CPU the largest point is the flash-attention acceptance
    configuration: N=4096, 8 heads, d=64, batch 1 (fp32 when `--dtype float32`)."""
    if quick:
        return {"batch": 1, "heads": 8, "head_dim": 64, "lengths": [128, 256, 512]}
    if device.type == "cuda":
        return {"batch": 4, "heads": 12, "head_dim": 64, "lengths": [512, 1024, 2048, 4096, 8192]}
    return {"batch": 1, "heads": 8, "head_dim": 64, "lengths": [256, 512, 1024, 2048, 4096]}


def _inputs(b, h, n, dh, device, dtype, bias_grad, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    # q scaled by Dh^-1/2 as T5's initialisation does, so the logits have unit scale (T5 passes
    # scale=1.0 to attention).
    q = rnd(b, h, n, dh, scale=dh**-0.5).requires_grad_()
    k = rnd(b, h, n, dh).requires_grad_()
    v = rnd(b, h, n, dh).requires_grad_()
    bias = rnd(1, h, n, n).requires_grad_(bias_grad)
    return q, k, v, bias


def gradient_bytes(b: int, h: int, n: int, dh: int, itemsize: int, bias_learned: bool) -> int:
    """Bytes of the gradients one forward+backward returns and keeps alive: dq, dk, dv, each
    `(b, h, n, dh)`, plus the `(1, h, n, n)` bias gradient when the bias is learned. Any correct
    peak-memory measurement of that call is at least this."""
    grads = 3 * b * h * n * dh + (h * n * n if bias_learned else 0)
    return grads * itemsize


def _fwd_bwd(name, q, k, v, bias, grad):
    def run():
        for t in (q, k, v, bias):
            t.grad = None
        out = attention(q, k, v, bias=bias, scale=1.0, backend=name)
        out.backward(grad)

    return run


def _alias(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """The backend a dispatching backend ('auto') picks for a T5-like call, when it is another
    registered backend (timing it again would only repeat that one)."""
    try:
        from t5edu.backends import resolve_backend
    except ImportError:
        return None
    q, k, v, bias = _inputs(1, 2, 16, 16, device, dtype, bias_grad=True)
    try:
        picked = resolve_backend(name, q, k, v, bias=bias)
    except ValueError:
        return None
    return picked if picked != name else None


def probe(name: str, device: torch.device, dtype: torch.dtype, backward: bool = True) -> str | None:
    """None when backend `name` runs forward (and with `backward`, backward with a learned
    bias) on this device and dtype and matches the naive reference; else why it is skipped."""
    if device.type != "cuda" and name in CUDA_ONLY:
        return CUDA_ONLY[name]
    if name in TABLE_ONLY:
        return TABLE_ONLY[name]
    alias = _alias(name, device, dtype)
    if alias is not None:
        return f"resolves to {alias!r} on this device and dtype (measured under that name)"
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    try:
        ins = _inputs(1, 2, 48, 16, device, dtype, bias_grad=backward, seed=1)
        ins = [t.detach().requires_grad_(backward) for t in ins]
        ref = [t.detach().clone().requires_grad_(backward) for t in ins]
        with torch.set_grad_enabled(backward):
            out = attention(*ins[:3], bias=ins[3], scale=1.0, backend=name)
            want = attention(*ref[:3], bias=ref[3], scale=1.0, backend="naive")
        diffs = [(out - want).abs().max().item()]
        if backward:
            g = torch.ones_like(out)
            out.backward(g)
            want.backward(g)
            diffs += [(a.grad - b.grad).abs().max().item() for a, b in zip(ins, ref, strict=True)]
    except Exception as err:  # any failure means "not usable here"; the reason is recorded
        msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"{type(err).__name__}: {msg}"[:300]
    if not max(diffs) <= tol:
        return f"differs from naive by {max(diffs):.2e} (> {tol:.0e}) on a probe input"
    return None


def run(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    quick: bool = False,
    lengths: list[int] | None = None,
    repeats: int | None = None,
) -> dict:
    """Time and memory of every usable backend over the sweep; a JSON-ready dict."""
    device = torch.device(device)
    sweep = default_sweep(device, quick)
    if lengths is not None:
        sweep["lengths"] = list(lengths)
    repeats = repeats or (3 if quick else 5)
    b, h, dh = sweep["batch"], sweep["heads"], sweep["head_dim"]
    skipped, usable = {}, []
    for name in BACKENDS:
        reason = probe(name, device, dtype)
        if reason is None:
            usable.append(name)
        else:
            skipped[name] = reason
    itemsize = torch.empty((), dtype=dtype).element_size()
    rows = []
    for n in sweep["lengths"]:
        q, k, v, bias = _inputs(b, h, n, dh, device, dtype, bias_grad=True)
        grad = torch.ones(b, h, n, dh, device=device, dtype=dtype)
        fns = {name: _fwd_bwd(name, q, k, v, bias, grad) for name in usable}
        timings = time_alternating(
            fns, device=device, warmup=1, repeats=repeats, min_sample_s=0.05 if quick else 0.2
        )
        lower = gradient_bytes(b, h, n, dh, itemsize, bias_learned=True)
        lower_frozen = gradient_bytes(b, h, n, dh, itemsize, bias_learned=False)
        for name in usable:  # each call clears the grads it finds first: a fresh step
            mem = checked_peak_memory(fns[name], device, lower, f"{name} at N={n}, bias learned")
            frozen = _fwd_bwd(name, q, k, v, bias.detach(), grad)
            mem_frozen = checked_peak_memory(frozen, device, lower_frozen, f"{name}, N={n}, frozen")
            rows.append(
                {
                    "backend": name,
                    "seq_len": n,
                    "time": timings[name].to_dict(),
                    "peak_bytes": mem["peak_bytes"],
                    "peak_bytes_frozen_bias": mem_frozen["peak_bytes"],
                    "gradient_bytes": lower,
                    "gradient_bytes_frozen_bias": lower_frozen,
                    "memory_method": mem["method"],
                }
            )
        del q, k, v, bias, grad, fns
    return {
        "config": {**sweep, "dtype": str(dtype).replace("torch.", ""), "bias": "(1, H, N, N)"},
        "backends": usable,
        "skipped": skipped,
        "rows": rows,
        "memory_check": memory_check(rows),
    }


def memory_check(rows: list[dict]) -> dict:
    """Each backend's peak memory at the longest length as a fraction of naive's, with the bias
    learned and with it frozen."""
    if not rows:
        return {}
    n = max(r["seq_len"] for r in rows)
    at_n = {r["backend"]: r for r in rows if r["seq_len"] == n}
    if "naive" not in at_n:
        return {}
    naive = at_n["naive"]
    out = {"seq_len": n, "backends": {}}
    for name, r in at_n.items():
        if name == "naive":
            continue
        out["backends"][name] = {
            "fraction_learned_bias": r["peak_bytes"] / max(naive["peak_bytes"], 1),
            "fraction_frozen_bias": r["peak_bytes_frozen_bias"]
            / max(naive["peak_bytes_frozen_bias"], 1),
        }
    return out
