"""Training metrics as JSON Lines: one JSON object per line, appended as training goes.

A crash loses at most the line being written, any tool can read the file (`pandas.read_json(path,
lines=True)`, `jq`), and chapters plot straight from it with `read_metrics`. A last line torn by
a crash is dropped with a warning (by `read_metrics` and on resume); the resume-time rewrite goes
through a temporary file and `os.replace`, so a crash during it leaves the old file whole.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


class MetricsLogger:
    """Append records (`dict`s of numbers and strings) to `path`, one JSON object per line.

    With `resume_step`, records logged after that step by an interrupted run are dropped first,
    so the file describes exactly one history even after a resume.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Left by a rewrite that was killed; the trainer holds the run directory's lock here,
        # so no live writer owns one.
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            stale.unlink()
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        _write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """All records in `path` (only those whose "kind" is `kind`, when given).

    A torn last line (a crash mid-write) is dropped with a warning; a bad line anywhere else
    raises ValueError naming the file and line number.
    """
    lines = Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not JSON ({e})") from None
            warnings.warn(
                f"{path}: dropped a torn last line ({len(line)} characters; a crash while it "
                "was written)",
                stacklevel=2,
            )
    return [r for r in records if kind is None or r.get("kind") == kind]
