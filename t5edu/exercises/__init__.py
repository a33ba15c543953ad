"""Exercises that check themselves: `check("ch07.rope_offset", my_function)`.

Each chapter's module registers its exercises; `check` runs hidden, seeded cases against a
reader's answer (a function or a value), prints one verdict per case (ok, or what is wrong:
the input, the expected and received shape or value, the largest difference and the tolerance)
and returns True only when every case passes. The expected outputs are computed at check time
from t5edu's own tested modules (and autograd), never stored.

    import t5edu.exercises
    t5edu.exercises.list_exercises("ch07")
    t5edu.exercises.check("ch07.rope_offset", rope)
"""

import importlib
import pkgutil

from t5edu.exercises._core import REGISTRY, Exercise, check, compare, list_exercises

# Importing a chapter's module (chNN.py) registers its exercises: a new chapter is one file.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("ch"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["check", "list_exercises", "Exercise", "REGISTRY", "compare"]
