"""Generation benchmark: greedy and beam search, cached and uncached, t5edu vs HF `generate`.

B batch, S source length, N new tokens.

Both sides decode the same padded-free batch with identical weights; the tokens are compared
(they must be equal) and new tokens/s = B * generated steps / time, timed alternating.
Uncached decoding recomputes the whole prefix (and the cross-attention keys) at every step,
so it runs with fewer new tokens to keep the benchmark short; its config says how many.
"""

from __future__ import annotations

import torch

from t5edu.bench.attention import probe
from t5edu.bench.model import HALF, build_pair, clone_with, make_batch
from t5edu.bench.timing import paired_ratio, time_alternating


def default_shape(device: torch.device, quick: bool) -> dict:
    if quick:
        return {"preset": "tiny", "batch": 2, "src_len": 32, "max_new_tokens": 8,
                "uncached_new_tokens": 8, "num_beams": 4}  # fmt: skip
    return {"preset": "t5-small", "batch": 8, "src_len": 512, "max_new_tokens": 114,
            "uncached_new_tokens": 16, "num_beams": 4}  # fmt: skip


def _generate(model, batch, *, num_beams, use_cache, new_tokens):
    kwargs = dict(max_new_tokens=new_tokens, num_beams=num_beams, do_sample=False,
                  use_cache=use_cache, length_penalty=1.0, early_stopping=False)  # fmt: skip

    @torch.inference_mode()
    def fn():
        return model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)

    return fn


def run(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    quick: bool = False,
    repeats: int | None = None,
    backends: list[str] | None = None,
    preset: str | None = None,
    batch_size: int | None = None,
) -> dict:
    """Greedy/beam x cached/uncached, t5edu vs HF; a JSON-ready dict.

    The greedy cached mode runs every usable t5edu backend; the other modes run the fastest one.
    In bf16/fp16 both models are cast to the dtype (inference needs no fp32 master weights).
    """
    from t5edu.backends import BACKENDS

    device = torch.device(device)
    shape = default_shape(device, quick)
    shape.update({k: v for k, v in (("preset", preset), ("batch", batch_size)) if v})
    repeats = repeats or (3 if quick else 5)
    config, base, hf = build_pair(shape["preset"], device)
    hf.eval()
    batch = make_batch(config.vocab_size, shape["batch"], shape["src_len"], 1, device, seed=1)
    skipped = {n: "not selected (--backends)" for n in BACKENDS if backends and n not in backends}
    usable = []
    for name in backends or list(BACKENDS):
        reason = "not registered"
        if name in BACKENDS:
            reason = probe(name, device, dtype, backward=False)  # inference: no backward needed
        if reason is None:
            usable.append(name)
        else:
            skipped[name] = reason
    models = {n: clone_with(base, device, attention_backend=n).eval() for n in usable}
    if dtype in HALF:
        hf = hf.to(dtype)
        models = {n: m.to(dtype) for n, m in models.items()}
    del base

    modes = [("greedy, cached", 1, True), ("greedy, uncached", 1, False),
             (f"beam {shape['num_beams']}, cached", shape["num_beams"], True),
             (f"beam {shape['num_beams']}, uncached", shape["num_beams"], False)]  # fmt: skip
    rows, best = [], None
    for mode, beams, cached in modes:
        n_new = shape["max_new_tokens"] if cached else shape["uncached_new_tokens"]
        opts = dict(num_beams=beams, use_cache=cached, new_tokens=n_new)
        fns = {"hf": _generate(hf, batch, **opts)}
        names = usable if best is None else [best]
        for n in names:
            fns[f"t5edu[{n}]"] = _generate(models[n], batch, **opts)
        outs = {k: f() for k, f in fns.items()}  # the outputs compared (also a warm-up)
        timings = time_alternating(fns, device=device, warmup=0, repeats=repeats)
        for name, t in timings.items():
            out = outs[name]
            steps = out.shape[1] - 1  # the first column is decoder_start_token_id
            same = None
            if name != "hf":
                same = bool(out.shape == outs["hf"].shape and torch.equal(out, outs["hf"]))
            rows.append({
                "mode": mode, "name": name, "new_tokens": n_new, "steps": steps,
                "time": t.to_dict(), "tokens_per_s": shape["batch"] * steps / t.median_s,
                "speed_vs_hf": paired_ratio(timings["hf"], t), "equal_to_hf": same,
            })  # fmt: skip
        if best is None:
            ours = [r for r in rows if r["name"] != "hf"]
            if ours:
                best = max(ours, key=lambda r: r["tokens_per_s"])["name"][len("t5edu[") : -1]
    return {
        "config": {
            **shape,
            "dtype": str(dtype).replace("torch.", ""),
            "hf_attn_implementation": hf.config._attn_implementation,
            "length_penalty": 1.0,
            "early_stopping": False,
        },  # fmt: skip
        "rows": rows,
        "skipped": skipped,
        "backend_for_other_modes": best,
    }
