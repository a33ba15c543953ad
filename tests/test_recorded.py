"""t5edu.bench.recorded: the recorded benchmark results, from the checkout or from GitHub.

No test touches the network: `urlopen` is replaced by a fake that serves a contents-API listing
and raw files, or raises as it does offline. The last tests run the two chapter cells that load
the results (chapter 9's GPU panel, chapter 12's machine summary) with no results at all, as on
Colab without a network, and check that they say so instead of raising.
"""

import io
import json
import urllib.error
import warnings
from pathlib import Path

import pytest

from t5edu.bench import recorded

ROOT = Path(__file__).resolve().parents[1]
RECORD = {"command": "python -m t5edu.bench all", "machine": {"device": "cpu"}, "results": {}}


def _write(folder: Path, records: dict) -> Path:
    folder.mkdir(parents=True)
    for name, record in records.items():
        (folder / name).write_text(json.dumps(record))
    (folder / "run_gpu.sh").write_text("#!/bin/sh\n")  # not a record: never read
    return folder


class _FakeGitHub:
    """Serves `files` ({name: record}) as the contents API and raw.githubusercontent.com do."""

    def __init__(self, files: dict, download_url=None):
        self.files, self.urls = files, []
        self.download_url = download_url or (lambda name: f"{recorded.RAW_PREFIX}main/{name}")

    def __call__(self, request, timeout):
        url = request.full_url
        self.urls.append(url)
        if url == recorded.CONTENTS_URL:
            listing = [
                {"name": n, "type": "file", "download_url": self.download_url(n)}
                for n in [*self.files, "run_gpu.sh"]
            ]
            body = listing
        else:
            body = self.files[url.rsplit("/", 1)[1]]
        return io.BytesIO(json.dumps(body).encode())


def _no_network(request, timeout):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def _must_not_download(request, timeout):
    raise AssertionError(f"downloaded {request.full_url} although the results are local")


def test_found_from_a_chapters_working_directory(tmp_path, monkeypatch):
    """A chapter runs in chapters/: ../book/results is found and GitHub is never asked."""
    _write(tmp_path / "book" / "results", {"b.json": {"n": 2}, "a.json": RECORD})
    (tmp_path / "chapters").mkdir()
    monkeypatch.chdir(tmp_path / "chapters")
    monkeypatch.setattr(recorded, "urlopen", _must_not_download)
    results = recorded.load_recorded_results()
    assert list(results) == ["a.json", "b.json"]  # sorted, run_gpu.sh skipped
    assert results["a.json"] == RECORD


def test_found_beside_the_package_source(tmp_path, monkeypatch):
    """Run from anywhere, a checkout (or editable install) reads the repository's own files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(recorded, "urlopen", _must_not_download)
    results = recorded.load_recorded_results()
    expected = sorted(p.name for p in (ROOT / "book" / "results").glob("*.json"))
    assert expected and list(results) == expected
    assert all("machine" in r and "results" in r for r in results.values())


def test_not_a_record_is_refused(tmp_path):
    folder = _write(tmp_path / "results", {"bad.json": [1, 2]})
    with pytest.raises(ValueError, match=r"bad\.json holds a JSON list, expected an object"):
        recorded.load_recorded_results([folder])


def test_fetched_from_github_when_not_installed_with_the_repository(tmp_path, monkeypatch, capsys):
    github = _FakeGitHub({"cpu-x.json": RECORD, "cuda-y.json": {"machine": {"device": "cuda"}}})
    monkeypatch.setattr(recorded, "urlopen", github)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a successful fetch warns about nothing
        results = recorded.load_recorded_results([tmp_path / "missing"])
    assert results == {"cpu-x.json": RECORD, "cuda-y.json": {"machine": {"device": "cuda"}}}
    assert github.urls == [
        recorded.CONTENTS_URL,
        f"{recorded.RAW_PREFIX}main/cpu-x.json",
        f"{recorded.RAW_PREFIX}main/cuda-y.json",
    ]  # run_gpu.sh is listed but not fetched
    assert "read 2 recorded result file(s) from https://github.com/" in capsys.readouterr().out


def test_no_download_when_asked_not_to(tmp_path, monkeypatch):
    monkeypatch.setattr(recorded, "urlopen", _must_not_download)
    assert recorded.load_recorded_results([tmp_path / "missing"], download=False) == {}


def test_offline_gives_a_warning_and_no_results(tmp_path, monkeypatch):
    monkeypatch.setattr(recorded, "urlopen", _no_network)
    with pytest.warns(RuntimeWarning, match="no recorded results available: .*name resolution"):
        assert recorded.load_recorded_results([tmp_path / "missing"]) == {}


def test_a_listing_pointing_elsewhere_is_refused(tmp_path, monkeypatch):
    github = _FakeGitHub({"x.json": RECORD}, download_url=lambda n: f"https://evil.example/{n}")
    monkeypatch.setattr(recorded, "urlopen", github)
    with pytest.warns(RuntimeWarning, match=r"x\.json: download_url 'https://evil\.example/"):
        assert recorded.load_recorded_results([tmp_path / "missing"]) == {}
    assert github.urls == [recorded.CONTENTS_URL]


# ----------------------------------------------------------------- the chapter cells, offline


def _cell(notebook: str, cell_id: str) -> str:
    cells = json.loads((ROOT / "chapters" / notebook).read_text())["cells"]
    return "".join(next(c for c in cells if c.get("id") == cell_id)["source"])


def test_chapter12_results_cell_without_results(tmp_path, monkeypatch):
    """Chapter 12's loading cell, outside the repository and offline: it stops with a message
    that says what to do (before, it printed one and the next cell died of a NameError)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(recorded, "_SOURCE_ROOT", tmp_path)  # as in a plain pip install
    monkeypatch.setattr(recorded, "urlopen", _no_network)
    source = _cell("12_benchmarks.ipynb", "f815afee")
    assert "load_recorded_results()" in source
    with (
        pytest.warns(RuntimeWarning, match="no recorded results available"),
        pytest.raises(RuntimeError, match="clone the repository or go online"),
    ):
        exec(compile(source, "chapter12-results", "exec"), {})


def test_chapter12_results_cell_with_the_repositorys_results(capsys):
    namespace = {}
    exec(compile(_cell("12_benchmarks.ipynb", "f815afee"), "chapter12-results", "exec"), namespace)
    assert namespace["cpu_name"] in namespace["results"]
    assert "command: python -m t5edu.bench all" in capsys.readouterr().out


def test_chapter9_gpu_panel_without_results(tmp_path, monkeypatch):
    """Chapter 9's figure cell draws the CPU panel alone when no GPU result can be had."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(recorded, "_SOURCE_ROOT", tmp_path)
    monkeypatch.setattr(recorded, "urlopen", _no_network)
    namespace = {
        "plt": plt,
        "time_backends": ["naive"],
        "time_lengths": [64, 128],
        "seconds": {"naive": [1e-3, 2e-3]},
        "COLORS": {"naive": "C0"},
    }
    with pytest.warns(RuntimeWarning, match="no recorded results available"):
        exec(compile(_cell("09_flash_attention.ipynb", "bcb058cb"), "chapter9", "exec"), namespace)
    assert namespace["gpu"] is None
    assert len(plt.gcf().axes) == 1
    plt.close("all")
