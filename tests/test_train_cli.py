"""`python -m t5edu.train` never loses a run: each test runs the CLI as a user would (issue 15).

A fresh run refuses a directory that holds one, NaN/inf stops the run (exit 1) with the last
good checkpoint kept, one writer per directory, every option checked before any work, a torn
metrics line survives a resume. Tiny preset, toy data, a few steps: seconds per run.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from t5edu.train import read_metrics

BASE = [
    "--data", "toy", "--batch-size", "4", "--eval-every", "0", "--gen-examples", "0",
    "--val-examples", "4", "--no-progress", "--device", "cpu", "--threads", "1",
]  # fmt: skip


def cli(cwd, *args, timeout=300, **kw):
    """Run the CLI in `cwd` (so `-m` imports the installed t5edu, not a stray checkout)."""
    cmd = [sys.executable, "-m", "t5edu.train", *BASE, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_fresh_run_into_an_existing_run_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000018").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 18, "loss": 1.0}\n')
    refused = cli(tmp_path, "--steps", "2", "--out-dir", str(run))
    assert refused.returncode == 2, refused.stderr
    [line] = error_lines(refused)  # one line, no traceback
    assert str(run) in line and "--resume latest" in line and "new --out-dir" in line
    assert "--overwrite" in line
    assert read_metrics(run / "metrics.jsonl")[0]["step"] == 18  # untouched
    replaced = cli(tmp_path, "--steps", "2", "--log-every", "1", "--out-dir", str(run),
                   "--overwrite")  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")] == [1, 2]
    both = cli(tmp_path, "--out-dir", str(run), "--overwrite", "--resume", "latest")
    assert both.returncode == 2 and "cannot be combined with --resume" in both.stderr


def test_a_run_killed_before_its_first_save_is_not_offered_a_resume(tmp_path):
    """Only metrics.jsonl (no checkpoint): --resume latest cannot work, so neither message may
    send the user there; --overwrite is the way on (both were a dead end)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    fresh = cli(tmp_path, "--steps", "2", "--out-dir", str(run))
    assert fresh.returncode == 2
    [line] = error_lines(fresh)
    assert "saved no checkpoint" in line and "--resume" not in line and "--overwrite" in line
    resumed = cli(tmp_path, "--steps", "2", "--out-dir", str(run), "--resume", "latest")
    assert resumed.returncode == 2
    [line] = error_lines(resumed)
    assert "no checkpoint under --out-dir" in line and "--overwrite" in line


def test_cuda_only_attention_backends_are_refused_before_any_work(tmp_path):
    for backend in ("triton", "flex"):
        out = cli(tmp_path, "--steps", "2", "--out-dir", str(tmp_path / backend),
                  "--attention-backend", backend)  # fmt: skip
        assert out.returncode == 2, out.stderr
        [line] = error_lines(out)
        assert f"--attention-backend {backend}:" in line and "--device cpu" in line
        assert not (tmp_path / backend).exists()  # nothing written: no blocked directory


def test_resumed_run_reports_its_own_steps_and_a_busy_directory_is_busy(tmp_path):
    run = tmp_path / "run"
    first = cli(tmp_path, "--steps", "3", "--out-dir", str(run))
    assert first.returncode == 0, first.stderr
    more = cli(tmp_path, "--steps", "5", "--out-dir", str(run), "--resume", "latest")
    assert more.returncode == 0, more.stderr
    assert "trained 2 steps (steps 4-5, resumed)" in more.stdout
    # another process holds the lock: --resume latest is told the directory is busy
    hold = (
        "import sys, time\nfrom t5edu.train.run_dir import run_dir_lock\n"
        "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = cli(tmp_path, "--steps", "6", "--out-dir", str(run), "--resume", "latest")
        assert busy.returncode == 2 and "is in use by another trainer" in busy.stderr
    finally:
        holder.kill()
        holder.wait()
    weights = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert (weights / "model.safetensors").stat().st_mode & 0o777 == 0o644  # readable by all


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """--lr 1e3: losses 28, 2e7, then a NaN gradient. Once: exit 0, NaN checkpoints saved,
    the good ones rotated out, and "max |logit diff| nan" printed as success."""
    run = tmp_path / "run"
    out = cli(tmp_path, "--steps", "8", "--lr", "1e3", "--save-every", "1",
              "--keep-checkpoints", "2", "--log-every", "1", "--out-dir", str(run))  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    [line] = error_lines(out)
    assert "not finite, so the run stops before this update" in line
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert f"the last good checkpoint is {run / 'checkpoints' / latest}" in line
    saved = sorted((run / "checkpoints").glob("step-*"))
    assert saved
    for ckpt in saved:
        weights = load_file(ckpt / "model.safetensors")
        assert all(t.isfinite().all() for t in weights.values()), ckpt.name
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert losses and all(math.isfinite(x) for x in losses)


BAD_OPTIONS = [
    (["--lr", "nan"], "--lr: must be a finite number > 0; got nan"),
    (["--lr", "inf"], "--lr: must be a finite number > 0; got inf"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints: must be an integer >= 1; got 0"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints: must be an integer >= 1; got -1"),
    (["--log-every", "0"], "--log-every: must be an integer >= 1; got 0"),
    (["--threads", "-1"], "argument --threads: expected an integer >= 0; got -1"),
    (["--save-every", "-1"], "--save-every: must be an integer >= 0; got -1"),
    (["--eval-every", "-5"], "--eval-every: must be an integer >= 0; got -5"),
    (["--grad-clip", "-1"], "--grad-clip: must be a finite number >= 0; got -1.0"),
    (["--out-dir", ""], "--out-dir: expected a path; got ''"),
    (["--out-dir", "{tmp}/a-file/run"], "--out-dir: cannot write to"),
]


def test_bad_options_are_refused_before_any_work(tmp_path):
    """Each used to be accepted: --keep-checkpoints 0 failed only at the first save (after
    training), --log-every 0 with ZeroDivisionError, negative intervals meant "every step",
    --grad-clip -1 meant off, --out-dir "" saved nothing."""
    (tmp_path / "a-file").write_text("not a directory")
    procs = []
    for i, (argv, _) in enumerate(BAD_OPTIONS):  # in parallel: each is one start-up
        argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
        out_dir = [] if "--out-dir" in argv else ["--out-dir", str(tmp_path / f"run{i}")]
        cmd = [sys.executable, "-m", "t5edu.train", *BASE, "--steps", "2", *out_dir, *argv]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    failures = []
    for i, ((argv, message), proc) in enumerate(zip(BAD_OPTIONS, procs, strict=True)):
        _, err = proc.communicate(timeout=300)
        lines = [line for line in err.splitlines() if line.strip()]
        if proc.returncode != 2 or len(lines) != 1 or message not in lines[0]:
            failures.append(f"{argv}: exit {proc.returncode}, stderr {err[-300:]!r}")
        if (tmp_path / f"run{i}").exists():
            failures.append(f"{argv}: created its --out-dir before refusing")
    assert not failures, "\n".join(failures)


def test_one_writer_per_run_directory_and_a_killed_one_releases_it(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "t5edu.train", *BASE, "--steps", "100000", "--out-dir", str(run)]
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists():  # it holds the lock from before this
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.2)
        second = cli(tmp_path, "--steps", "2", "--out-dir", str(run), "--overwrite")
        assert second.returncode == 2, second.stderr
        [line] = error_lines(second)
        assert f"{run} is in use by another trainer (pid {first.pid})" in line
        assert first.poll() is None  # the first was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the lock with the killed process: no stale lock to remove by hand.
    again = cli(tmp_path, "--steps", "2", "--out-dir", str(run), "--overwrite")
    assert again.returncode == 0, again.stderr


def test_resume_tolerates_and_reports_a_torn_metrics_line(tmp_path):
    """A crash mid-write leaves half a JSON line; every --resume used to fail on it."""
    run = tmp_path / "run"
    assert cli(tmp_path, "--steps", "2", "--save-every", "1", "--log-every", "1",
               "--out-dir", str(run)).returncode == 0  # fmt: skip
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 3, "loss": 1.5})[:17])  # torn
    resumed = cli(tmp_path, "--steps", "3", "--log-every", "1", "--resume", "latest",
                  "--out-dir", str(run))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "dropped a torn last line" in resumed.stderr
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")] == [1, 2, 3]


@pytest.mark.parametrize("where", ["bench", "superglue"])
def test_other_clis_check_their_output_before_the_work(tmp_path, where):
    """bench and superglue used to fail on an unwritable output only after the work."""
    (tmp_path / "a-file").write_text("")
    out = str(tmp_path / "a-file" / "out.json")
    if where == "bench":
        cmd = ["-m", "t5edu.bench", "norm", "--quick", "--out", out]
    else:
        cmd = ["-m", "t5edu.superglue", "evaluate", "--model", str(tmp_path), "--task", "boolq",
               "--data", str(tmp_path), "--output", out]  # fmt: skip
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, *cmd], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr
    flag = "--out" if where == "bench" else "--output"
    assert f"{flag}: cannot write to" in result.stderr and "Traceback" not in result.stderr
    assert time.perf_counter() - t0 < 60
