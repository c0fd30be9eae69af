"""`--rewrite auto`, family `cls-prune`: the class-token pruning schedule (EViT) with the fewest
GEMM FLOPs inside the accuracy budget.

A schedule keeps a fraction g/16 of the patch tokens after chosen blocks. Sites are added one at
a time, each after the last: every later layer's keep is bisected on the grid (the smallest that
still meets the budget with the sites already chosen), and the layer that leaves the fewest FLOPs
joins the schedule. A layer whose smallest keep could not beat the best schedule so far is not
measured at all (its FLOPs are counted, not measured), so most of the search is cheap. Pruning
after the last block is skipped: only the pooled tokens reach the output there.
"""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, RewriteStep
from edgeattn.compiler.search_base import Trials, clone, largest, skip_reasons
from edgeattn.passes._tokens import attention_sites
from edgeattn.passes.cls_pruning import ClassTokenPruning

GRID = 16  # keep fractions g/GRID, g = 1 … GRID−1
MAX_SITES = 3


def _pass(schedule: dict[int, int]) -> ClassTokenPruning:
    layers = sorted(schedule)
    return ClassTokenPruning(keep=[schedule[i] / GRID for i in layers], layers=layers)


class _Search(Trials):
    def __init__(self, model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict],
                 say: Callable[[str], None], max_evals: int) -> None:
        super().__init__(model, budget, measure, say, max_evals, "cls-prune")
        self._flops: dict[tuple, int] = {}

    def evaluate(self, schedule: dict[int, int]) -> dict:
        key = tuple(sorted(schedule.items()))
        label = {"keep": {i: schedule[i] / GRID for i in sorted(schedule)}}  # int keys until saved
        return super().evaluate(key, lambda m: _pass(schedule)(m), label)

    def flops(self, schedule: dict[int, int]) -> int:
        """Counted, not measured: what the schedule would leave."""
        key = tuple(sorted(schedule.items()))
        if key not in self._flops:
            cand = clone(self.model)
            _pass(schedule)(cand)
            self._flops[key] = graph_flops(cand)
        return self._flops[key]


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, site_cost: float = 0.0) -> tuple[list[RewriteStep], dict]:
    """`site_cost`: FLOPs counted per pruning site on top of the GEMMs (its small ops' cost)."""
    sites = attention_sites(model)
    probe = clone(model)
    p0 = ClassTokenPruning(keep=0.5, layers=[0])
    p0(probe)
    if sites < 2 or not p0.sites_changed:
        reasons = skip_reasons(p0.details.get("skipped", [])) or "fewer than two attention sites"
        return [], {"family": "cls-prune", "reason": f"no schedule to search: {reasons}"}
    s = _Search(model, budget, measure, say, max_evals)
    exact = graph_flops(model)
    best: dict[int, int] = {}
    best_flops = exact
    for _ in range(MAX_SITES):
        start = max(best) + 1 if best else 0
        # Most promising layers first, so the bound skips the rest.
        layers = sorted(range(start, sites - 1), key=lambda i: s.flops({**best, i: 1}))
        round_best, round_flops = None, best_flops - site_cost  # one more site must pay for itself
        for layer in layers:
            if s.spent or s.flops({**best, layer: 1}) >= round_flops:
                continue
            # k = GRID − g tokens-sixteenths dropped; the largest k inside the budget.
            k = largest(lambda k, i=layer: s.evaluate({**best, i: GRID - k})["ok"], GRID - 1)
            if k == 0:
                continue
            cand = {**best, layer: GRID - k}
            flops = s.evaluate(cand)["flops"]
            if flops < round_flops:
                round_best, round_flops = cand, flops
        if round_best is None:
            break
        best, best_flops = round_best, round_flops
    record = {"family": "cls-prune", "grid": GRID, "chosen": {str(i): g / GRID for i, g in sorted(best.items())},
              "evaluations": len(s.trials), "trials": s.trials, "flops_exact": exact, "site_cost": site_cost}
    if not best:
        record["reason"] = "no layer can prune tokens inside the budget"
        return [], record
    record["flops_chosen"] = best_flops
    # Each site's own error at its keep (that site pruning alone), for `edgeattn explain`.
    record["layer_error"] = [s.evaluate({i: best[i]})["value"] if i in best else None for i in range(sites)]
    layers = sorted(best)
    return [RewriteStep("cls-prune", {"keep": [best[i] / GRID for i in layers], "layers": layers})], record


def steps_of(trial: dict) -> list[RewriteStep]:
    """A measured trial as the plan that produced it."""
    keep = {int(i): v for i, v in trial["keep"].items()}  # JSON turns the layer keys into strings
    return [RewriteStep("cls-prune", {"keep": [keep[i] for i in sorted(keep)], "layers": sorted(keep)})]


def safer(steps: list[RewriteStep]) -> list[RewriteStep] | None:
    """One step toward the exact graph: drop the last site (it saves the least), then raise the
    one left's keep by a grid step; None once nothing is pruned."""
    keep, layers = list(steps[0].settings["keep"]), list(steps[0].settings["layers"])
    if len(layers) > 1:
        keep, layers = keep[:-1], layers[:-1]
    elif keep[0] + 1 / GRID < 1:
        keep = [keep[0] + 1 / GRID]
    else:
        return None
    return [RewriteStep("cls-prune", {"keep": keep, "layers": layers})]
