"""Training-step benchmark: t5edu vs HF Transformers' T5 with identical config, weights, batch.

B batch, S source (input) length, T target length.

One training step = forward with labels, backward, AdamW step. t5edu runs once per usable
attention backend; HF runs with its default attention implementation (and eager). All sides
are timed in one process, alternating round by round; tokens/s counts source + target tokens.
Also the speed ladder of chapter 12: naive eager -> fastest attention backend -> bf16 autocast
(CUDA) -> torch.compile -> fused norm, one change per row.
"""

from __future__ import annotations

import contextlib
import time

import torch

from t5edu.bench.attention import probe
from t5edu.bench.flops import measured_peak_flops, mfu, t5_flops, vendor_peak_tflops
from t5edu.bench.timing import checked_peak_memory, paired_ratio, sync, time_alternating

HALF = (torch.float16, torch.bfloat16)
HF_REFERENCE = "HF Transformers (reference)"


def default_shape(device: torch.device, quick: bool) -> dict:
    """t5-small with the span-corruption shapes of T5 pre-training (512 input -> 114 target
    tokens) and batch 8; `quick`: the `tiny` preset on a tiny batch (CI: proves it runs)."""
    if quick:
        return {"preset": "tiny", "batch": 2, "src_len": 64, "tgt_len": 16}
    return {"preset": "t5-small", "batch": 8, "src_len": 512, "tgt_len": 114}


def make_batch(vocab_size: int, batch: int, src_len: int, tgt_len: int, device, seed: int = 0):
    """Random token ids in [2, vocab) (no pad/eos inside), a full attention mask and labels."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(2, vocab_size, (batch, src_len), generator=gen)
    labels = torch.randint(2, vocab_size, (batch, tgt_len), generator=gen)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
    }


def build_pair(preset: str, device, seed: int = 0, **overrides):
    """A t5edu model (dropout off, so both sides compute the same function) and HF's copy.

    Returns `(config, t5edu_model, hf_model)`, both in float32 on `device`, in train mode.
    """
    import t5edu
    from t5edu.hf import to_hf

    config = t5edu.T5Config.get_config(preset, dropout_rate=0.0, **overrides)
    torch.manual_seed(seed)
    model = t5edu.T5ForConditionalGeneration(config)
    hf = to_hf(model)
    return config, model.to(device).train(), hf.to(device).train()


def clone_with(model, device, **changes):
    """A t5edu model like `model` (same weights) with some config fields changed."""
    import t5edu

    other = t5edu.T5ForConditionalGeneration(model.config.replace(**changes))
    other.load_state_dict(model.state_dict())
    return other.to(device).train()


def hf_with_attention(hf_model, impl: str):
    """A copy of an HF model with another attention implementation ('eager', 'sdpa')."""
    import copy

    other = copy.deepcopy(hf_model)
    other.set_attn_implementation(impl)
    return other


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16/fp16 autocast (weights and optimizer stay fp32), or nothing for fp32."""
    if dtype in HALF:
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def train_step(model, batch, device, dtype, lr=1e-4):
    """A closure running one forward+backward+AdamW step; returns `(step, loss_fn)`."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def loss_fn():
        with autocast(device, dtype):
            return model(**batch).loss

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss

    return step, loss_fn


def _gradient_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameter gradients a training step leaves (shared weights counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def _summarise(timings, tokens, flops, peaks, base="hf"):
    rows = []
    for name, t in timings.items():
        row = {
            "name": name,
            "time": t.to_dict(),
            "tokens_per_s": tokens / t.median_s,
            "achieved_tflops": flops / t.median_s / 1e12,
        }
        for key, peak in peaks.items():
            if peak:
                row[f"mfu_{key}"] = mfu(flops, t.median_s, peak * 1e12)
        if base in timings:
            row["speed_vs_" + base] = paired_ratio(timings[base], t)
        rows.append(row)
    return rows


def run(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    quick: bool = False,
    repeats: int | None = None,
    backends: list[str] | None = None,
    ladder: bool = True,
    compile: bool | None = None,
    preset: str | None = None,
    batch_size: int | None = None,
) -> dict:
    """Training step t5edu (each backend) vs HF, then the speed ladder; a JSON-ready dict.

    `preset` and `batch_size` override the default shape (e.g. `t5-base`, 32 on a large GPU).
    """
    from t5edu.backends import BACKENDS

    device = torch.device(device)
    shape = default_shape(device, quick)
    shape.update({k: v for k, v in (("preset", preset), ("batch", batch_size)) if v})
    repeats = repeats or (3 if quick else 5)
    config, base, hf = build_pair(shape["preset"], device)
    b, s, t = shape["batch"], shape["src_len"], shape["tgt_len"]
    batch = make_batch(config.vocab_size, b, s, t, device)
    tokens = b * (s + t)
    flops = t5_flops(config, b, s, t)
    skipped = {n: "not selected (--backends)" for n in BACKENDS if backends and n not in backends}
    names = backends or list(BACKENDS)
    usable = []
    for name in names:
        reason = probe(name, device, dtype) if name in BACKENDS else "not registered"
        if reason is None:
            usable.append(name)
        else:
            skipped[name] = reason

    sides = {"hf": hf, "hf-eager": hf_with_attention(hf, "eager")}
    for name in usable:
        sides[f"t5edu[{name}]"] = clone_with(base, device, attention_backend=name)
    del base
    steps, losses = {}, {}
    for name, m in sides.items():
        steps[name], loss_fn = train_step(m, batch, device, dtype)
        with torch.no_grad():
            losses[name] = loss_fn().item()
    loss_diff = {n: abs(v - losses["hf"]) for n, v in losses.items()}

    timings = time_alternating(steps, device=device, warmup=1, repeats=repeats)
    # a step returns one gradient per trainable parameter (fp32, like the weights)
    memory = {
        n: checked_peak_memory(fn, device, _gradient_bytes(sides[n]), f"training step of {n}")
        for n, fn in steps.items()
    }
    peak = measured_peak_flops(device, dtype, n=1024 if quick else None)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peaks = {"measured": peak["tflops"], "vendor": vendor_peak_tflops(gpu, dtype)}
    rows = _summarise(timings, tokens, flops.training, peaks)
    for row in rows:
        row["peak_bytes"] = memory[row["name"]]["peak_bytes"]
        row["gradient_bytes"] = memory[row["name"]]["gradient_bytes"]
        row["loss"] = losses[row["name"]]
        row["loss_diff_vs_hf"] = loss_diff[row["name"]]
    result = {
        "config": {
            **shape,
            "dtype": str(dtype).replace("torch.", ""),
            "precision": "autocast, fp32 weights" if dtype in HALF else "fp32",
            "optimizer": "torch.optim.AdamW(lr=1e-4), defaults",
            "dropout_rate": 0.0,
            "hf_attn_implementation": hf.config._attn_implementation,
            "tokens_per_step": tokens,
            "memory_method": memory["hf"]["method"],
        },
        "flops": flops.to_dict(),
        "peak": {**peak, "vendor_tflops": peaks["vendor"], "gpu_name": gpu},
        "rows": rows,
        "skipped": skipped,
    }
    del sides, steps
    if ladder:
        # the ladder's second row swaps naive attention for the fastest fused/tiled backend
        fastest = max(
            (r for r in rows if r["name"].startswith("t5edu[") and r["name"] != "t5edu[naive]"),
            key=lambda r: r["tokens_per_s"],
            default=None,
        )
        best = fastest["name"][len("t5edu[") : -1] if fastest else "naive"
        result["ladder"] = speed_ladder(
            shape, device, dtype, best, quick, repeats, compile, peaks, flops.training
        )
    return result


def speed_ladder(shape, device, dtype, backend, quick, repeats, compile, peaks, flops) -> dict:
    """One change per row, each row keeping the changes above it; all rows timed alternating.

    Rows: naive eager fp32 -> `backend` attention -> bf16 autocast (CUDA only) ->
    torch.compile -> FastRMSNorm (the hand-written backward). HF's model (default attention, in
    `dtype`) is timed in the same rounds as `reference`; every row has `speed_vs_hf`.
    """
    if compile is None:
        compile = not quick  # compiling a T5 training step takes minutes on a small CPU
    config, base, hf = build_pair(shape["preset"], device)
    b, s, t = shape["batch"], shape["src_len"], shape["tgt_len"]
    batch = make_batch(config.vocab_size, b, s, t, device)
    half = torch.bfloat16 if dtype == torch.float32 else dtype
    plan = [
        ("naive eager, fp32", {"attention_backend": "naive"}, torch.float32, False),
        (f"+ {backend} attention", {"attention_backend": backend}, torch.float32, False),
    ]
    skipped = {}
    if device.type == "cuda":
        plan.append((f"+ {str(half)[6:]} autocast", {"attention_backend": backend}, half, False))
    else:
        skipped["+ bf16 autocast"] = "CUDA only (this CPU has no fast bf16 matmuls)"
    cur = plan[-1]
    if compile:
        plan.append(("+ torch.compile", cur[1], cur[2], True))
        plan.append(("+ FastRMSNorm", {**cur[1], "norm_type": "fast_rmsnorm"}, cur[2], True))
    else:
        reason = (
            "skipped in --quick (compiling takes minutes on a small CPU)"
            if quick
            else "switched off (--no-compile)"
        )
        skipped["+ torch.compile"] = reason
        plan.append(("+ FastRMSNorm", {**cur[1], "norm_type": "fast_rmsnorm"}, cur[2], False))
    # HF's model in the requested dtype runs in the same rounds, so every row also has a paired
    # ratio to what a reader would otherwise use.
    steps, compile_s = {HF_REFERENCE: train_step(hf, batch, device, dtype)[0]}, {}
    for label, changes, dt, use_compile in plan:
        m = clone_with(base, device, **changes)
        if use_compile:
            m = torch.compile(m)
        step, _ = train_step(m, batch, device, dt)
        if use_compile:
            sync(device)
            t0 = time.perf_counter()
            step()  # compiles forward and backward
            sync(device)
            compile_s[label] = time.perf_counter() - t0
        steps[label] = step
    del base, hf
    timings = time_alternating(steps, device=device, warmup=1, repeats=repeats)
    rows = _summarise(timings, b * (s + t), flops, peaks, base="naive eager, fp32")
    for row in rows:
        row["compile_s"] = compile_s.get(row["name"])
        row["speed_vs_hf"] = paired_ratio(timings[HF_REFERENCE], timings[row["name"]])
    reference = rows.pop(0)
    return {"rows": rows, "reference": reference, "skipped": skipped, "backend": backend}
