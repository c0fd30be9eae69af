"""A timing worker: one artifact in its own process, driven over stdin/stdout with JSON lines.

`edgeattn bench` starts one worker per candidate and sends each `{"cmd": "run", "n": N}` in
turn (interleaved rounds), so two backends' thread pools never share a process and the
machine's drift hits every candidate alike. Replies: `{"times_ms": [...]}`; on start
`{"ready": true, ...}`; `{"cmd": "quit"}` ends it. Imports only the runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable


def serve(run_once: Callable[[], object], info: dict) -> None:
    """The loop shared by all workers (artifact or torch baseline)."""
    from edgeattn.runtime.profile import peak_rss_mb

    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("cmd") == "quit":
            break
        times = []
        for _ in range(int(msg.get("n", 1))):
            t0 = time.perf_counter_ns()
            run_once()
            times.append((time.perf_counter_ns() - t0) / 1e6)
        print(json.dumps({"times_ms": times, "peak_rss_mb": peak_rss_mb()}), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("artifact")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    from edgeattn.runtime import load

    sess = load(args.artifact, threads=args.threads)
    feeds = sess.example_feeds(seed=0)
    serve(lambda: sess.run(feeds), {"threads": sess.threads})


if __name__ == "__main__":
    main()
