"""`--rewrite auto`: a measured search for the fastest rewrite plan inside the accuracy budget.

1. Site cost: the exact graph is timed against one with a one-token merge at every site; what a
   site's own small ops cost becomes a FLOPs-equivalent charge per site (decisive on a 1 ms model,
   ~0 on a 100 ms one).
2. Each family searches its own per-layer schedule for the lowest FLOPs + site charges inside the
   budget (compiler/search_tome.py: token merging; compiler/search_prune.py: class-token
   pruning; compiler/search_window.py: blocked window attention), every candidate measured
   against the reference.
3. The families' picks (and, the charge being an estimate, each family's fewest-FLOPs trial)
   are timed against each other on ONNX Runtime (one worker process per graph, interleaved
   rounds: see time_models); the fastest is the plan.
4. A cosine budget is validated on inputs the search did not measure; a pick that misses there
   is backed off toward the exact graph (the family's `safer` step) until it passes.
compile then times the plan against the exact graph and drops it if it is not faster.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx_ir as ir

from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.plan import Budget, RewriteStep, build_plan

FAMILIES = {"tome": "edgeattn.compiler.search_tome", "cls-prune": "edgeattn.compiler.search_prune",
            "window": "edgeattn.compiler.search_window", "agent": "edgeattn.compiler.search_agent",
            "hilo": "edgeattn.compiler.search_hilo", "head-prune": "edgeattn.compiler.search_heads",
            "pool": "edgeattn.compiler.search_pool"}
DEFAULT_FAMILIES = "tome,cls-prune,window,pool"  # the others measured ≤ 1.12× by hand where these give 3×: opt-in
# `--rewrite auto:key=val` settings (search's keyword arguments a user may give) and their kinds (plan.py checks them)
SETTINGS = {"max_evals": "int", "families": None, "compose": "bool"}


def _families(names) -> list[str]:
    chosen = [n for n in (names.split(",") if isinstance(names, str) else names) if n]
    unknown = [n for n in chosen if n not in FAMILIES]
    if unknown or not chosen:
        raise CompileError(f"unknown auto family '{','.join(unknown)}'", f"families: {', '.join(FAMILIES)}")
    return chosen


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, families=DEFAULT_FAMILIES, feeds: dict | None = None,
           calibration: Callable[[], list[dict]] | None = None, compose: bool | int = False) -> tuple[list[RewriteStep], dict]:
    """Each family's pick (at most `max_evals` measured candidates each) and, where sites are
    charged, its fewest-FLOPs trial: the fastest of these on ORT when `feeds` are given (else
    the pick with the fewest FLOPs). `compose`: then the other families on top of it (composed)."""
    records, picks = {}, {}
    names = _families(families)
    site_cost = site_cost_flops(model, feeds, say) if feeds is not None else {"flops": 0.0}
    for name in names:
        steps, rec = _run_family(name, model, budget, measure, say, max_evals, site_cost["flops"], calibration)
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
    if compose:
        others = [n for n in names if n != family]
        steps, record["composed"] = composed(model, steps, others, budget, measure, say, max_evals, feeds, calibration,
                                             site_cost["flops"])
    return steps, record


def _run_family(name: str, model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict],
                say: Callable[[str], None], max_evals: int, site_cost: float,
                calibration: Callable[[], list[dict]] | None) -> tuple[list[RewriteStep], dict]:
    """One family's search; a family that needs calibration data (NEEDS_CALIBRATION) gets it."""
    family = importlib.import_module(FAMILIES[name])
    extra = {"calibration": calibration} if getattr(family, "NEEDS_CALIBRATION", False) else {}
    return family.search(model, budget, measure, say, max_evals=max_evals, site_cost=site_cost, **extra)


def composed(model: ir.Model, steps: list[RewriteStep], others: list[str], budget: Budget,
             measure: Callable[[ir.Model], dict], say: Callable[[str], None], max_evals: int, feeds: dict | None,
             calibration: Callable[[], list[dict]] | None, site_cost: float) -> tuple[list[RewriteStep], dict]:
    """Second stage: each other family searched on the pick's graph (every trial measured as a
    whole against the reference, so the budget covers both); the combination that times fastest
    on ORT is kept if it beats the pick alone (by FLOPs when there are no feeds)."""
    base = build_plan(model, steps, lambda _s: None, calibration)[0]
    extra_steps, tried = {}, {}
    for name in others:
        say(f"auto: {name} on top of the pick")
        more, rec = _run_family(name, base, budget, measure, say, max_evals, site_cost, calibration)
        tried[name] = {k: v for k, v in rec.items() if k in ("chosen", "evaluations", "reason", "flops_chosen")}
        if more:
            extra_steps[name] = more
    record = {"first_steps": len(steps), "tried": tried, "family": None}
    if not extra_steps:
        return steps, record
    graphs = [base] + [build_plan(base, more, lambda _s: None, calibration)[0] for more in extra_steps.values()]
    if feeds is not None:
        costs = time_models(graphs, feeds)
        record["latency_ms"] = dict(zip(["pick alone", *extra_steps], costs))
    else:
        from edgeattn.compiler.flops import graph_flops  # noqa: PLC0415

        costs = [graph_flops(g) for g in graphs]
    best = min(range(len(graphs)), key=costs.__getitem__)
    if best == 0:
        return steps, record
    name = list(extra_steps)[best - 1]
    record["family"] = name
    return steps + extra_steps[name], record


def _safer(record: dict) -> Callable[[list[RewriteStep]], list[RewriteStep] | None]:
    """The plan's `safer` step: a composed plan backs off its second family first, then the first."""
    first = importlib.import_module(FAMILIES[record["family"]]).safer
    then = (record.get("composed") or {}).get("family")
    if not then:
        return first
    second, n = importlib.import_module(FAMILIES[then]).safer, record["composed"]["first_steps"]

    def safer(steps: list[RewriteStep]) -> list[RewriteStep] | None:
        head, tail = steps[:n], steps[n:]
        if tail:
            return head + (second(tail) or [])
        return first(head)

    return safer


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
              floor: float, say: Callable[[str], None], max_checks: int = 12,
              calibration: Callable[[], list[dict]] | None = None) -> tuple[list[RewriteStep], dict]:
    """The search's pick if its output cosine on validation inputs (which the search did not
    measure) also reaches `floor`; else the pick backed off one step at a time toward the exact
    graph (the family's `safer`) until it does. Returns no steps when `max_checks` do not."""
    safer = _safer(record)
    checks: list[dict] = []
    cand: list[RewriteStep] | None = steps
    while cand and len(checks) < max_checks:
        value = cosine(build_plan(model, cand, lambda _s: None, calibration)[0])
        checks.append({"rewrites": [s.to_dict() for s in cand], "cosine": value, "ok": value >= floor})
        say(f"auto: validation #{len(checks)}: cosine {value:.6g} {'ok' if value >= floor else f'below {floor}'}")
        if value >= floor:
            return cand, {"floor": floor, "checks": checks, "passed": True}
        cand = safer(cand)
    return [], {"floor": floor, "checks": checks, "passed": False}


def time_models(models: list[ir.Model], feeds: dict, rounds: int = 5) -> list[float]:
    """Each model's best round median (ms) on ONNX Runtime (graph optimizations on): one worker
    process per model, away from this process's torch and ORT thread pools, asked in turn for
    rounds of ≥ 0.25 s each (a 1 ms model needs hundreds of runs for a stable median). Each is
    timed as the artifact would run it: after the finishing passes (readout pruning shrinks the
    last block of every candidate, so what a plan buys is measured on top of it)."""
    from edgeattn.compiler.pipeline import run_pipeline  # noqa: PLC0415
    from edgeattn.compiler.timing import Timed, time_interleaved  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="edgeattn-time-") as tmp:
        np.savez(Path(tmp) / "feeds.npz", **feeds)
        graphs = []
        for i, m in enumerate(models):
            path = Path(tmp) / f"m{i}.onnx"
            finished = ir.from_proto(ir.to_proto(m))
            run_pipeline(finished, "default", finish=True)
            ir.save(finished, path)
            graphs.append(Timed(f"candidate {i}", [sys.executable, "-m", "edgeattn.compiler.ort_worker", str(path),
                                                    str(Path(tmp) / "feeds.npz")]))
        time_interleaved(graphs, rounds, None, 5, lambda _s: None)
    return [min(g.round_medians) for g in graphs]


def compare_latency(exact: ir.Model, chosen: ir.Model, feeds: dict, rounds: int = 5) -> dict:
    """Interleaved rounds of exact vs chosen on ORT; speedup = min exact / min chosen."""
    a, b = time_models([exact, chosen], feeds, rounds)
    return {"exact_ms": a, "plan_ms": b, "speedup": a / b, "measured_on": "onnxruntime CPU"}
