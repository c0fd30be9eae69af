"""Benchmark: latency percentiles, throughput, peak memory, and per-op rows.

Per-op rows come from a separate profiled session so profiling overhead never
distorts the latency numbers.
"""
from __future__ import annotations

import resource
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .errors import InputError, backend_failure
from .checks import check_count
from .spec import check_index_bounds, validate_feeds

if TYPE_CHECKING:
    from .session import Session

PROFILE_RUNS_MAX = 20


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB: Linux's VmHWM, which starts afresh at exec;
    ru_maxrss does not (a bench worker reported its parent's peak), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024)  # bytes on macOS, KiB on Linux


def latency_stats(ns: np.ndarray) -> dict[str, float]:
    ms = ns.astype(np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "std_ms": float(ms.std())}


def profile_ops(session: "Session", feeds: Mapping[str, np.ndarray], runs: int) -> list[dict]:
    handle = session._open(profile=True)
    if not hasattr(handle, "end_profiling"):
        return []
    try:
        for _ in range(max(1, runs)):
            handle.run(feeds)
        return handle.end_profiling()
    except Exception as e:  # a backend error: one line, the original as __cause__
        raise backend_failure(session.manifest, session.path, e)


def _timed_runs(handle, feeds, runs: int, warmup: int, progress) -> np.ndarray:
    total = warmup + runs
    for i in range(warmup):
        handle.run(feeds)
        if progress:
            progress(i + 1, total)
    times = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        t0 = clock()
        handle.run(feeds)  # validated once above, so only the backend is timed
        times[i] = clock() - t0
        if progress:
            progress(warmup + i + 1, total)
    return times


def benchmark(session: "Session", runs: int = 50, warmup: int = 5,
              feeds: Mapping[str, Any] | None = None, per_op: bool = False,
              progress: Callable[[int, int], None] | None = None) -> dict:
    check_count("runs", runs, 1)
    check_count("warmup", warmup, 0)
    if progress is not None and not callable(progress):
        raise InputError(f"progress={progress!r} is not callable", "give a function (done, total) or None")
    feeds = validate_feeds(session.inputs, session.example_feeds() if feeds is None else feeds)
    check_index_bounds(session._index_bounds, feeds)  # as run() does: an out-of-range id would crash TVM's gather
    handle = session._handle
    if handle is None:
        raise InputError("session is closed", "load the artifact again with edgeattn.runtime.load")
    try:  # around the loops, not each run: a backend error is one line, the original as __cause__
        times = _timed_runs(handle, feeds, runs, warmup, progress)
    except Exception as e:
        raise backend_failure(session.manifest, session.path, e)
    lat = latency_stats(times)
    first = feeds[session.inputs[0].name]
    batch = int(first.shape[0]) if first.ndim else 1
    ops = profile_ops(session, feeds, min(runs, PROFILE_RUNS_MAX)) if per_op else []
    m = session.manifest
    return {"model": m.get("model"), "target": m.get("target"), "backend": m.get("backend"),
            "runs": runs, "warmup": warmup, "threads": session.threads, "batch": batch,
            "latency": lat, "throughput_per_s": batch / (lat["mean_ms"] / 1e3),
            "peak_rss_mb": peak_rss_mb(), "ops": ops}
