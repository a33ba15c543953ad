"""`python -m t5edu.train`: train a T5 from scratch on the standard-library corpus.

With no arguments: the `tiny` preset on the embedded corpus (no download), on the GPU when there
is one (bf16, or fp16 on a T4) and on the CPU otherwise: 6 min 54 s on two CPU cores, measured.
It shows a progress bar, writes metrics.jsonl and checkpoints under --out-dir, and at the end
checks that `transformers` loads the final checkpoint. The same command runs data-parallel
under torchrun:

    torchrun --nproc_per_node 2 -m t5edu.train --strategy ddp    # or fsdp

Chapter 11 explains every option; chapter 13 the distributed ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import sys
import time
from pathlib import Path

import torch

from t5edu.config import LM_HEAD_INITS
from t5edu.data import DEFAULT_RATES, collate
from t5edu.data.downstream import DEFAULT_DOWNSTREAM_TASKS
from t5edu.device import check_supported, check_training_fits, get_device, training_bytes
from t5edu.train import cli_args
from t5edu.train.checkpoint import checkpoint_dirs
from t5edu.train.cli_args import HelpFormatter, Parser, at_least
from t5edu.train.distributed import STRATEGIES, barrier, cleanup, init_distributed
from t5edu.train.optim import OPTIMIZERS
from t5edu.train.run_dir import (
    RunDirBusy,
    RunExists,
    check_fresh_run,
    check_writable,
    run_dir_lock,
)
from t5edu.train.schedules import SCHEDULES
from t5edu.train.trainer import (
    PRECISIONS,
    ConfigError,
    NonFiniteError,
    TrainConfig,
    Trainer,
    resolve_precision,
)

# Attention backends with no CPU training path, refused before any work rather than at step 1.
CUDA_ONLY_BACKENDS = {
    "triton": "the Triton kernels need a CUDA device",
    "flex": "FlexAttention trains only on CUDA (its CPU reference has no backward)",
}

DEFAULTS = TrainConfig(steps=1200, batch_size=16, warmup_steps=50, eval_every=200, log_every=10)


DOWNSTREAM_RATE = 0.1  # beside DEFAULT_RATES' 1.0 in all: about 1 example in 13 per task


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = Parser(
        prog="python -m t5edu.train",
        description="Train a T5 from scratch on text from the Python standard library "
        "(span corruption + summarize + name tasks). Defaults: the 'tiny' preset, about 7 "
        "minutes on 2 CPU cores, or on a GPU (bf16; fp16 on a T4).",
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--preset", default="tiny", help="T5Config.get_config preset name")
    g.add_argument(
        "--data",
        choices=("stdlib", "toy"),
        default="stdlib",
        help="stdlib: the book's corpus; toy: reverse random ids (smoke test)",
    )
    g.add_argument("--vocab-size", type=at_least(8), default=4096, help="SentencePiece vocabulary")
    g.add_argument(
        "--inputs-length", type=at_least(1), default=128, help="encoder tokens per example"
    )
    g.add_argument(
        "--targets-length", type=at_least(1), default=32, help="decoder tokens per example"
    )
    g.add_argument(
        "--val-examples", type=at_least(1), default=64, help="validation examples per task"
    )
    g.add_argument(
        "--gen-examples",
        type=at_least(0),
        default=32,
        help="examples per task scored by exact match / ROUGE-L (0 = none)",
    )
    g.add_argument(
        "--max-new-tokens", type=int, default=d.max_new_tokens, help="generated tokens per sample"
    )
    g.add_argument(
        "--rates",
        type=cli_args.rates,
        default=None,
        help="task mixture as task=rate,... (e.g. span_corruption=1 to pre-train only); "
        f"default {','.join(f'{k}={v}' for k, v in DEFAULT_RATES.items())}",
    )
    g.add_argument(
        "--downstream",
        type=cli_args.downstream,
        default=list(DEFAULT_DOWNSTREAM_TASKS),
        help="downstream tasks (t5edu.data.downstream) added to the mixture at rate "
        f"{DOWNSTREAM_RATE} each and scored against their baselines, comma-separated; 'none' for "
        f"none (default {','.join(DEFAULT_DOWNSTREAM_TASKS)})",
    )
    g.add_argument(
        "--lm-head-init",
        choices=LM_HEAD_INITS,
        default="fan_in",
        help="untied head's init std: fan_in = d_model**-0.5 (Mesh TF; first loss near ln V), "
        "hf = 1 (HF and nanoT5; first loss of tens of nats)",
    )
    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    g.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="examples per optimizer step, over all processes",
    )
    g.add_argument(
        "--micro-batch-size",
        type=int,
        default=0,
        help="examples per forward per process (gradient accumulation when smaller "
        "than batch-size / processes); 0 = no accumulation",
    )
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d.optimizer,
        help="adamw_scale: AdamW with per-matrix RMS-scaled lr (nanoT5); adafactor: T5's own",
    )
    g.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default: 2e-2 for adamw_scale, 1e-2 for "
        "adafactor, 1e-3 for adamw)",
    )
    g.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help="decoupled, on matrices only"
    )
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="learning rate shape")
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help=f"linear warm-up steps (default: {d.warmup_steps}, or steps // 10 for short runs)",
    )
    g.add_argument(
        "--min-lr-ratio", type=float, default=d.min_lr_ratio, help="cosine floor / peak lr"
    )
    g.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0 disables")
    g = p.add_argument_group("systems")
    g.add_argument(
        "--device",
        type=cli_args.device,
        default="auto",
        help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="auto = bf16 on a GPU with bf16 tensor cores, fp16 on older ones (T4), else fp32",
    )
    g.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each block in backward (less memory, about a third more compute)",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--attention-backend",
        default="sdpa",
        help="a name in t5edu.BACKENDS (sdpa: PyTorch's fused kernel)",
    )
    g.add_argument(
        "--strategy", choices=STRATEGIES, default="none", help="ddp or fsdp under torchrun"
    )
    g.add_argument(
        "--threads", type=at_least(0), default=0, help="CPU threads (0 = torch's default)"
    )
    g.add_argument("--seed", type=int, default=d.seed, help="weights, data order and dropout")
    g = p.add_argument_group("output")
    g.add_argument("--out-dir", default="runs/t5-tiny", help="checkpoints/ and metrics.jsonl")
    g.add_argument(
        "--log-every", type=int, default=d.log_every, help="steps between metrics.jsonl lines"
    )
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="0 = never")
    g.add_argument("--save-every", type=int, default=d.save_every, help="0 = at the end only")
    g.add_argument(
        "--keep-checkpoints", type=int, default=d.keep_checkpoints, help="newest checkpoints kept"
    )
    g.add_argument(
        "--resume", default=None, help="a checkpoint directory, or 'latest' for --out-dir's newest"
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run already in --out-dir (checkpoints/, metrics.jsonl) and start anew",
    )
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


DEFAULT_LR = {"adamw_scale": 2e-2, "adafactor": 1e-2, "adamw": 1e-3}


def build_data(args):
    """Train stream, validation and generation sets, decode, vocabulary size, lengths."""
    from types import SimpleNamespace

    from t5edu.data import Mixture, build_default
    from t5edu.data.downstream import baseline_predictions, build_downstream_tasks
    from t5edu.train.evaluation import exact_match

    if args.data == "toy":
        from t5edu.train.toy import decode_ids, reverse_task

        val = reverse_task(args.val_examples, 64, seed=args.seed + 1)
        gen = {"reverse": val[: args.gen_examples]} if args.gen_examples else None
        train = reverse_task(4096, 64, seed=args.seed)
        return SimpleNamespace(
            train=train,
            val={"reverse": val},
            gen=gen,
            decode=decode_ids,
            baselines={},
            vocab=64,
            tokenizer=None,
            inputs_length=None,
            targets_length=None,
        )
    data = build_default(
        vocab_size=args.vocab_size,
        inputs_length=args.inputs_length,
        targets_length=args.targets_length,
        seed=args.seed,
    )
    down = {"train": {}, "validation": {}}
    for split in down if args.downstream else ():
        down[split] = build_downstream_tasks(
            data.corpus,
            data.tokenizer,
            split,
            tasks=args.downstream,
            inputs_length=data.inputs_length,
            targets_length=data.targets_length,
        )
    rates = args.rates or {**DEFAULT_RATES, **dict.fromkeys(args.downstream, DOWNSTREAM_RATE)}
    missing = sorted(set(rates) - {t.name for t in data.train.tasks} - set(down["train"]))
    if missing:
        raise ValueError(f"--rates names tasks {missing} that are not built (see --downstream)")
    train = Mixture([*data.train.tasks, *down["train"].values()], rates, seed=args.seed)
    validation = {**data.validation, **down["validation"]}

    def first(task, n):
        return [task.example(i) for i in range(min(n, len(task)))]

    val = {name: first(task, args.val_examples) for name, task in validation.items()}
    gen, baselines = None, {}
    if args.gen_examples:
        scored = ("summarize", "name", *args.downstream)
        gen = {name: first(validation[name], args.gen_examples) for name in scored}
        train_tasks = {t.name: t for t in train.tasks}
        for name, examples in gen.items():
            targets = [ex.target_text for ex in train_tasks[name].examples]
            refs = [ex.target_text for ex in examples]
            top = baseline_predictions("most_frequent", targets, refs)
            baselines[name] = {"most_frequent": exact_match(top, refs)}
    return SimpleNamespace(
        train=train,
        baselines=baselines,
        val=val,
        gen=gen,
        decode=functools.partial(data.tokenizer.decode, skip_special_tokens=True),
        vocab=len(data.tokenizer),
        tokenizer=data.tokenizer,
        inputs_length=data.inputs_length,
        targets_length=data.targets_length,
    )


def check_transformers_loads(path: Path, model_class) -> str:
    """Load the checkpoint with HF transformers and with `model_class`; compare their logits.

    Works the same after an FSDP run (no forward of the sharded model is needed).
    """
    try:
        import transformers
    except ImportError:
        return "transformers is not installed: skipped the HF load check"
    ours = model_class.from_pretrained(path).eval()
    if not getattr(ours.config, "is_hf_compatible", True):
        return "this variant has no HF counterpart: skipped the HF load check"
    transformers.logging.set_verbosity_error()  # no load-report bars or tie notices
    transformers.logging.disable_progress_bar()
    hf = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
    ids = torch.arange(2, 18).view(2, 8) % ours.config.vocab_size
    with torch.no_grad():
        diff = ours(input_ids=ids, labels=ids).logits - hf(input_ids=ids, labels=ids).logits
    if not diff.isfinite().all():  # NaN logits must never read as a successful check
        raise RuntimeError(f"{path}: the logits are not finite")
    return (
        "transformers.T5ForConditionalGeneration.from_pretrained loads it "
        f"(max |logit diff| {diff.abs().max().item():.1e})"
    )


def train_config(args) -> TrainConfig:
    """The `TrainConfig` of the parsed arguments, validated (`ConfigError` names the field)."""
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        optimizer=args.optimizer,
        lr=args.lr if args.lr is not None else DEFAULT_LR[args.optimizer],
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_steps=(
            args.warmup_steps
            if args.warmup_steps is not None
            else min(DEFAULTS.warmup_steps, max(args.steps // 10, 0))
        ),
        min_lr_ratio=args.min_lr_ratio,
        grad_clip=args.grad_clip,
        precision=args.precision,
        activation_checkpointing=args.activation_checkpointing,
        compile=args.compile,
        strategy=args.strategy,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints,
        out_dir=args.out_dir,
        max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress,
    )
    cfg.validate()  # the world-size part is checked again by the Trainer
    return cfg


def build_trainer(args, info, cfg: TrainConfig | None = None) -> tuple[Trainer, object]:
    """Data, model and trainer from the parsed arguments (ValueError for bad values);
    `cfg`: `train_config(args)`, when the caller has it already."""
    from t5edu.config import T5Config
    from t5edu.t5_model import T5ForConditionalGeneration
    from t5edu.utils import seed_everything

    try:  # before the data is built: a typo should not cost the tokenizer's training time
        T5Config.get_config(args.preset)
    except ValueError as e:
        raise ValueError(f"--preset: {e}") from None
    data = build_data(args)
    seed_everything(args.seed)  # the same initial weights on every process
    overrides = {
        "vocab_size": data.vocab,
        "attention_backend": args.attention_backend,
        "lm_head_init": args.lm_head_init,
    }
    model = T5ForConditionalGeneration(T5Config.get_config(args.preset, **overrides))
    lengths = {"max_input_length": data.inputs_length, "max_target_length": data.targets_length}
    cfg = dataclasses.replace(cfg or train_config(args), **lengths)
    need = training_bytes(
        model.config,
        model.num_parameters(),
        batch_size=cfg.micro_batch_size or max(cfg.batch_size // info.world_size, 1),
        src_len=data.inputs_length or 1,
        tgt_len=data.targets_length or 1,
        optimizer=cfg.optimizer,
        precision=resolve_precision(cfg.precision, info.device),
    )
    fix = "lower --batch-size (or set --micro-batch-size) or choose a smaller --preset"
    check_training_fits(need, info.device, fix)
    collate_fn = collate
    if args.compile:  # fixed shapes: one compiled graph instead of one per padded length
        collate_fn = functools.partial(
            collate,
            inputs_length=data.inputs_length or 16,
            targets_length=data.targets_length or 16,
        )
    trainer = Trainer(
        model,
        cfg,
        data.train,
        collate_fn,
        val_data=data.val,
        generation_data=data.gen,
        decode=data.decode,
        info=info,
    )
    return trainer, data


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 a usage error (nothing was done), 1 the run failed (NaN/inf)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Every option is checked before any work: a bad value must not surface after training.
    try:
        check_writable(args.out_dir, "--out-dir")
        cfg = train_config(args)
    except ConfigError as e:
        parser.error(f"--{e.field.replace('_', '-')}: {e.expected}; got {e.got!r}")
    except ValueError as e:
        parser.error(str(e))
    if args.resume is not None and args.overwrite:
        parser.error("--overwrite starts a new run; it cannot be combined with --resume")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume not in (None, "latest") and not Path(args.resume).exists():
        parser.error(f"--resume: no checkpoint found at {args.resume!r}")
    no_checkpoint = (
        f"--resume latest: no checkpoint under --out-dir {args.out_dir!r}; start a new run there "
        "(with --overwrite if it holds a run killed before its first save)"
    )
    if args.resume == "latest" and not (Path(args.out_dir) / "checkpoints").is_dir():
        parser.error(no_checkpoint)  # checked before the lock, which would create the folder
    if args.attention_backend in CUDA_ONLY_BACKENDS and not (
        args.device != "cpu" and torch.cuda.is_available()
    ):
        cuda = "available" if torch.cuda.is_available() else "absent"
        parser.error(
            f"--attention-backend {args.attention_backend}: "
            f"{CUDA_ONLY_BACKENDS[args.attention_backend]}; got --device {args.device} with "
            f"CUDA {cuda} (on the CPU use flash, the same tiled algorithm in PyTorch, or sdpa)"
        )
    try:  # before any work: what the device cannot run (MPS: no torch.distributed)
        check_supported(get_device(args.device), strategy=args.strategy)
    except ValueError as e:
        parser.error(str(e))
    info = init_distributed(None if args.device == "auto" else args.device)
    # Process 0 writes the run directory and holds its lock until it exits (or is killed).
    lock = run_dir_lock(args.out_dir) if info.is_main else contextlib.nullcontext()
    try:
        # the lock before the checkpoints: a busy run that has not saved yet is reported busy
        with lock:
            ckpts = Path(args.out_dir) / "checkpoints"
            saved = ckpts.is_dir() and bool(checkpoint_dirs(ckpts))
            if args.resume == "latest" and not saved:
                parser.error(no_checkpoint)
            if args.resume is None and (info.is_main or not args.overwrite):
                check_fresh_run(args.out_dir, args.overwrite, resumable=saved)
            barrier()  # every process has looked before process 0 writes anything
            return _run(parser, args, info, cfg)
    except (RunDirBusy, RunExists) as e:  # one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    finally:
        cleanup()


def _run(parser, args, info, cfg) -> int:
    t0 = time.perf_counter()
    try:
        trainer, data = build_trainer(args, info, cfg)
    except ValueError as e:  # a bad option value: say which, without a traceback
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    held = sum(_local_numel(p) for p in trainer.model.parameters())
    if info.is_main:
        cfg, n = trainer.config, sum(p.numel() for p in trainer.model.parameters())
        print(
            f"t5edu.train: preset {args.preset} ({n / 1e6:.2f}M parameters, "
            f"vocab {data.vocab}) | {args.data} data | {info.world_size} process(es) on "
            f"{info.device} | precision {trainer.precision} | {cfg.optimizer} lr {cfg.lr:g}, "
            f"{cfg.schedule} | batch {cfg.batch_size} = {trainer.micro_batch_size} x "
            f"{trainer.accumulation} accumulation x {info.world_size} | data ready in "
            f"{time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        if info.world_size > 1:  # DDP: a full replica; FSDP: about 1/world_size of it
            print(
                f"{cfg.strategy}: process 0 holds {held:,} of {n:,} parameter values "
                f"({held / n:.0%}), and as much gradient and optimizer state",
                flush=True,
            )
        if data.tokenizer is not None:  # spiece.model next to the checkpoints
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
            data.tokenizer.save_pretrained(args.out_dir)
    resume = args.resume
    if resume == "latest":
        resume = Path(args.out_dir) / "checkpoints"
    if resume is not None:
        try:  # a missing, damaged or mismatched checkpoint: one clear line, no traceback
            trainer.load(resume)
        except ValueError as e:
            parser.exit(2, f"{parser.prog}: error: --resume: {e}\n")
        if trainer.config.steps <= trainer.step:  # nothing to train: say so, do not "train 0"
            parser.exit(
                2,
                f"{parser.prog}: error: --steps {trainer.config.steps}: the checkpoint is already "
                f"at step {trainer.step}; pass a larger --steps to train on\n",
            )
    t1, first_step = time.perf_counter(), trainer.step
    try:
        history = trainer.train()
    except NonFiniteError as e:  # nothing non-finite was saved: point at what was
        latest = Path(args.out_dir) / "checkpoints" / "latest"
        kept = (
            f"the last good checkpoint is {latest.parent / latest.read_text().strip()}"
            if latest.is_file()
            else "no checkpoint was saved"
        )
        parser.exit(1, f"{parser.prog}: error: {e}; {kept}\n")
    if info.is_main:
        report(
            history,
            time.perf_counter() - t1,
            Path(args.out_dir),
            trainer,
            first_step,
            data.baselines,
        )
    return 0


def _local_numel(p: torch.Tensor) -> int:
    """Values of `p` stored by this process (an FSDP2 DTensor keeps only its shard)."""
    return p.to_local().numel() if hasattr(p, "to_local") else p.numel()


def report(history, wall, out_dir: Path, trainer, first_step=0, baselines=None) -> None:
    """Print the validation curve, the held-out scores beside their `baselines`
    (`{task: {baseline: exact match}}`), sample generations and the HF load check."""
    evals = [r for r in history if r["kind"] == "eval"]
    done = trainer.step - first_step  # this run's steps: a resumed run started at first_step
    trained = f"trained {done} steps"
    if first_step:
        trained += f" (steps {first_step + 1}-{trainer.step}, resumed)"
    if not evals:
        why = "(--eval-every 0)" if not trainer.config.eval_every else "in this run (resumed)"
        print(f"\n{trained} in {wall:.0f}s; no evaluation {why}")
    else:
        print(f"\n{trained} in {wall:.0f}s; validation loss by step:")
    for r in evals:
        extra = "  ".join(
            f"{k.split('/')[0]} EM {v:.3f}" for k, v in r.items() if k.endswith("/exact_match")
        )
        print(f"  step {r['step']:>6}  val_loss {r.get('val_loss', math.nan):.3f}  {extra}")
    scored = sorted({k.split("/")[0] for r in evals for k in r if k.endswith("/exact_match")})
    if scored:
        last = evals[-1]
        print(f"\nheld-out scores at step {last['step']} (greedy generation):")
        print(f"  {'task':<10} {'exact match':>11} {'ROUGE-L':>8}   baseline: most frequent target")
        for task in scored:
            base = (baselines or {}).get(task, {}).get("most_frequent")
            print(
                f"  {task:<10} {last[f'{task}/exact_match']:11.3f} {last[f'{task}/rougeL']:8.3f}"
                f"   {'-' if base is None else f'{base:.3f}'}"
            )
    if evals:
        for key, samples in evals[-1].items():
            if key.endswith("/samples"):
                print(f"\nsamples ({key.split('/')[0]}):")
                for s in samples:
                    print(f"  input:      {s['input'][:100]!r}")
                    print(f"  target:     {s['target']!r}")
                    print(f"  prediction: {s['prediction']!r}")
    ckpt = out_dir / "checkpoints"
    if (ckpt / "latest").is_file():
        path = ckpt / (ckpt / "latest").read_text().strip()
        print(f"\ncheckpoint: {path}")
        try:
            print(check_transformers_loads(path, trainer.model_class))
        except Exception as e:  # report, do not hide, a checkpoint HF cannot read
            print(f"transformers could NOT load {path}: {e}")
            raise
    print(f"metrics: {out_dir / 'metrics.jsonl'}")


if __name__ == "__main__":
    sys.exit(main())
