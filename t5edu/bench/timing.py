"""Timing and peak memory for benchmarks: warm-up, device sync, alternating repeats, medians.

Both sides of a comparison are timed in ONE process, interleaved round by round (A B C, then
B C A, ...), so a slow patch of a shared machine (another job, thermal throttling, a turbo change)
hits every side alike and the per-round ratios stay honest. Figures are medians with the
inter-quartile range and min/max as spread (chapter 12).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued device work: CUDA launches kernels asynchronously, so a clock read without
    this measures the launch, not the kernel. A no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _quantile(xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty list (numpy's default method)."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Timing:
    """Seconds per call of one benchmarked function over `repeats` timed samples.

    `times_s[r]` is round r's sample (each sample averages `number` back-to-back calls, so that
    sub-millisecond functions are not lost in the timer's resolution).
    """

    name: str
    times_s: list[float]
    number: int = 1
    median_s: float = field(init=False)
    q1_s: float = field(init=False)
    q3_s: float = field(init=False)
    min_s: float = field(init=False)
    max_s: float = field(init=False)

    def __post_init__(self):
        if not self.times_s:
            raise ValueError(f"times_s must hold at least one sample; got {self.times_s!r}")
        self.median_s = statistics.median(self.times_s)
        self.q1_s = _quantile(self.times_s, 0.25)
        self.q3_s = _quantile(self.times_s, 0.75)
        self.min_s = min(self.times_s)
        self.max_s = max(self.times_s)

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["iqr_s"] = self.iqr_s
        d["repeats"] = len(self.times_s)
        return d


def _run_timed(fn: Callable[[], object], number: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / number


def time_alternating(
    fns: dict[str, Callable[[], object]],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    min_sample_s: float = 0.0,
) -> dict[str, Timing]:
    """Time several functions against each other, alternating them round by round.

    Each function first runs `warmup` times (first-call costs: allocator growth, kernel selection,
    lazy initialisation, compilation). Then, when `min_sample_s > 0`, each gets its own `number` of
    back-to-back calls per sample so that one sample lasts at least that long. Then `repeats`
    rounds run every function once each, the order rotated every round so that no function always
    goes first. Returns one `Timing` per name, in the order given.

    Raises:
        ValueError: when `fns` is empty, `repeats < 1` or `warmup < 0`.
    """
    if not fns:
        raise ValueError("fns must name at least one function to time; got an empty dict")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0; got {warmup}")
    names = list(fns)
    number = {}
    for name in names:
        for _ in range(warmup):
            _run_timed(fns[name], 1, device)
        number[name] = 1
        if min_sample_s > 0:
            # the fastest of a few calls: one call stalled by other work must not set `number`
            t = _run_timed(fns[name], 1, device)
            for _ in range(2):
                if t >= min_sample_s:
                    break
                t = min(t, _run_timed(fns[name], 1, device))
            number[name] = max(1, math.ceil(min_sample_s / max(t, 1e-9)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            samples[name].append(_run_timed(fns[name], number[name], device))
    return {n: Timing(n, samples[n], number[n]) for n in names}


def paired_ratio(base: Timing, other: Timing) -> dict:
    """Speed of `other` relative to `base` (base time / other time), median and range over rounds.

    Ratios are taken round by round (both sides ran in the same round, seconds apart), which
    cancels machine-wide slow periods better than a ratio of two medians.
    """
    if len(base.times_s) != len(other.times_s):
        raise ValueError(
            f"both timings need the same number of rounds; got {len(base.times_s)} for "
            f"{base.name!r} and {len(other.times_s)} for {other.name!r}"
        )
    rs = [b / o for b, o in zip(base.times_s, other.times_s, strict=True)]
    return {"median": statistics.median(rs), "min": min(rs), "max": max(rs)}


# ---------------------------------------------------------------------------------------------
# Peak memory


@contextlib.contextmanager
def _quiet_fd2():
    """Silence file descriptor 2 for a block: the profiler's C++ side (Kineto) logs start/stop
    lines there, and a one-off allocator notice, that no Python setting turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes_profiler(fn: Callable[[], object]) -> int:
    """Peak bytes that `fn` itself allocated and held at once, from torch's CPU memory profiler.

    The profiler records every allocation and free made through PyTorch's CPU allocator, with a
    timestamp and the block's address. Replaying them in order, a block counts from its
    allocation until its free; the maximum of that running sum is the peak. Only blocks allocated
    inside the window count: a free of memory that was live before the call (say `fn` sets an old
    `.grad` to None first) is ignored, because subtracting it would let the peak fall below what
    `fn` really holds (the recorded 7.69 MiB for a backward that returns a 128 MiB bias gradient
    came from exactly that). So inputs, parameters and optimizer state are not counted, and
    memory that `fn` releases from before the call does not offset what it allocates.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        stack.extend(ev.children)
        if ev.tag == _EventType.Allocation and str(ev.extra_fields.device).startswith("cpu"):
            f = ev.extra_fields
            events.append((ev.start_time_ns, f.alloc_size > 0, f.ptr, f.alloc_size))
    # at equal timestamps a free sorts before an allocation: an address freed and reused in the
    # same nanosecond must not be dropped as "freed before it was allocated"
    events.sort(key=lambda e: (e[0], e[1]))
    held: dict[int, int] = {}  # address -> size of the blocks fn allocated that are still live
    live = peak = 0
    for _, is_alloc, ptr, size in events:
        if is_alloc:
            held[ptr] = held.get(ptr, 0) + size
            live += size
        elif ptr in held:
            live -= held.pop(ptr)
        peak = max(peak, live)
    return peak


def _rss_peak_bytes(fn: Callable[[], object]) -> int:
    """Fallback: growth of the process's peak resident set (Linux), reset via clear_refs."""
    import resource

    def hwm() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def rss() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = rss()
    fn()
    return max(0, hwm() - before)


def peak_memory(fn: Callable[[], object], device: torch.device | str) -> dict:
    """Peak memory `fn` allocates above what was live before it, in bytes, and how it was measured.

    CUDA: `torch.cuda.max_memory_allocated` after a reset (the caching allocator's own account).
    CPU: torch's memory profiler (every allocation through PyTorch's CPU allocator, in order);
    if that private API is missing in this torch, the growth of the peak resident set instead
    (coarser: the C allocator may keep freed memory).
    """
    device = torch.device(device)
    if device.type == "cuda":
        gc.collect()  # drop unreachable tensors so they don't sit in the baseline
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return {
            "peak_bytes": int(torch.cuda.max_memory_allocated(device) - base),
            "method": "torch.cuda.max_memory_allocated",
        }
    try:
        return {"peak_bytes": int(_cpu_peak_bytes_profiler(fn)), "method": "torch.profiler"}
    except (ImportError, AttributeError) as err:  # private profiler API moved
        return {"peak_bytes": int(_rss_peak_bytes(fn)), "method": f"peak RSS ({err})"}


def checked_peak_memory(
    fn: Callable[[], object], device: torch.device | str, lower_bytes: int, what: str
) -> dict:
    """`peak_memory(fn, device)` with its analytic lower bound: `lower_bytes` is what `fn` must
    allocate and keep alive (the gradients it returns), recorded as `gradient_bytes`.

    Raises:
        RuntimeError: naming `what`, when the measured peak is below `lower_bytes`: such a figure
            breaks physics, so it is a bug in the measurement and is never recorded.
    """
    mem = peak_memory(fn, device)
    if mem["peak_bytes"] < lower_bytes:
        raise RuntimeError(
            f"{what}: measured peak {mem['peak_bytes']} B ({mem['method']}) is below the "
            f"{lower_bytes} B of gradients the call returns: the measurement is broken"
        )
    return {**mem, "gradient_bytes": int(lower_bytes)}
