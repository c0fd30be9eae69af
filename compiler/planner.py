"""`--rewrite auto`: a measured search for the fastest rewrite plan inside the accuracy budget.

Each family searches its own per-layer schedule for the fewest GEMM FLOPs inside the budget
(compiler/search_tome.py: token merging; compiler/search_prune.py: class-token pruning), every
candidate measured against the reference. The families' picks are then timed against each other
on ONNX Runtime (interleaved rounds: FLOPs do not see the cost of the ops a rewrite adds, which
decides on small models) and the fastest is the plan. compile then times it against the exact
graph and drops it if it is not faster.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable

import numpy as np
import onnx_ir as ir

from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.plan import Budget, RewriteStep, build_plan

FAMILIES = {"tome": "edgeattn.compiler.search_tome", "cls-prune": "edgeattn.compiler.search_prune"}


def _families(names) -> list[str]:
    chosen = [n for n in (names.split(",") if isinstance(names, str) else names) if n]
    unknown = [n for n in chosen if n not in FAMILIES]
    if unknown or not chosen:
        raise CompileError(f"unknown auto family '{','.join(unknown)}'", f"families: {', '.join(FAMILIES)}")
    return chosen


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, families="tome,cls-prune", feeds: dict | None = None,
           calibration: Callable[[], list[dict]] | None = None) -> tuple[list[RewriteStep], dict]:
    """Each family's pick (at most `max_evals` measured candidates each), the fastest one on ORT
    when `feeds` are given (else the one with the fewest FLOPs)."""
    records, picks = {}, {}
    for name in _families(families):
        steps, rec = importlib.import_module(FAMILIES[name]).search(model, budget, measure, say, max_evals=max_evals)
        records[name] = rec
        if steps:
            picks[name] = steps
    summary = {n: {k: v for k, v in r.items() if k != "trials"} for n, r in records.items()}
    total = sum(r.get("evaluations", 0) for r in records.values())
    if not picks:
        reason = "; ".join(f"{n}: {r['reason']}" for n, r in records.items())
        return [], {"family": "none", "reason": reason, "families": summary, "evaluations": total}
    if feeds is not None and len(picks) > 1:
        say(f"auto: time the picks of {', '.join(picks)} against each other")
        graphs = [build_plan(model, picks[n], lambda _s: None, calibration)[0] for n in picks]
        for n, ms in zip(picks, time_models(graphs, feeds)):
            summary[n]["latency_ms"] = ms
        chosen = min(picks, key=lambda n: summary[n]["latency_ms"])
        summary["chosen_by"] = "measured latency on onnxruntime CPU"
    else:
        chosen = min(picks, key=lambda n: records[n]["flops_chosen"])
    record = {**records[chosen], "families": summary, "evaluations": total}
    return picks[chosen], record


def validated(model: ir.Model, steps: list[RewriteStep], record: dict, cosine: Callable[[ir.Model], float],
              floor: float, say: Callable[[str], None]) -> tuple[list[RewriteStep], dict]:
    """The search's pick if its output cosine on validation inputs (which the search did not
    measure) also reaches `floor`; else the cheapest of the family's in-budget trials that does,
    found by bisection over them in FLOPs order (more FLOPs kept is taken to be safer; the
    search's picks crowd at the budget's edge, so walking them one by one would not get out)."""
    steps_of = importlib.import_module(FAMILIES[record["family"]]).steps_of
    ok = sorted((t for t in record.get("trials", []) if t["ok"] and t["flops"] > record["flops_chosen"]),
                key=lambda t: t["flops"])
    checks: list[dict] = []

    def passes(cand: list[RewriteStep]) -> bool:
        value = cosine(build_plan(model, cand, lambda _s: None)[0])
        checks.append({"rewrites": [s.to_dict() for s in cand], "cosine": value, "ok": value >= floor})
        say(f"auto: validation #{len(checks)}: cosine {value:.6g} {'ok' if value >= floor else f'below {floor}'}")
        return value >= floor

    if passes(steps):
        return steps, {"floor": floor, "checks": checks, "passed": True}
    if not ok or not passes(steps_of(ok[-1])):
        return [], {"floor": floor, "checks": checks, "passed": False}
    lo, hi = 0, len(ok) - 1  # ok[hi] passes; find the first that does
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(steps_of(ok[mid])):
            hi = mid
        else:
            lo = mid + 1
    return steps_of(ok[hi]), {"floor": floor, "checks": checks, "passed": True}


def ort_latency_ms(model: ir.Model, feeds: dict, runs: int = 20, min_seconds: float = 0.25) -> float:
    """Median latency on ONNX Runtime (graph optimizations on, 1 session): at least `runs` runs and
    `min_seconds` of them (a 1 ms model needs hundreds for a stable median)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, feeds)
    times: list[float] = []
    while len(times) < runs or (sum(times) < min_seconds and len(times) < 2000):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def time_models(models: list[ir.Model], feeds: dict, rounds: int = 3) -> list[float]:
    """Interleaved rounds on ORT; each model's best round median (ms)."""
    best = [float("inf")] * len(models)
    for _ in range(rounds):
        for i, m in enumerate(models):
            best[i] = min(best[i], ort_latency_ms(m, feeds))
    return best


def compare_latency(exact: ir.Model, chosen: ir.Model, feeds: dict, rounds: int = 3) -> dict:
    """Interleaved rounds of exact vs chosen on ORT; speedup = min exact / min chosen."""
    a, b = time_models([exact, chosen], feeds, rounds)
    return {"exact_ms": a, "plan_ms": b, "speedup": a / b, "measured_on": "onnxruntime CPU"}
