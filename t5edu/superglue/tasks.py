"""The SuperGLUE task registry: names, official file layout, label words and headline metrics.

Chapter 14. Sources: the SuperGLUE paper (Wang et al., 2019, Table 1, for the metrics and the
official JSONL release layout) and the T5 codebase (`t5/data/glue_utils.py`) for the label words.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """What the package needs to know about one SuperGLUE task."""

    name: str  # canonical lower-case key, e.g. "boolq", "axb"
    dirname: str  # the official release's folder, e.g. "BoolQ", "AX-b"
    label_names: tuple[str, ...] | None  # target words by class index; None for free text
    metrics: tuple[str, ...]  # the metrics averaged into the task score, as the leaderboard
    max_new_tokens: int  # generation budget: the longest target in words, with room to spare
    diagnostic: bool = False  # AX-b / AX-g: test-only, scored apart, not in the average
    hf_config: str = ""  # the config name in HF `datasets`' super_glue


_NLI2 = ("entailment", "not_entailment")
_BOOL = ("False", "True")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("boolq", "BoolQ", _BOOL, ("accuracy",), 4, hf_config="boolq"),
        TaskSpec(
            "cb",
            "CB",
            ("entailment", "contradiction", "neutral"),
            ("f1_macro", "accuracy"),
            6,
            hf_config="cb",
        ),
        TaskSpec("copa", "COPA", ("choice1", "choice2"), ("accuracy",), 6, hf_config="copa"),
        TaskSpec("multirc", "MultiRC", _BOOL, ("f1a", "em"), 4, hf_config="multirc"),
        TaskSpec("record", "ReCoRD", None, ("f1", "em"), 24, hf_config="record"),
        TaskSpec("rte", "RTE", _NLI2, ("accuracy",), 8, hf_config="rte"),
        TaskSpec("wic", "WiC", _BOOL, ("accuracy",), 4, hf_config="wic"),
        # WSC is generated as the referent's text (T5's "wsc_simple"), then compared with span1.
        TaskSpec("wsc", "WSC", None, ("accuracy",), 16, hf_config="wsc.fixed"),
        TaskSpec("axb", "AX-b", _NLI2, ("mcc",), 8, diagnostic=True, hf_config="axb"),
        TaskSpec(
            "axg", "AX-g", _NLI2, ("gender_parity", "accuracy"), 8, diagnostic=True, hf_config="axg"
        ),
    )
}

MAIN_TASKS = tuple(name for name, t in TASKS.items() if not t.diagnostic)
DIAGNOSTIC_TASKS = tuple(name for name, t in TASKS.items() if t.diagnostic)


def get_task(name: str) -> TaskSpec:
    """The task called `name` ("boolq", "BoolQ", "AX-b", "ax_b", ... are all accepted).

    Raises:
        ValueError: naming `task` and listing the known names, if `name` is none of them.
    """
    key = str(name).lower().replace("-", "").replace("_", "").replace(".", "")
    if key == "wscfixed":
        key = "wsc"
    if key not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}; got {name!r}")
    return TASKS[key]


def resolve_tasks(names) -> list[str]:
    """Task keys for a name, a list of names, or "all" (the 8 tasks then the 2 diagnostics)."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out: list[str] = []
    for n in names:
        keys = list(TASKS) if n.strip().lower() == "all" else [get_task(n.strip()).name]
        out += [k for k in keys if k not in out]
    if not out:
        raise ValueError(f"tasks must name at least one task; got {names!r}")
    return out
