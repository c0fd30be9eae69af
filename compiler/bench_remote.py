"""`edgeattn bench MODEL --targets tvm --remote HOST:PORT [--key KEY]`: the candidates that carry a TVM
library (`tvm`: same CPU kind as the device; `mobile`: its aarch64 bundle) are compiled here and
timed on the device through TVM RPC, in interleaved rounds, on the device's own clock.

Host baselines (torch eager, plain ORT) cannot run over TVM RPC, so this table holds device rows
only (with `--rewrite`, each plan is compared with its exact artifact on the device); mixing
device and host timings in one table would mislead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeattn.compiler.bench import Say, _artifact, _plan_candidate
from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.frontend import load_source
from edgeattn.compiler.pipeline import run_pipeline

REMOTE_TARGETS = ("tvm", "mobile")


def run_remote_bench(spec: str, target_names: list[str], out: Path, *, remote: str, key: str | None,
                     rounds: int = 5, per_round: int = 10, warmup: int = 3, say: Say | None = None,
                     rewrites: list[str] | None = None, budget: str | None = None) -> dict:
    from edgeattn.runtime.remote import RemoteArtifact, connect

    say = say or (lambda _m: None)
    other = [t for t in target_names if t not in REMOTE_TARGETS]
    if other:
        raise CompileError(f"bench --remote times TVM libraries; {', '.join(other)} cannot run over TVM RPC",
                           f"use --targets {','.join(REMOTE_TARGETS)} (or drop --remote)")
    say(f"load {spec}")
    src = load_source(spec)
    canonical = src.clone()
    run_pipeline(canonical.model, "default")
    flops = graph_flops(canonical.model, {**src.example_dims, "batch": 1})
    work = out / "artifacts"
    cands, dirs, notes = [], {}, []
    for t in target_names:
        say(f"compile for {t}")
        exact = _artifact(src, t, work / t, "default", {"precision": "fp32"}, f"edgeattn {t}", "edgeattn", 1)
        cands.append(exact)
        dirs[exact.label] = work / t
        if rewrites:
            say(f"compile for {t} with the rewrite plan")
            planned, rewrites = _plan_candidate(src, t, "fp32", work, 1, rewrites, budget, exact, notes)
            if planned is not None:
                cands.append(planned)
                dirs[planned.label] = work / f"{t}-fp32-plan"
    say(f"connect to {remote}")
    sess = connect(remote, key)
    loaded = {}
    for i, c in enumerate(cands):
        say(f"upload {c.label}")
        loaded[c.label] = RemoteArtifact(dirs[c.label], sess, upload_name=f"cand{i}.so")
        loaded[c.label].warm(warmup)
    for r in range(rounds):
        say(f"round {r + 1}/{rounds} on the device")
        for c in cands:
            ms = loaded[c.label].time(per_round)
            c.times_ms.extend(ms.tolist())
            c.round_medians.append(float(np.median(ms)))
    rows = []
    for c in cands:
        best = min(c.round_medians)
        done = c.gemm_flops or flops
        rows.append({"candidate": c.label, "target": c.target, "precision": c.precision, "best_ms": best,
                     "p50_ms": float(np.percentile(c.times_ms, 50)), "p90_ms": float(np.percentile(c.times_ms, 90)),
                     "throughput_per_s": 1e3 / best, "gflops_per_s": done / (best / 1e3) / 1e9,
                     "max_abs_error": c.accuracy.get("max_abs_error"), "cosine": c.accuracy.get("cosine"),
                     "device_check": loaded[c.label].check, "samples": len(c.times_ms),
                     "speedup_vs_exact": min(c.exact.round_medians) / best if c.exact is not None else None})
    result = {"model": spec, "batch": 1, "gflop": flops / 1e9, "rounds": rounds, "per_round": per_round,
              "device": {"address": remote, "key": key, "threads": int(sess.get_function("runtime.NumThreads")())},
              "method": "min over rounds of each round's median; TVM time_evaluator on the device, candidates interleaved",
              "rows": rows, "notes": notes}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
