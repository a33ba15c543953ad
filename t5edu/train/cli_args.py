"""Argument types and the parser class the training command lines share.

`python -m t5edu.train` and `python -m t5edu.train.transfer` both report a bad option as one
line that names the flag, the value received and what was expected (exit status 2), before
any work: a typo must not surface as a traceback, or after an hour of training.
"""

from __future__ import annotations

import argparse
import math

from t5edu.data import TASK_PREFIXES
from t5edu.data.tasks import DOWNSTREAM_PREFIXES
from t5edu.device import get_device


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: ...)" except where the help text already explains a None default."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit 2), without the long usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def at_least(low: int):
    """An argparse type: an integer >= `low` (argparse names the flag in its message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; got {text!r}")
    return value


def device(text: str) -> str:
    """`--device`: auto, cpu, cuda, cuda:N or mps, one that torch can see
    (`t5edu.device.get_device` decides and words the error)."""
    try:
        get_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("device: ")) from None
    return text


def downstream(text: str) -> list[str]:
    """An argparse type: distinct comma-separated names from `DOWNSTREAM_PREFIXES`, or 'none'."""
    if text.strip() == "none":
        return []
    names = [t.strip() for t in text.split(",")]
    if "none" in names:
        raise argparse.ArgumentTypeError(f"'none' stands alone, without task names; got {text!r}")
    unknown = [t for t in names if t not in DOWNSTREAM_PREFIXES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"expected names from {sorted(DOWNSTREAM_PREFIXES)} or 'none'; got {unknown}"
        )
    repeated = sorted({t for t in names if names.count(t) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"each task at most once; {repeated} repeated in {text!r}")
    return names


def rates(text: str) -> dict[str, float]:
    """An argparse type: `task=rate,...` with known task names, each once, finite rates >= 0,
    not all 0."""
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in {**TASK_PREFIXES, **DOWNSTREAM_PREFIXES}:
            raise argparse.ArgumentTypeError(
                "expected task=rate with task one of "
                f"{sorted(TASK_PREFIXES) + sorted(DOWNSTREAM_PREFIXES)}; got {item!r}"
            )
        if name in out:  # the second value would silently win
            raise argparse.ArgumentTypeError(f"{name}: given twice in {text!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a number; got {value!r}") from None
        if not (out[name] >= 0 and math.isfinite(out[name])):
            raise argparse.ArgumentTypeError(
                f"{name}: expected a finite rate >= 0; got {value.strip()!r}"
            )
    if not any(out.values()):
        raise argparse.ArgumentTypeError(f"expected at least one rate > 0; got {text!r}")
    return out
