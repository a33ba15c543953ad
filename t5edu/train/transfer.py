"""Does span-corruption pre-training transfer? The T5 thesis as an experiment (chapter 14).

Raffel et al. (2020, section 3.1 and table 1) compare fine-tuning a pre-trained model with
training the same architecture from a random initialisation on each downstream task, same
budget: pre-training wins on every benchmark. `transfer_experiment` repeats that comparison at
the book's scale: the same fine-tuning run (data, steps, learning rate, schedule) from (a) the
pre-trained checkpoint and (b) a fresh model of the same configuration, once per seed. The seed
fixes the order of the fine-tuning data and, for (b), the initial weights, so the spread over
seeds says how much of the gap could be noise.

`python -m t5edu.train.transfer --out book/results/transfer-<machine>.json` runs it on the
book's downstream tasks with the shipped checkpoint and records every curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from t5edu.data import Mixture, collate
from t5edu.data.downstream import DEFAULT_DOWNSTREAM_TASKS, DOWNSTREAM_TASKS
from t5edu.train.cli_args import HelpFormatter, Parser, at_least, positive_float
from t5edu.train.distributed import DistInfo
from t5edu.train.schedules import make_schedule
from t5edu.train.trainer import ConfigError, TrainConfig, Trainer

INITS = ("pre-trained", "random")
# What `build_model` and `downstream_data` read from a `--pretrained` folder.
CHECKPOINT_FILES = ("config.json", "model.safetensors", "spiece.model")


@dataclass
class FinetuneSettings:
    """One fine-tuning run's budget, the same for both initialisations."""

    # Measured on the 2-core CPU (t5edu/data/downstream.py): at this budget the pre-trained
    # model passes the most-frequent baseline on `verb` and `params`, the fresh one does not.
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-2  # AdamWScale (pre-training used 2e-2)
    warmup_steps: int = 20
    eval_every: int = 50
    max_new_tokens: int = 24  # the longest parameter lists of the tasks fit
    attention_backend: str = "sdpa"
    extra: dict = field(default_factory=dict)  # further TrainConfig fields

    def train_config(self, seed: int) -> TrainConfig:
        """The `TrainConfig` of one run (fp32, no progress bar); not yet validated."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            eval_every=self.eval_every,
            max_new_tokens=self.max_new_tokens,
            seed=seed,
            precision="fp32",
            progress=False,
            **self.extra,
        )


def build_model(init: str, pretrained: str, seed: int, attention_backend: str = "sdpa"):
    """The model run `(init, seed)` starts from: the checkpoint `pretrained` (a folder in the HF
    layout), or a fresh model of its configuration (fan-in head init, see `T5Config`) seeded by
    `seed`. Raises ValueError for an unknown `init`."""
    from t5edu.t5_model import T5ForConditionalGeneration
    from t5edu.utils import seed_everything

    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {init!r}")
    model = T5ForConditionalGeneration.from_pretrained(
        pretrained, attention_backend=attention_backend
    )
    if init == "random":
        seed_everything(seed)
        model = T5ForConditionalGeneration(model.config.replace(lm_head_init="fan_in"))
    return model


def finetune_curve(
    model,
    train_tasks: Sequence,
    eval_sets: Mapping[str, Sequence],
    decode: Callable[[list[int]], str],
    settings: FinetuneSettings,
    seed: int,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Fine-tune `model` on an examples-proportional mixture of `train_tasks` (seeded by
    `seed`) and return the trainer's evaluation records: at step 0, every `eval_every` steps
    and at the end, each with `{task}/exact_match` and `{task}/rougeL` (percent-free, in
    [0, 1]) of greedy generations on `eval_sets[task]` and their validation loss."""
    cfg = settings.train_config(seed)
    trainer = Trainer(
        model,
        cfg,
        Mixture(train_tasks, rates=None, seed=seed),
        collate,
        val_data=dict(eval_sets),
        generation_data=dict(eval_sets),
        decode=decode,
        info=DistInfo(device=torch.device(device)),
    )
    return [_strip(r) for r in trainer.train() if r["kind"] == "eval"]


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("/samples")}


def transfer_experiment(
    pretrained: str,
    train_tasks: Sequence,
    eval_sets: Mapping[str, Sequence],
    decode: Callable[[list[int]], str],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    settings: FinetuneSettings | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = print,
) -> dict:
    """Fine-tune from each init in `INITS` with each seed; returns `{"runs": [...],
    "summary": summarize(runs)}` where a run is `{"init", "seed", "curve"}`.

    Raises:
        ValueError: for no seeds or repeated ones (the spread needs distinct runs).
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct ints, at least one; got {seeds}")
    settings = settings or FinetuneSettings()
    runs = []
    for seed in seeds:
        for init in INITS:
            model = build_model(init, pretrained, seed, settings.attention_backend)
            curve = finetune_curve(model, train_tasks, eval_sets, decode, settings, seed, device)
            runs.append({"init": init, "seed": seed, "curve": curve})
            if progress is not None:
                scores = ", ".join(f"{t} EM {curve[-1][f'{t}/exact_match']:.3f}" for t in eval_sets)
                progress(f"{init:>11} seed {seed}: {scores}")
    return {"runs": runs, "summary": summarize(runs, list(eval_sets))}


def summarize(runs: Sequence[dict], tasks: Sequence[str], metric: str = "exact_match") -> dict:
    """`{init: {task: {"mean", "std", "min", "max", "n"}}}` of the final `metric` over seeds
    (`std` is the sample standard deviation, 0 for one seed)."""
    out: dict = {}
    for init in INITS:
        finals = [r["curve"][-1] for r in runs if r["init"] == init]
        if not finals:
            continue
        out[init] = {}
        for task in tasks:
            xs = [f[f"{task}/{metric}"] for f in finals]
            mean = sum(xs) / len(xs)
            var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
            out[init][task] = {
                "mean": mean,
                "std": math.sqrt(var),
                "min": min(xs),
                "max": max(xs),
                "n": len(xs),
            }
    return out


def downstream_data(folder, tasks: Sequence[str], eval_examples: int = 64):
    """`(train_tasks, eval_sets, baselines, tokenizer)` for the book's downstream tasks, tokenized
    with the checkpoint `folder`'s own `spiece.model`: train tasks of the corpus's train split,
    the first `eval_examples` of each validation task, and per task the exact match of each
    model-free baseline (`t5edu.data.downstream.BASELINES`) on those same examples."""
    from t5edu.data import stdlib_corpus
    from t5edu.data.downstream import BASELINES, baseline_predictions, build_downstream_tasks
    from t5edu.tokenizer import T5Tokenizer
    from t5edu.train.evaluation import exact_match

    tokenizer = T5Tokenizer.load(folder)
    corpus = stdlib_corpus()
    train = build_downstream_tasks(corpus, tokenizer, "train", tasks=tasks)
    val = build_downstream_tasks(corpus, tokenizer, "validation", tasks=tasks)
    eval_sets, baselines = {}, {}
    for name, task in val.items():
        n = min(eval_examples, len(task))
        eval_sets[name] = [task.example(i) for i in range(n)]
        inputs = [x for x, _ in task.pairs[:n]]
        refs = [ex.target_text for ex in eval_sets[name]]
        train_targets = [t for _, t in train[name].pairs]
        baselines[name] = {
            b: exact_match(baseline_predictions(b, train_targets, inputs), refs) for b in BASELINES
        }
    return list(train.values()), eval_sets, baselines, tokenizer


def build_parser() -> Parser:
    """The command line of `python -m t5edu.train.transfer` (defaults: `FinetuneSettings`)."""
    d = FinetuneSettings()
    p = Parser(
        prog="python -m t5edu.train.transfer",
        description="Fine-tune the pre-trained checkpoint and a fresh model of its config on the "
        "downstream tasks, same budget, for each seed (the T5 thesis experiment, chapter 14).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--pretrained",
        default=None,
        help="checkpoint folder in the HF layout, with its spiece.model (default: the book's "
        "shipped t5-tiny-stdlib)",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=DOWNSTREAM_TASKS,
        default=list(DEFAULT_DOWNSTREAM_TASKS),
        help="downstream tasks to fine-tune on together and score",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=at_least(0),
        default=[0, 1, 2],
        help="one run per init and seed; distinct seeds give the spread",
    )
    p.add_argument("--steps", type=at_least(1), default=d.steps, help="optimizer steps per run")
    p.add_argument("--batch-size", type=at_least(1), default=d.batch_size, help="examples/step")
    p.add_argument(
        "--lr", type=positive_float, default=d.lr, help="peak learning rate (AdamWScale)"
    )
    p.add_argument(
        "--warmup-steps", type=at_least(0), default=d.warmup_steps, help="linear warm-up, < --steps"
    )
    p.add_argument(
        "--eval-every", type=at_least(0), default=d.eval_every, help="steps between evaluations"
    )
    p.add_argument(
        "--eval-examples", type=at_least(1), default=64, help="validation examples per task"
    )
    p.add_argument(
        "--threads", type=at_least(0), default=0, help="CPU threads (0 = torch's default)"
    )
    p.add_argument("--out", default=None, help="write the record here (JSON, atomically)")
    return p


def _check_args(p: Parser, args) -> FinetuneSettings:
    """The settings of valid arguments; any bad value is a one-line usage error, before work."""
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds: expected distinct seeds; got {args.seeds}")
    if len(set(args.tasks)) != len(args.tasks):
        p.error(f"--tasks: expected each task once; got {args.tasks}")
    if args.pretrained is not None:
        folder = Path(args.pretrained)
        missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
        if not folder.is_dir() or missing:
            p.error(
                f"--pretrained: expected a folder holding {list(CHECKPOINT_FILES)}; got "
                f"{args.pretrained!r}" + (f" (missing {missing})" if folder.is_dir() else "")
            )
    settings = FinetuneSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        eval_every=args.eval_every,
    )
    try:
        cfg = settings.train_config(seed=0)
        cfg.validate()
        make_schedule(cfg.schedule, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    except ConfigError as e:
        p.error(f"--{e.field.replace('_', '-')}: {e.expected}; got {e.got!r}")
    except ValueError as e:
        p.error(f"--warmup-steps {args.warmup_steps} with --steps {args.steps}: {e}")
    return settings


def main(argv=None) -> dict:
    """`python -m t5edu.train.transfer`: run `transfer_experiment` on the book's downstream
    tasks and write the record (settings, baselines, every curve, summary, machine) as JSON.
    Bad arguments exit with status 2 and one line naming the flag."""
    import functools
    import sys
    import time

    from t5edu.bench.__main__ import write_json
    from t5edu.bench.machine import machine_record
    from t5edu.train.shipped import book_model_dir

    p = build_parser()
    args = p.parse_args(argv)
    settings = _check_args(p, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.pretrained or book_model_dir()
    t0 = time.perf_counter()
    train, eval_sets, baselines, tok = downstream_data(folder, args.tasks, args.eval_examples)
    for name, scores in baselines.items():
        print(f"baseline {name:<10} " + "  ".join(f"{b} EM {v:.3f}" for b, v in scores.items()))
    decode = functools.partial(tok.decode, skip_special_tokens=True)
    result = transfer_experiment(
        str(folder), train, eval_sets, decode, seeds=args.seeds, settings=settings
    )
    for init, tasks in result["summary"].items():
        for name, s in tasks.items():
            print(
                f"{init:>11} {name:<10} EM {s['mean']:.3f} +- {s['std']:.3f} "
                f"(min {s['min']:.3f}, max {s['max']:.3f}, {s['n']} seeds)"
            )
    record = {
        "command": "python -m t5edu.train.transfer " + " ".join(argv or sys.argv[1:]),
        "pretrained": str(folder),
        "settings": {k: v for k, v in vars(settings).items() if k != "extra"},
        "tasks": args.tasks,
        "eval_examples": {k: len(v) for k, v in eval_sets.items()},
        "train_examples": {t.name: len(t) for t in train},
        "baselines": baselines,
        **result,
        "wall_s": time.perf_counter() - t0,
        "machine": machine_record("cpu"),
    }
    if args.out:
        write_json(args.out, record)
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
