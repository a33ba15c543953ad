"""The package runs on every Python that pyproject.toml admits (>= 3.10), not only on CI's 3.11.

CI has one interpreter, so the oldest version is checked statically: vermin reads every module
of t5edu and the tests (syntax, standard-library modules, functions and keyword arguments, with
annotations evaluated) and reports the newest Python any of them needs. A `tomllib` import or an
`except*` (both 3.11) fails here before a reader on 3.10 meets it.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared_minimum() -> tuple[int, int]:
    # a regex, not tomllib: tomllib is itself new in 3.11
    text = (ROOT / "pyproject.toml").read_text()
    major, minor = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', text, re.M).groups()
    return int(major), int(minor)


def test_no_module_needs_a_newer_python_than_declared():
    major, minor = _declared_minimum()
    assert (major, minor) == (3, 10), "README and CI describe 3.10 as the oldest supported"
    vermin = "import sys, vermin; sys.exit(vermin.main())"  # the package has no __main__
    cmd = [sys.executable, "-c", vermin, f"-t={major}.{minor}-", "--no-tips", "--violations",
           "--eval-annotations", "--no-parse-comments", "t5edu", "tests"]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    # --violations prints only what needs more than the target, and exits non-zero if any does
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r"Minimum required versions: (\d+)\.(\d+)", run.stdout)
    assert found and (int(found[1]), int(found[2])) <= (major, minor), run.stdout
