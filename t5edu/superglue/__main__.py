"""Command line: `python -m t5edu.superglue {evaluate,format} ...` (chapter 14)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from t5edu.superglue.evaluate import evaluate, results_table
from t5edu.superglue.loaders import SPLIT_FILES, load_examples
from t5edu.superglue.metrics import superglue_score
from t5edu.superglue.tasks import TASKS, resolve_tasks


def load_model(path, backend: str = "t5edu"):
    """A checkpoint directory (`config.json` + weights) as a model with `generate`."""
    if backend == "t5edu":
        import t5edu

        cls = getattr(t5edu, "T5ForConditionalGeneration", None)
        if cls is None:
            raise ImportError(
                "t5edu.T5ForConditionalGeneration is not available in this install; "
                "pass --model-backend hf to load the checkpoint with transformers"
            )
        return cls.from_pretrained(path)
    if backend == "hf":
        from transformers import T5ForConditionalGeneration

        return T5ForConditionalGeneration.from_pretrained(path)
    raise ValueError(f"--model-backend must be 't5edu' or 'hf'; got {backend!r}")


def load_tokenizer(path):
    """A T5 SentencePiece model (`spiece.model`, or a folder holding it) as `t5edu`'s tokenizer.

    Raises:
        FileNotFoundError: naming the path when there is no such file.
    """
    from t5edu.tokenizer import T5Tokenizer

    path = Path(path)
    if not (path.is_file() or (path / "spiece.model").is_file()):
        raise FileNotFoundError(f"tokenizer file not found: {path} (pass --tokenizer PATH)")
    return T5Tokenizer.load(path)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m t5edu.superglue", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    tasks_help = f"task name(s), repeatable or comma-separated, or 'all': {', '.join(TASKS)}"
    ev = sub.add_parser("evaluate", help="score a checkpoint on SuperGLUE tasks, print a table")
    ev.add_argument("--model", required=True, help="checkpoint directory (save_pretrained format)")
    ev.add_argument("--task", action="append", required=True, help=tasks_help)
    ev.add_argument("--data", help="folder of the official JSONL release (BoolQ/, CB/, ...)")
    ev.add_argument("--source", choices=("local", "hf"), default="local")
    ev.add_argument("--split", default="val", choices=sorted(SPLIT_FILES))
    ev.add_argument("--tokenizer", help="SentencePiece model; default MODEL/spiece.model")
    ev.add_argument("--model-backend", choices=("t5edu", "hf"), default="t5edu")
    ev.add_argument("--limit", type=_positive_int, help="first N rows of each task")
    ev.add_argument("--batch-size", type=_positive_int, default=16)
    ev.add_argument("--max-input-length", type=_positive_int, default=512)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--output", help="also write the results as JSON here")
    fm = sub.add_parser("format", help="print formatted (input, target) examples")
    fm.add_argument("--task", action="append", required=True, help=tasks_help)
    fm.add_argument("--data", help="folder of the official JSONL release")
    fm.add_argument("--source", choices=("local", "hf"), default="local")
    fm.add_argument("--split", default="val", choices=sorted(SPLIT_FILES))
    fm.add_argument("--limit", type=_positive_int, default=3, help="first N rows of each task")
    fm.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        tasks = resolve_tasks(",".join(args.task))
    except ValueError as e:  # a usage error: one line and exit 2, not a traceback
        parser.error(f"--task: {e}")
    if args.source == "local" and not args.data:
        parser.error("--data DIR is required with --source local (or use --source hf)")
    if args.command == "evaluate" and not Path(args.model).is_dir():
        parser.error(f"--model: no checkpoint directory {args.model!r} (save_pretrained format)")
    if args.command == "evaluate" and args.output:  # before the evaluation, not after it
        from t5edu.train.run_dir import check_writable

        try:
            check_writable(args.output, "--output", is_dir=False)
        except ValueError as e:
            parser.error(str(e))
    try:
        return _run(args, tasks)
    except (FileNotFoundError, ValueError) as e:  # bad paths or data: one line, exit 2
        parser.error(str(e).replace("source='hf'", "--source hf"))


def _run(args, tasks) -> int:
    if args.command == "format":
        for name in tasks:
            for ex in load_examples(
                name, args.data, args.split, source=args.source, limit=args.limit
            ):
                if args.json:
                    print(json.dumps({"task": name, "inputs": ex.inputs, "targets": ex.targets}))
                else:
                    print(f"[{name}] {ex.inputs}\n  -> {ex.targets}")
        return 0
    model = load_model(args.model, args.model_backend).to(args.device)
    tokenizer = load_tokenizer(args.tokenizer or Path(args.model) / "spiece.model")
    results = evaluate(
        model, tokenizer, tasks, args.data, args.split, limit=args.limit, source=args.source,
        batch_size=args.batch_size, max_input_length=args.max_input_length, progress=True,
    )  # fmt: skip
    print(results_table(results))
    if args.output:
        scores = {n: r.metrics for n, r in results.items()}
        main_tasks = [n for n in scores if not TASKS[n].diagnostic]
        payload = {
            "tasks": {
                n: {**r.metrics, "score": r.score, "n": r.num_examples} for n, r in results.items()
            },
            "superglue_score": superglue_score(scores, require_all=False) if main_tasks else None,
        }
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
