"""Training metrics as JSON Lines: one JSON object per line, appended as training goes.

A crash loses at most the line being written, any tool can read the file (`pandas.read_json(path,
lines=True)`, `jq`), and chapters plot straight from it with `read_metrics`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsLogger:
    """Append records (`dict`s of numbers and strings) to `path`, one JSON object per line.

    With `resume_step`, records logged after that step by an interrupted run are dropped first,
    so the file describes exactly one history even after a resume.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """All records in `path` (only those whose "kind" is `kind`, when given)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
