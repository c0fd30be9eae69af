"""`--rewrite auto`, family `pool`: token pooling (2×2 squares of patch tokens → one token) after
the earliest layers that stay inside the accuracy budget (layer −1: on the embeddings, before the
first block).

Pooling earlier removes more work, so each round scans the layers after the last pool in order
and keeps the first one inside the budget (if it pays for its site charge); the next round adds a
further pool after a later layer while the grid still halves. One site is one constant MatMul,
so on a 1 ms model this is the family whose sites cost almost nothing.
"""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from edgeattn.compiler.plan import Budget, RewriteStep
from edgeattn.compiler.search_base import Trials, clone, skip_reasons
from edgeattn.passes._tokens import attention_sites
from edgeattn.passes.token_pooling import TokenPooling

MAX_SITES = 3


def _step(layers: list[int]) -> RewriteStep:
    return RewriteStep("pool", {"layers": list(layers)})


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, site_cost: float = 0.0) -> tuple[list[RewriteStep], dict]:
    """`site_cost`: FLOPs counted per pooling site on top of the GEMMs."""
    sites = attention_sites(model)
    probe = TokenPooling(layers=[0])
    probe(clone(model))
    if sites < 2 or not probe.sites_changed:
        reasons = skip_reasons(probe.details.get("skipped", [])) or "fewer than two attention sites"
        return [], {"family": "pool", "reason": f"no schedule to search: {reasons}"}
    s = Trials(model, budget, measure, say, max_evals, "pool")

    def run(layers: list[int]) -> dict:
        p = TokenPooling(layers=layers)
        trial = s.evaluate(tuple(layers), lambda m: p(m), {"layers": list(layers)})
        return {**trial, "ok": trial["ok"] and p.sites_changed == len(layers)}

    exact = run([])
    best, best_cost = [], exact["flops"]
    for _ in range(MAX_SITES):
        start = best[-1] + 1 if best else -1
        found = None
        for layer in range(start, sites):  # after the last attention it still shrinks the last MLP
            if s.spent:
                break
            trial = run(best + [layer])
            if trial["ok"]:
                found = (best + [layer], trial["flops"] + site_cost * (len(best) + 1))
                break
        if found is None or found[1] >= best_cost:
            break
        best, best_cost = found
    record = {"family": "pool", "chosen": {"layers": best}, "evaluations": len(s.trials), "trials": s.trials,
              "flops_exact": exact["flops"], "site_cost": site_cost}
    if not best:
        record["reason"] = "no layer can pool tokens inside the budget"
        return [], record
    record["flops_chosen"] = run(best)["flops"]
    record["layer_error"] = [run([i])["value"] if i in best else None for i in range(sites)]
    if -1 in best:
        record["embed_error"] = run([-1])["value"]
    return [_step(best)], record


def steps_of(trial: dict) -> list[RewriteStep]:
    """A measured trial as the plan that produced it."""
    return [_step(trial["layers"])]


def safer(steps: list[RewriteStep]) -> list[RewriteStep] | None:
    """One step toward the exact graph: drop the last pool; None once none is left."""
    layers = list(steps[0].settings["layers"])
    return [_step(layers[:-1])] if len(layers) > 1 else None
