"""One run per directory, one writer per run: the checks a trainer makes before it writes anything.

- `run_dir_lock(path)`: an exclusive OS lock (`fcntl.flock`) on `path/.lock`. A second process
  that asks for it is refused at once (`RunDirBusy`); the kernel drops the lock when its holder
  exits, however it exits (SIGKILL included), so there is never a stale lock to delete by hand.
- `check_fresh_run(out_dir, overwrite)`: a new run must not silently replace an old one.
- `check_writable(path, arg)`: fail in the first second, not after the work, when an output
  cannot be written.

POSIX only (`fcntl`), like the rest of the trainer's crash-safety (`os.replace`, `fsync`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # run directory -> fd of its lock file, for this process


class RunDirBusy(ValueError):
    """Another live process holds the run directory's lock."""


class RunExists(ValueError):
    """A new run was asked for in a directory that holds one."""


@contextlib.contextmanager
def run_dir_lock(path: str | os.PathLike):
    """Hold the exclusive lock of run directory `path` (created if missing) for the block.

    Re-entrant within one process (the CLI takes it first, then the trainer and each save take
    it again). A directory the lock created is removed again on release when nothing but the
    lock file was written to it (a usage error found under the lock leaves no folder behind).
    Raises `RunDirBusy` naming the directory and the holder's pid.
    """
    path = Path(path).resolve()
    if path in _held:
        yield path
        return
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunDirBusy(
            f"{path} is in use by another trainer (pid {holder}); wait for it to finish or "
            "choose another --out-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message above, not for locking
    _held[path] = fd
    try:
        yield path
    finally:
        del _held[path]
        if created and {p.name for p in path.iterdir()} == {LOCK_FILE}:
            (path / LOCK_FILE).unlink()  # while still held: a trainer asking now is refused
            path.rmdir()
        os.close(fd)  # closing the descriptor releases the lock


def holds_lock(path: str | os.PathLike) -> bool:
    """Whether this process holds `run_dir_lock(path)`."""
    return Path(path).resolve() in _held


RUN_FILES = ("checkpoints", "metrics.jsonl")  # what marks a directory as holding a run


def check_fresh_run(
    out_dir: str | os.PathLike, overwrite: bool = False, resumable: bool = True
) -> None:
    """Refuse to start a new run where one exists, unless `overwrite` (then delete the old one).

    Only the run's own files (`checkpoints/`, `metrics.jsonl`) count and are deleted: a
    directory that merely holds other files, or a tokenizer, is left alone. Call with the lock.
    `resumable` says whether the old run saved a checkpoint: only then is `--resume latest`
    offered (a run killed before its first save leaves only `metrics.jsonl`).

    Raises:
        RunExists: naming the directory and the three ways on.
    """
    out_dir = Path(out_dir)
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        if resumable:
            ways = "continue it with --resume latest, choose a new --out-dir, or pass --overwrite"
        else:
            ways = "it saved no checkpoint to resume: choose a new --out-dir, or pass --overwrite"
        raise RunExists(
            f"--out-dir {str(out_dir)!r} already holds a run ({', '.join(found)}); {ways} to "
            "replace it"
        )
    for name in found:  # renamed first (atomic): a kill mid-delete leaves no half of a run
        trash = out_dir / f".old-{name}-{os.getpid()}"
        os.replace(out_dir / name, trash)
        _remove(trash)
    for stale in out_dir.glob(".old-*"):  # from an --overwrite that was killed (we hold the lock)
        _remove(stale)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_writable(path: str | os.PathLike, arg: str, is_dir: bool = True) -> None:
    """Raise ValueError naming `arg` unless `path` (a directory, or a file when `is_dir=False`)
    could be created and written. Nothing is left behind: the nearest existing folder gets a
    probe file, created and deleted (permission bits alone miss read-only mounts and root)."""
    if str(path).strip() == "":  # Path("") would silently mean the current directory
        raise ValueError(f"{arg}: expected a path; got {str(path)!r}")
    path = Path(path)
    try:
        if path.exists() and path.is_dir() != is_dir:
            kind = "a directory" if is_dir else "a file"
            raise OSError(f"{path} exists and is not {kind}")
        folder = path if is_dir else path.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a directory")
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        if path.is_file() and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is read-only")
    except OSError as e:
        raise ValueError(f"{arg}: cannot write to {str(path)!r} ({e})") from None
