"""`python -m t5edu.bench {model,generate,attention,norm,bias-table,all}`: run benchmarks,
print tables, write JSON with the machine record (chapter 12)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

from t5edu.bench import attention, bias_table, generate, model, norm
from t5edu.bench.machine import load_average, machine_record, machine_slug
from t5edu.bench.report import TABLES

BENCHES = {"model": model.run, "generate": generate.run, "attention": attention.run,
           "norm": norm.run, "bias-table": bias_table.run}  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m t5edu.bench",
        description="Benchmarks of t5edu against HF Transformers and the hardware peak. Every "
        "comparison runs its sides in one process, alternating, after warm-up; figures are "
        "medians with their spread. Speed is reported, never asserted.",
    )
    p.add_argument("bench", choices=[*BENCHES, "all"], help="which benchmark to run")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when available, else cpu")  # fmt: skip
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="bf16/fp16: autocast for training, a cast for inference")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves it runs (CI)")
    p.add_argument("--out", default=None,
                   help="write the results as JSON to this file; a folder (existing, or ending "
                   "in '/') gets a file named after the machine and dtype")  # fmt: skip
    p.add_argument("--preset", default=None,
                   help="model/generate: a T5Config preset (t5-small; --quick: tiny)")  # fmt: skip
    p.add_argument("--batch", type=int, default=None, help="model/generate: batch size")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3 quick, 5)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    p.add_argument("--backends", default=None,
                   help="model/generate: comma-separated t5edu attention backends to "
                   "time (default: all); the others are recorded as skipped")  # fmt: skip
    p.add_argument("--lengths", default=None,
                   help="attention, bias-table: comma-separated sequence lengths")  # fmt: skip
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be >= 1; got {args.repeats}")
    for name in ("threads", "batch"):
        val = getattr(args, name)
        if val is not None and val < 1:
            p.error(f"--{name} must be >= 1; got {val}")
    if args.backends is not None:
        from t5edu.backends import BACKENDS

        args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in args.backends if b not in BACKENDS]
        if unknown or not args.backends:
            p.error(f"--backends: unknown {unknown}; choose from {sorted(BACKENDS)}")
    if args.lengths is not None:
        try:
            args.lengths = [int(n) for n in args.lengths.split(",")]
        except ValueError:
            args.lengths = []
        if not args.lengths or min(args.lengths) < 1:
            p.error(f"--lengths must be comma-separated positive ints; got {args.lengths!r}")
    if args.out is not None:  # before the benchmarks run, not after them
        from t5edu.train.run_dir import check_writable

        is_dir = os.path.isdir(args.out) or args.out.endswith(("/", os.sep))
        try:
            check_writable(args.out, "--out", is_dir=is_dir)
        except ValueError as err:
            p.error(str(err))
    if args.preset is not None:
        from t5edu import T5Config

        try:
            T5Config.get_config(args.preset)
        except ValueError as err:
            p.error(f"--preset: {err}")
    return args


def write_json(path: str, data: dict) -> None:
    """Write atomically (temp file in the same folder, then rename): a crash never leaves half
    a result file in place of the last good one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a result file is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    names = list(BENCHES) if args.bench == "all" else [args.bench]
    record = {
        "schema": "t5edu.bench/1",
        "command": "python -m t5edu.bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {
            "bench": args.bench,
            "device": args.device,
            "dtype": args.dtype,
            "quick": args.quick,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "backends": args.backends,
            "lengths": args.lengths,
        },  # fmt: skip
        "machine": machine_record(device),
        "results": {},
        "seconds": {},
    }
    for name in names:
        kwargs = {"device": device, "dtype": dtype, "quick": args.quick, "repeats": args.repeats}
        if name in ("model", "norm"):
            kwargs["compile"] = False if args.no_compile else None if name == "model" else True
        if name in ("model", "generate"):
            kwargs.update(preset=args.preset, batch_size=args.batch, backends=args.backends)
        if name in ("attention", "bias-table") and args.lengths:
            kwargs["lengths"] = args.lengths
        t0 = time.perf_counter()
        res = BENCHES[name](**kwargs)
        record["seconds"][name] = round(time.perf_counter() - t0, 1)
        record["results"][name] = res
        print(TABLES[name](res), end="\n\n", flush=True)
    record["load_average_after"] = load_average()
    if args.out:
        path = args.out
        if os.path.isdir(path) or path.endswith(("/", os.sep)):
            name = f"{machine_slug(record['machine'])}-{args.dtype}"
            name += "".join(f"-{x}" for x in (args.preset, args.bench != "all" and args.bench,
                                                args.quick and "quick") if x)  # fmt: skip
            path = os.path.join(path, name + ".json")
        write_json(path, record)
        print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
