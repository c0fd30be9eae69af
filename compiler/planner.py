"""`--rewrite auto`: a measured search for the fastest rewrite plan inside the accuracy budget.

1. Site cost: the exact graph is timed against one with a one-token merge at every site; what a
   site's own small ops cost becomes a FLOPs-equivalent charge per site (decisive on a 1 ms model,
   ~0 on a 100 ms one).
2. Each family searches its own per-layer schedule for the lowest FLOPs + site charges inside the
   budget (compiler/search_tome.py: token merging; compiler/search_prune.py: class-token
   pruning; compiler/search_window.py: blocked window attention), every candidate measured
   against the reference.
3. The families' picks (and, the charge being an estimate, each family's fewest-FLOPs trial)
   are timed against each other on ONNX Runtime (interleaved rounds); the fastest is the plan.
4. A cosine budget is validated on inputs the search did not measure; a pick that misses there
   is backed off toward the exact graph (the family's `safer` step) until it passes.
compile then times the plan against the exact graph and drops it if it is not faster.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable

import numpy as np
import onnx_ir as ir

from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.plan import Budget, RewriteStep, build_plan

FAMILIES = {"tome": "edgeattn.compiler.search_tome", "cls-prune": "edgeattn.compiler.search_prune",
            "window": "edgeattn.compiler.search_window"}


def _families(names) -> list[str]:
    chosen = [n for n in (names.split(",") if isinstance(names, str) else names) if n]
    unknown = [n for n in chosen if n not in FAMILIES]
    if unknown or not chosen:
        raise CompileError(f"unknown auto family '{','.join(unknown)}'", f"families: {', '.join(FAMILIES)}")
    return chosen


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, families="tome,cls-prune,window", feeds: dict | None = None,
           calibration: Callable[[], list[dict]] | None = None) -> tuple[list[RewriteStep], dict]:
    """Each family's pick (at most `max_evals` measured candidates each) and, where sites are
    charged, its fewest-FLOPs trial: the fastest of these on ORT when `feeds` are given (else
    the pick with the fewest FLOPs)."""
    records, picks = {}, {}
    names = _families(families)
    site_cost = site_cost_flops(model, feeds, say) if feeds is not None else {"flops": 0.0}
    for name in names:
        steps, rec = importlib.import_module(FAMILIES[name]).search(model, budget, measure, say, max_evals=max_evals,
                                                                    site_cost=site_cost["flops"])
        records[name] = rec
        if steps:
            picks[name] = steps
    summary = {n: {k: v for k, v in r.items() if k != "trials"} for n, r in records.items()}
    total = sum(r.get("evaluations", 0) for r in records.values())
    if not picks:
        reason = "; ".join(f"{n}: {r['reason']}" for n, r in records.items())
        return [], {"family": "none", "reason": reason, "families": summary, "evaluations": total,
                    "site_cost_probe": site_cost}
    # The site charge is an estimate: each family's fewest-FLOPs schedule is timed as well.
    finalists = {n: (n, st) for n, st in picks.items()}
    fewest = {n: _fewest_flops_trial(records[n]) for n in picks} if site_cost["flops"] > 0 else {}
    for n, trial in fewest.items():
        alt = importlib.import_module(FAMILIES[n]).steps_of(trial)
        if alt != picks[n]:
            finalists[f"{n} (fewest FLOPs)"] = (n, alt)
    if feeds is not None and len(finalists) > 1:
        say(f"auto: time {', '.join(finalists)} against each other")
        graphs = [build_plan(model, st, lambda _s: None, calibration)[0] for _n, st in finalists.values()]
        timed = dict(zip(finalists, time_models(graphs, feeds)))
        for label, ms in timed.items():
            summary.setdefault(label, {})["latency_ms"] = ms
        label = min(timed, key=timed.get)
        summary["chosen_by"] = "measured latency on onnxruntime CPU"
    else:
        label = min(picks, key=lambda n: records[n]["flops_chosen"])
    family, steps = finalists[label]
    record = {**records[family], "families": summary, "evaluations": total, "site_cost_probe": site_cost}
    if label != family:  # the per-layer errors describe the charged pick, not this one
        record.update(pick="fewest FLOPs", flops_chosen=fewest[family]["flops"], layer_error=None, embed_error=None)
    return steps, record


def _fewest_flops_trial(record: dict) -> dict:
    """The in-budget trial with the fewest FLOPs (a family with a pick has one)."""
    return min((t for t in record["trials"] if t["ok"]), key=lambda t: t["flops"])


def site_cost_flops(model: ir.Model, feeds: dict, say: Callable[[str], None]) -> dict:
    """What one rewrite site's small ops cost, in GEMM FLOPs of this model: the exact graph timed
    against one with a one-token merge at every site (GEMM work barely changes, the op count
    does). On a 1 ms model a merge site costs about as much as the GEMMs it saves; on a
    100 ms one it is lost in the noise (then ~0)."""
    from edgeattn.compiler.flops import graph_flops  # noqa: PLC0415
    from edgeattn.passes.token_merging import TokenMerging  # noqa: PLC0415

    probe = ir.from_proto(ir.to_proto(model))
    p = TokenMerging(r=1, embed_r=1, prop_attn=False)
    p(probe)
    if not p.sites_changed:
        return {"flops": 0.0, "reason": "no merge site to probe"}
    say("auto: time what a rewrite site's own ops cost")
    exact_ms, probe_ms = time_models([model, probe], feeds)
    f0, f1 = graph_flops(model), graph_flops(probe)
    per_site_ms = max(0.0, probe_ms - exact_ms * f1 / f0) / p.sites_changed
    return {"flops": per_site_ms * f0 / exact_ms, "per_site_ms": per_site_ms, "exact_ms": exact_ms,
            "probe_ms": probe_ms, "sites": p.sites_changed}


def validated(model: ir.Model, steps: list[RewriteStep], record: dict, cosine: Callable[[ir.Model], float],
              floor: float, say: Callable[[str], None], max_checks: int = 12) -> tuple[list[RewriteStep], dict]:
    """The search's pick if its output cosine on validation inputs (which the search did not
    measure) also reaches `floor`; else the pick backed off one step at a time toward the exact
    graph (the family's `safer`) until it does. Returns no steps when `max_checks` do not."""
    safer = importlib.import_module(FAMILIES[record["family"]]).safer
    checks: list[dict] = []
    cand: list[RewriteStep] | None = steps
    while cand and len(checks) < max_checks:
        value = cosine(build_plan(model, cand, lambda _s: None)[0])
        checks.append({"rewrites": [s.to_dict() for s in cand], "cosine": value, "ok": value >= floor})
        say(f"auto: validation #{len(checks)}: cosine {value:.6g} {'ok' if value >= floor else f'below {floor}'}")
        if value >= floor:
            return cand, {"floor": floor, "checks": checks, "passed": True}
        cand = safer(cand)
    return [], {"floor": floor, "checks": checks, "passed": False}


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
