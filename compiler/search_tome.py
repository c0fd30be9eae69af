"""`--rewrite auto`, family `tome`: a measured per-layer search for the cheapest token-merging
schedule that stays inside the accuracy budget.

0. Uniform: one r at every site (and before the first block), bisected on a grid (steps of
   ~1/16 of the tokens): what a user would try by hand, and a floor for step 1.
1. Sensitivity: each layer alone (and the merge before the first block, on the embeddings),
   its merge count r bisected from the uniform r up → the largest r that layer takes alone.
2. Joint: the schedule α · r_alone, α bisected, measured as a whole (errors add up across layers).
3. Greedy: raise single layers one grid step, cheapest-FLOPs gain first, keep what still meets it.
The cheapest schedule measured inside the budget wins (compiler/search_base.per_layer_schedule).
Before that, one probe picks proportional attention on or off (whichever keeps more margin).
Every candidate is measured (the same meter as explicit plans: reference outputs, labelled data
where the model has it). The objective is the graph's GEMM FLOPs at batch 1; compiler/planner.py
times each family's pick and keeps the fastest.
"""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, RewriteStep
from edgeattn.compiler.search_base import Trials, clone, per_layer_schedule, skip_reasons
from edgeattn.passes._tokens import prefix_tokens
from edgeattn.passes.token_merging import TokenMerging


class _Search(Trials):
    def __init__(self, model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict],
                 say: Callable[[str], None], max_evals: int) -> None:
        super().__init__(model, budget, measure, say, max_evals, "tome")
        self.prop_attn = True

    def evaluate(self, schedule: tuple[int, ...], prop_attn: bool | None = None) -> dict:
        prop = self.prop_attn if prop_attn is None else prop_attn
        apply = lambda m: TokenMerging(r=list(schedule[1:]), embed_r=schedule[0], prop_attn=prop)(m)
        return super().evaluate((prop, *schedule), apply, {"r": list(schedule), "prop_attn": prop})


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, site_cost: float = 0.0) -> tuple[list[RewriteStep], dict]:
    """The token-merging schedule (one r per Attention site) with the fewest FLOPs inside `budget`,
    each merge site counted as `site_cost` FLOPs more (what its ~30 small ops cost, measured by
    the planner: on a 1 ms model they cost as much as the GEMMs they save)."""
    probe = clone(model)
    p0 = TokenMerging(r=0)
    p0(probe)
    tokens = [t["tokens"] for t in p0.details["tokens_in"]]
    sites = p0.details["sites"]
    if not tokens or len(tokens) != sites:
        reasons = skip_reasons(p0.details["skipped"]) or "no attention sites"
        return [], {"family": "tome", "reason": f"no schedule to search: {reasons}"}
    protect = prefix_tokens(probe, tokens[0])
    step = max(1, (tokens[0] - protect) // 16)
    levels = max(1, (tokens[0] - protect) // 2 // step)
    s = _Search(model, budget, measure, say, max_evals)
    # A schedule is (r before the first block, r after block 0, …, r after block L−1), in grid steps.
    sites += 1
    zero = (0,) * sites

    def with_layer(layer: int, r: int) -> tuple[int, ...]:
        return tuple(r if i == layer else v for i, v in enumerate(zero))

    # Proportional attention (ToMe's +log size) helps some models and hurts others: probe both on
    # a moderate schedule (a quarter of the tokens after the first block) and keep the better one.
    probe_schedule = with_layer(1, max(step, (tokens[0] - protect) // 4))
    probes = {prop: s.evaluate(probe_schedule, prop) for prop in (True, False)}
    s.prop_attn = max(probes, key=lambda prop: s.budget.margin(probes[prop]["value"]))
    levels_best, best_flops, alone = per_layer_schedule(
        lambda lv: s.evaluate(tuple(k * step for k in lv)), sites, levels, site_cost, lambda: s.spent)
    best = tuple(k * step for k in levels_best)
    record = {"family": "tome", "grid_step": step, "protect": protect, "alone": [k * step for k in alone[1:]],
              "embed_alone": alone[0] * step, "chosen": list(best[1:]), "embed_r": best[0],
              "evaluations": len(s.trials), "trials": s.trials, "flops_exact": graph_flops(model),
              "prop_attn": s.prop_attn, "site_cost": site_cost}
    if not any(best):
        record["reason"] = "no layer can merge tokens inside the budget"
        return [], record
    record["flops_chosen"] = best_flops
    # Each layer's own error at its chosen r (that layer merging alone), for `edgeattn explain`.
    errors = [None if not r else s.evaluate(with_layer(i, r))["value"] for i, r in enumerate(best)]
    record["embed_error"], record["layer_error"] = errors[0], errors[1:]
    return [RewriteStep("tome", {"r": list(best[1:]), "embed_r": best[0], "prop_attn": int(s.prop_attn)})], record


def steps_of(trial: dict) -> list[RewriteStep]:
    """A measured trial as the plan that produced it."""
    r = trial["r"]
    return [RewriteStep("tome", {"r": list(r[1:]), "embed_r": r[0], "prop_attn": int(trial["prop_attn"])})]


def safer(steps: list[RewriteStep]) -> list[RewriteStep] | None:
    """One step toward the exact graph: every merge count scaled by 3/4 (the largest at least one
    token less); None once nothing is merged."""
    settings = steps[0].settings
    full = [settings["embed_r"], *settings["r"]]
    if not any(full):
        return None
    top = full.index(max(full))
    less = [min(int(v * 0.75), v - 1 if i == top else v) for i, v in enumerate(full)]
    if not any(less):
        return None
    return [RewriteStep("tome", {**settings, "r": less[1:], "embed_r": less[0]})]
