"""Time built artifacts against each other: one worker process each, many interleaved rounds
(compiler.timing, as `bench` does), for A/B checks that one bench run's 5 rounds cannot resolve.

    python tests/benchmarks/ab_artifacts.py out/a out/b bench/m/openvino-nncf --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys

from edgeattn.compiler.bench import _worker_cmd
from edgeattn.compiler.timing import Timed, time_interleaved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    cands = [Timed(path, _worker_cmd(path, a.threads)) for path in a.artifacts]
    time_interleaved(cands, a.rounds, None, warmup=5, say=lambda m: print(m, file=sys.stderr))
    base = min(cands[0].round_medians)
    print(f"{'artifact':50s} {'best round ms':>14s} {'p50 ms':>8s} {'× first':>8s}")
    for c in cands:
        best = min(c.round_medians)
        print(f"{c.label:50s} {best:14.3f} {statistics.median(c.times_ms):8.3f} {base / best:8.3f}")


if __name__ == "__main__":
    main()
