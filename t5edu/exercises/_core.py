"""The checker behind the book's coding exercises: run hidden cases, say what is wrong.

An `Exercise` holds seeded inputs (`cases`), a way to compute the expected output from t5edu's
tested modules or torch at check time (`expected`), and how to get the reader's output from
their answer (`run`: call the function, or take the value). `check` compares the two case by
case and prints one verdict per case.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

REGISTRY: dict[str, Exercise] = {}


def _call(answer, inputs: dict) -> Any:
    return answer(**inputs)


@dataclass(frozen=True)
class Exercise:
    """One checkable exercise.

    id: `"chNN.name"`. task: one line, what the answer must be (shown on failure).
    cases: () -> list of input dicts, built from fixed seeds (the same every call).
    expected: inputs -> the right output. run: (answer, inputs) -> the reader's output
    (default `answer(**inputs)`). solution: () -> an answer that passes (used by the tests).
    value: True when the answer is a value rather than a function. atol, rtol: a float output
    passes where `|got - want| <= atol + rtol * |want|`; integer and bool outputs must be equal.
    why_tol: why the tolerance is what it is, when not float32 round-off.
    """

    id: str
    task: str
    cases: Callable[[], list[dict]]
    expected: Callable[[dict], Any]
    solution: Callable[[], Any]
    run: Callable[[Any, dict], Any] = _call
    value: bool = False
    atol: float = 1e-5
    rtol: float = 0.0
    why_tol: str = ""

    @property
    def chapter(self) -> str:
        return self.id.split(".")[0]


def register(exercise: Exercise) -> Exercise:
    if exercise.id in REGISTRY:
        raise ValueError(f"exercise id {exercise.id!r} is registered twice")
    REGISTRY[exercise.id] = exercise
    return exercise


def get(exercise_id: str) -> Exercise:
    """The registered exercise; ValueError naming the known ids (and the nearest) otherwise."""
    if not isinstance(exercise_id, str) or exercise_id not in REGISTRY:
        known = sorted(REGISTRY)
        near = difflib.get_close_matches(str(exercise_id), known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"unknown exercise id {exercise_id!r}{hint}; known ids: {', '.join(known)}"
        )
    return REGISTRY[exercise_id]


def list_exercises(chapter: int | str | None = None) -> list[str]:
    """Sorted ids of the registered exercises, all of them or one chapter's.

    chapter: None, a number (7), or a prefix ("ch07", "07", "07_rope").

    Raises:
        ValueError: for a chapter with no exercises, naming the chapters that have some.
    """
    ids = sorted(REGISTRY)
    if chapter is None:
        return ids
    if isinstance(chapter, bool) or not isinstance(chapter, (int, str)):
        raise ValueError(f"chapter must be None, an int or a str like 'ch07'; got {chapter!r}")
    # 7, "7", "07", "ch7", "ch07", "07_rope", "7_rope": the number before any "_slug"
    found_number = re.fullmatch(r"(?:ch)?(\d+)(?:_\w*)?", str(chapter))
    key = f"ch{int(found_number[1]):02d}" if found_number else None
    found = [i for i in ids if key is not None and i.startswith(key + ".")]
    if not found:
        chapters = sorted({REGISTRY[i].chapter for i in ids})
        raise ValueError(
            f"no exercises for chapter {chapter!r}; chapters with exercises: {chapters}"
        )
    return found


def _clone(obj):
    """Inputs as the reader gets them: copies, so an in-place edit cannot change the expected."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _short(val, limit: int = 80) -> str:
    """A tensor by shape (and dtype unless float32), lists and tuples element by element, the
    rest by repr, cut at `limit` characters so a failure stays one readable line."""
    if isinstance(val, torch.Tensor):
        dtype = "" if val.dtype == torch.float32 else " " + str(val.dtype)[len("torch.") :]
        return f"tensor{tuple(val.shape)}{dtype}"
    if isinstance(val, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in val):
        inner = ", ".join(_short(v, limit) for v in val[:4]) + (", ..." if len(val) > 4 else "")
        text = f"[{inner}]" if isinstance(val, list) else f"({inner})"
    else:
        text = repr(val)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def describe(inputs: dict) -> str:
    """`q (2, 4, 5, 16), causal=True`: tensors by shape, the rest by value (long ones cut)."""
    parts = []
    for name, val in inputs.items():
        if isinstance(val, torch.Tensor):
            dtype = "" if val.dtype == torch.float32 else " " + str(val.dtype)[len("torch.") :]
            parts.append(f"{name} {tuple(val.shape)}{dtype}")
        else:
            parts.append(f"{name}={_short(val)}")
    return ", ".join(parts) if parts else "your value"


def _fmt(x) -> str:
    return f"{x:.6g}" if isinstance(x, float) else repr(x)


def _pre(name: str) -> str:
    return f"{name}: " if name else ""


def compare(want, got, atol: float, rtol: float, name: str = "") -> str | None:
    """None when `got` matches `want`, else one sentence saying what differs.

    Tensors: type, shape, then kind (integer/bool outputs must be integer/bool and equal; float
    outputs must be floating), then values (NaN is always wrong). Tuples and lists: length,
    then element by element. Python numbers: within the same tolerance; bools and ints exactly.
    """
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{_pre(name)}expected a tuple of {len(want)}, got {type(got).__name__}"
        if len(got) != len(want):
            return f"{_pre(name)}expected a tuple of {len(want)}, got {len(got)} items"
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            msg = compare(w, g, atol, rtol, f"{name or 'output'}[{i}]")
            if msg:
                return msg
        return None
    if isinstance(want, torch.Tensor):
        return _compare_tensor(want, got, atol, rtol, name)
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, np.generic):  # np.int64(3) is the number 3, np.float32 a float
        got = got.item()
    if isinstance(want, bool) or isinstance(want, int):
        if isinstance(got, float) and not isinstance(want, bool) and got == int(got):
            got = int(got)
        if type(got) is not type(want) or got != want:
            return f"{_pre(name)}expected {want!r}, got {_short(got)}"
        return None
    if isinstance(want, float):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            kind = type(got).__name__
            return f"{_pre(name)}expected a number near {_fmt(want)}, got {kind} {_short(got)}"
        diff = abs(got - want)
        tol = atol + rtol * abs(want)
        if not diff <= tol:  # catches NaN too
            return (
                f"{_pre(name)}expected {_fmt(want)}, got {_fmt(float(got))}: |diff| {diff:.3g} "
                f"exceeds the tolerance {tol:.3g}"
            )
        return None
    return None if got == want else f"{_pre(name)}expected {_short(want)}, got {_short(got)}"


def _compare_tensor(want: torch.Tensor, got, atol: float, rtol: float, name: str) -> str | None:
    if not isinstance(got, torch.Tensor):
        kind = type(got).__name__
        return f"{_pre(name)}expected a torch.Tensor of shape {tuple(want.shape)}, got {kind}"
    if got.shape != want.shape:
        hint = ""
        if sorted(got.shape) == sorted(want.shape):
            hint = " (the same sizes in another order: a transpose or a wrong view?)"
        return f"{_pre(name)}expected shape {tuple(want.shape)}, got {tuple(got.shape)}{hint}"
    w, g = want.detach().cpu(), got.detach().cpu()
    if not w.dtype.is_floating_point:
        if g.dtype.is_floating_point or g.dtype.is_complex:
            return f"{_pre(name)}expected an integer or bool tensor ({w.dtype}), got {g.dtype}"
        wrong = g.long() != w.long()
        if wrong.any():
            idx = tuple(torch.nonzero(wrong)[0].tolist())
            return (
                f"{_pre(name)}{int(wrong.sum())} of {w.numel()} entries differ (exact match "
                f"required); first at index {idx}: expected {w[idx].item()}, got {g[idx].item()}"
            )
        return None
    if not g.dtype.is_floating_point:
        return f"{_pre(name)}expected a floating-point tensor ({w.dtype}), got {g.dtype}"
    diff = (g.double() - w.double()).abs()
    tol = atol + rtol * w.double().abs()
    bad = ~(diff <= tol)  # NaN compares False, so it is bad
    if bad.any():
        if g.isnan().any():
            idx = tuple(torch.nonzero(g.isnan())[0].tolist())
            return (
                f"{_pre(name)}holds NaN (first at index {idx}); expected {w[idx].item():.6g} there"
            )
        excess = torch.where(bad, diff - tol, torch.zeros_like(diff))
        idx = tuple(torch.nonzero(excess == excess.max())[0].tolist())
        tol_text = " + ".join(
            [f"{atol:.0e}"] * (atol > 0 or rtol == 0) + [f"{rtol:.0e} * |expected|"] * (rtol > 0)
        )
        return (
            f"{_pre(name)}wrong values, max |diff| {diff.max().item():.3g} ({int(bad.sum())} of "
            f"{w.numel()} entries outside the tolerance {tol_text}); e.g. at index {idx}: "
            f"expected {w[idx].item():.6g}, got {g[idx].item():.6g}"
        )
    return None


def check(exercise_id: str, answer) -> bool:
    """Run exercise `exercise_id`'s hidden cases on `answer`, print a verdict per case.

    answer: the function the exercise asks for (or, for a value exercise, the value).
    Returns True only when every case passes; a case that raises counts as failed, with the
    exception printed. The global random state is left as it was (the cases use their own
    seeded generators, and any module built to compute an expected value draws inside
    `torch.random.fork_rng`), so calling `check` in a notebook does not change later cells.

    Raises:
        ValueError: for an unknown id, listing the known ids.
    """
    ex = get(exercise_id)
    if not ex.value and not callable(answer):
        print(f"{ex.id}: expected a function ({ex.task}), got {type(answer).__name__}")
        return False
    if ex.value and callable(answer):
        print(f"{ex.id}: expected a value, not a function: pass the result ({ex.task})")
        return False
    with torch.random.fork_rng(devices=[]):
        cases = ex.cases()
        print(ex.id)
        results = []
        for n, inputs in enumerate(cases, 1):
            want = ex.expected(_clone(inputs))
            try:
                got = ex.run(answer, _clone(inputs))
            except Exception as err:  # the reader's code failed: say how, keep checking
                msg = f"raised {type(err).__name__}: {err}"
                if isinstance(err, TypeError) and "keyword argument" in str(err):
                    names = ", ".join(inputs)
                    msg += f" (the checker calls your function by keyword: {names})"
            else:
                msg = compare(want, got, ex.atol, ex.rtol)
            results.append(msg is None)
            label = "value" if ex.value else f"case {n}/{len(cases)}"
            if msg is None:
                print(f"  {label}: ok")
            else:  # a failure names its inputs, so the reader can rerun that case
                where = "" if ex.value else f" ({describe(inputs)})"
                print(f"  {label}{where}: {msg}")
    passed = sum(results)
    if passed == len(results):
        print(f"{ex.id}: " + ("right" if ex.value else f"all {len(results)} cases pass"))
    else:
        why = f" ({ex.why_tol})" if ex.why_tol else ""
        failed = len(results) - passed
        verdict = "wrong" if ex.value else f"{failed} of {len(results)} cases fail"
        print(f"{ex.id}: {verdict}; task: {ex.task}{why}")
    return passed == len(results)


def seeded(seed: int) -> torch.Generator:
    """A CPU generator of its own, so cases never touch the global random state."""
    return torch.Generator().manual_seed(seed)


def randn(gen: torch.Generator, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)
