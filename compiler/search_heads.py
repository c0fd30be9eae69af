"""`--rewrite auto`, family `head-prune` (opt-in): FLAP head pruning's one global setting, the
number of heads removed (the pass picks which, by their measured fluctuation, across layers),
bisected for the largest count inside the budget. Nothing is added to the graph, so no site
charge applies; the pass needs calibration data, given by the planner."""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, RewriteStep
from edgeattn.compiler.search_base import Trials, clone, largest, skip_reasons
from edgeattn.passes._tokens import find_blocks
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads
from edgeattn.passes.head_pruning import HeadPruning

NEEDS_CALIBRATION = True


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, site_cost: float = 0.0,
           calibration: Callable[[], list[dict]] | None = None) -> tuple[list[RewriteStep], dict]:
    folded = clone(model)
    FoldAttentionHeads()(folded)  # as the pass does before it looks for sites
    blocks, skipped = find_blocks(folded, head_shared_masks=True)
    total = sum(b.heads for b in blocks)
    if total <= len(blocks) or calibration is None:
        why = skip_reasons(skipped) or ("no calibration data" if calibration is None
                                          else "every site has one head")
        return [], {"family": "head-prune", "reason": f"no schedule to search: {why}"}
    calib = calibration()
    trials = Trials(model, budget, measure, say, max_evals, "head-prune")

    def ok(k: int) -> bool:
        return trials.evaluate((k,), lambda m: HeadPruning(heads=k, calibration=calib)(m), {"heads": k})["ok"]

    k = largest(ok, total - len(blocks))  # every site keeps a head
    record = {"family": "head-prune", "heads_total": total, "chosen": k, "evaluations": len(trials.trials),
              "trials": trials.trials, "flops_exact": graph_flops(model), "site_cost": 0.0}
    if k == 0:
        record["reason"] = "no head can be pruned inside the budget"
        return [], record
    record["flops_chosen"] = next(t["flops"] for t in trials.trials if t["heads"] == k)
    return steps_of({"heads": k}), record


def steps_of(trial: dict) -> list[RewriteStep]:
    """A measured trial as the plan that produced it."""
    return [RewriteStep("head-prune", {"heads": trial["heads"]})]


def safer(steps: list[RewriteStep]) -> list[RewriteStep] | None:
    """One head fewer pruned; None once none is."""
    k = int(steps[0].settings["heads"]) - 1
    return [RewriteStep("head-prune", {"heads": k})] if k > 0 else None
