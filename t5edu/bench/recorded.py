"""The benchmark results recorded in the repository's `book/results/` (read by chapters 9 and 12).

`python -m t5edu.bench all ... --out book/results/<machine>.json` writes one JSON record per
machine (its command, machine and figures; see `t5edu.bench.__main__`). A checkout of the
repository, or an editable install, has the folder; a plain `pip install` of the package (as on
Colab) has only `t5edu/`, so there the files are fetched from the project's GitHub instead: the
folder is listed with the GitHub contents API and each JSON file read from its raw URL. Without
a network the result is empty, with a warning that says so, so a chapter can say "no recorded
results available" instead of crashing.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

REPOSITORY = "t5-from-scratch/t5-from-scratch"  # as in _config.yml's repository.url
BRANCH = "main"
FOLDER = "book/results"
CONTENTS_URL = f"https://api.github.com/repos/{REPOSITORY}/contents/{FOLDER}?ref={BRANCH}"
# Only files of this repository are read: a listing that points elsewhere is refused.
RAW_PREFIX = f"https://raw.githubusercontent.com/{REPOSITORY}/"

# The repository root when the package runs from its source tree (checkout, editable install);
# in a plain install this is site-packages, which holds no book/.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def default_search_paths() -> list[Path]:
    """Where `book/results` may be: from the working directory (the repository root, or
    `chapters/`, where a chapter runs), then beside the package's source tree."""
    cwd = Path.cwd()
    return [cwd / FOLDER, cwd.parent / FOLDER, _SOURCE_ROOT / FOLDER]


def local_results_dir(search: Iterable[Path] | None = None) -> Path | None:
    """The first folder of `search` (default: `default_search_paths()`) that exists, or None."""
    for folder in default_search_paths() if search is None else search:
        if Path(folder).is_dir():
            return Path(folder)
    return None


def read_results_dir(folder: Path) -> dict[str, dict]:
    """{file name: record} for every `*.json` in `folder`, sorted by name.

    Raises:
        ValueError: a file does not hold a JSON object (a record), naming the file.
    """
    results = {}
    for path in sorted(Path(folder).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(
                f"{path} holds a JSON {type(record).__name__}, expected an object (a record)"
            )
        results[path.name] = record
    return results


def _get_json(url: str, timeout: float):
    request = Request(url, headers={"Accept": "application/vnd.github+json"})
    with urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def download_results(timeout: float = 30.0) -> dict[str, dict]:
    """{file name: record} for every `*.json` in the repository's `book/results/` on GitHub.

    Raises:
        urllib.error.URLError, OSError: no network, or GitHub did not answer.
        ValueError: the listing or a file is not what the contents API and a record look like.
    """
    listing = _get_json(CONTENTS_URL, timeout)
    if not isinstance(listing, list):
        raise ValueError(
            f"{CONTENTS_URL} answered a JSON {type(listing).__name__}, expected a list of files"
        )
    results = {}
    for entry in sorted(listing, key=lambda e: e.get("name", "")):
        name, url = entry.get("name", ""), entry.get("download_url") or ""
        if entry.get("type") != "file" or not name.endswith(".json"):
            continue  # run_gpu.sh and anything else that is not a record
        if not url.startswith(RAW_PREFIX):
            raise ValueError(f"{name}: download_url {url!r} is not under {RAW_PREFIX}")
        record = _get_json(url, timeout)
        if not isinstance(record, dict):
            raise ValueError(
                f"{url} holds a JSON {type(record).__name__}, expected an object (a record)"
            )
        results[name] = record
    return results


def load_recorded_results(
    search: Iterable[Path] | None = None, *, download: bool = True, timeout: float = 30.0
) -> dict[str, dict]:
    """The recorded benchmark results as {file name: record}, sorted by file name.

    Read from the first existing folder of `search` (default: `book/results` from the working
    directory or beside the package's source, see `default_search_paths`). Only when none
    exists and `download` is true are they fetched from GitHub (`download_results`). When that
    fails (offline), a RuntimeWarning says why and the result is empty; an empty dict is also
    what a found folder without records gives.
    """
    folder = local_results_dir(search)
    if folder is not None:
        return read_results_dir(folder)
    if not download:
        return {}
    source = f"https://github.com/{REPOSITORY}/tree/{BRANCH}/{FOLDER}"
    try:
        results = download_results(timeout=timeout)
    except (URLError, OSError, ValueError) as err:  # URLError covers HTTP errors and timeouts
        warnings.warn(
            f"no recorded results available: {FOLDER}/ is not here (the package was installed "
            f"without the repository) and fetching it from {source} failed: {err}",
            RuntimeWarning,
            stacklevel=2,
        )
        return {}
    print(f"{FOLDER}/ is not here: read {len(results)} recorded result file(s) from {source}")
    return results
