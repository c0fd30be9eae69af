"""Interleaved timing, one process per timed thing: each worker (runtime.worker's protocol) is
asked in turn for a round of runs, so two thread pools never share a process and the machine's
drift hits every candidate alike. Used by `edgeattn bench` and by the planner's timings."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from edgeattn.compiler.errors import CompileError

# Pause before each candidate's turn: an idle worker's thread pool (OpenMP, ORT) keeps spinning
# for a moment after its last run and would steal cores from the next candidate.
SETTLE_S = 0.3


@dataclass
class Timed:
    """One worker command and what time_interleaved fills in for it (bench's Candidate carries
    the same fields)."""
    label: str
    cmd: list[str]
    times_ms: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0


def time_interleaved(cands: list[Timed], rounds: int, per_round: int | None, warmup: int,
                     say: Callable[[str], None], min_round_s: float = 0.25) -> None:
    """One process per candidate; each round asks every worker in turn for `per_round` runs
    (None: as many as fill `min_round_s`, from the warm-up's median, at least 3)."""
    procs = []
    try:
        for c in cands:
            p = subprocess.Popen(c.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            _ready(p, c)
        counts = []
        for c, p in zip(cands, procs):
            warm = _ask(p, warmup)["times_ms"]
            each = statistics.median(warm) / 1e3 if warm else 0.0
            counts.append(per_round or max(3, min(2000, math.ceil(min_round_s / max(each, 1e-6)))))
        for r in range(rounds):
            say(f"round {r + 1}/{rounds}")
            for c, p, n in zip(cands, procs, counts):
                time.sleep(SETTLE_S)
                reply = _ask(p, n)
                c.times_ms += reply["times_ms"]
                c.round_medians.append(statistics.median(reply["times_ms"]))
                c.peak_rss_mb = reply["peak_rss_mb"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                p.stdin.flush()
                p.wait(timeout=30)


def _ready(p: subprocess.Popen, c: Timed) -> None:
    line = p.stdout.readline()
    if not line:
        err = p.stderr.read().strip().splitlines()
        raise CompileError(f"worker for {c.label} failed to start: {err[-1] if err else 'no output'}")


def _ask(p: subprocess.Popen, n: int) -> dict:
    p.stdin.write(json.dumps({"cmd": "run", "n": n}) + "\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())
