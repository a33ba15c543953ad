"""Fault harness: SIGKILL `python -m t5edu.train` at random moments, half of them in the middle of
a checkpoint save, resume after each kill, and require the result to equal an uninterrupted run
bit for bit: the final weights and every logged loss, learning rate, gradient norm and
validation loss (issue 15).

Each run is a fork of one "zygote" process that has already imported torch and t5edu, so a run
costs its training, not an interpreter start: the whole harness takes well under a minute on
two cores. It runs in the normal test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from t5edu.train import read_metrics

ARGS = [
    "--data", "toy", "--steps", "16", "--batch-size", "4", "--save-every", "1",
    "--keep-checkpoints", "2", "--log-every", "3", "--eval-every", "8", "--val-examples", "4",
    "--gen-examples", "0", "--no-progress", "--device", "cpu", "--threads", "1",
]  # fmt: skip
KILLS = 6

ZYGOTE = r"""
import json, os, random, signal, sys, time
import torch
torch.set_num_threads(1)  # before any fork: a child must not inherit a thread pool
import transformers  # noqa: F401  (the final HF load check)
from t5edu.train.__main__ import main

args, ref_dir, run_dir, kills = json.loads(sys.argv[1])


def start(argv):
    pid = os.fork()
    if pid == 0:  # the child: one `python -m t5edu.train` run
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code or 0)
    return pid


def finish(pid):
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def next_argv():
    latest = os.path.join(run_dir, "checkpoints", "latest")
    how = ["--resume", "latest"] if os.path.exists(latest) else ["--overwrite"]
    return [*args, "--out-dir", run_dir, *how]


t0 = time.monotonic()
assert finish(start([*args, "--out-dir", ref_dir])) == 0
reference_s = time.monotonic() - t0
rng, log = random.Random(0), []
for i in range(kills):
    pid, status = start(next_argv()), None
    if i % 2 == 0:  # mid-save: in the n-th save of this child, once its temporary copy appears
        ckpt, seen, nth = os.path.join(run_dir, "checkpoints"), set(), rng.randint(1, 3)
        while len(seen) < nth and status is None:
            if os.path.isdir(ckpt):
                seen |= {n for n in os.listdir(ckpt) if n.startswith(".tmp-step-")
                         and n.endswith(f"-{pid}")}
            done, raw = os.waitpid(pid, os.WNOHANG)  # it may finish first (few saves left)
            status = os.waitstatus_to_exitcode(raw) if done else None
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.01))
        where = "save"
    else:  # anywhere: start-up, a training step, an evaluation, a save, the final check
        time.sleep(rng.uniform(0.1, 0.6) * reference_s)
        where = "random"
    if status is None:
        os.kill(pid, signal.SIGKILL)  # a finished, unreaped child ignores it
        status = finish(pid)
    log.append((where, status))
code = finish(start(next_argv()))
print(json.dumps({"final": code, "kills": log, "reference_s": reference_s}))
"""


def test_random_sigkills_then_resume_equal_an_uninterrupted_run(tmp_path):
    ref, run = tmp_path / "reference", tmp_path / "killed"
    spec = json.dumps([ARGS, str(ref), str(run), KILLS])
    out = subprocess.run([sys.executable, "-c", ZYGOTE, spec], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["final"] == 0, (summary, out.stderr[-3000:])
    assert len(summary["kills"]) == KILLS
    # A child that finished before its kill exits 0; most must really have been killed.
    assert sum(code == -9 for _, code in summary["kills"]) >= KILLS // 2, summary
    assert all(code in (0, -9) for _, code in summary["kills"]), (summary, out.stderr[-3000:])

    def final(path):
        return load_file(path / "checkpoints" / "step-000016" / "model.safetensors")

    want, got = final(ref), final(run)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key

    def history(path):  # everything but wall-clock throughput
        rows = read_metrics(path / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]

    assert history(run) == history(ref)
    assert [r["step"] for r in history(ref) if r["kind"] == "train"] == [3, 6, 9, 12, 15, 16]
