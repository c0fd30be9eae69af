"""`--rewrite auto` families whose sites each take one value from a ladder: blocked windows
(`window`), HiLo's Hi-Fi window (`hilo`), agent counts (`agent`).

A family gives its ladder per model (largest value first: level 0 = the exact site, each
level a smaller window or fewer agents, so less work and more error) and the settings every
site shares. The schedule is searched as token merging's is (search_base.per_layer_schedule):
one level for every layer bisected first, then each layer alone, then all scaled together,
then greedy single-layer steps; the fewest GEMM FLOPs (+ the per-site charge) inside the
budget wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx_ir as ir

from edgeattn import passes
from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, RewriteStep
from edgeattn.compiler.search_base import Trials, per_layer_schedule
from edgeattn.passes._tokens import attention_sites

# ladder(model, sites) → (values largest first, settings every site shares); no values → {"reason": ...}
Ladder = Callable[[ir.Model, int], tuple[list[int], dict]]


@dataclass(frozen=True)
class LevelFamily:
    name: str  # the rewrite, and the family's name in `auto:families=`
    setting: str  # the per-layer setting the ladder feeds (window, agents)
    label: str  # a trial's key for its per-site values (0 = exact)
    ladder: Ladder

    def step(self, values: list[int], shared: dict) -> list[RewriteStep]:
        """Per-site values (0 = exact) as one rewrite; [] when no site is rewritten."""
        layers = [i for i, v in enumerate(values) if v]
        if not layers:
            return []
        return [RewriteStep(self.name, {self.setting: [values[i] for i in layers], "layers": layers, **shared})]

    def search(self, model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict],
               say: Callable[[str], None], max_evals: int = 60, site_cost: float = 0.0) -> tuple[list[RewriteStep], dict]:
        """`site_cost`: FLOPs counted per rewritten site on top of the GEMMs (its own ops' cost)."""
        n_sites = attention_sites(model)
        options, shared = self.ladder(model, n_sites)
        if not options:
            return [], {"family": self.name, "reason": f"no schedule to search: {shared['reason']}"}
        trials = Trials(model, budget, measure, say, max_evals, self.name)

        def values(levels: tuple[int, ...]) -> list[int]:
            return [options[k - 1] if k else 0 for k in levels]

        def evaluate(levels: tuple[int, ...]) -> dict:
            steps = self.step(values(levels), shared)
            apply = (lambda m: passes.create(self.name, **steps[0].settings)(m)) if steps else (lambda m: None)
            return trials.evaluate(levels, apply, {self.label: values(levels), "shared": shared})

        levels, best_flops, alone = per_layer_schedule(evaluate, n_sites, len(options), site_cost, lambda: trials.spent)
        best = values(levels)
        record = {"family": self.name, "options": options, "shared": shared, "alone": values(tuple(alone)),
                  "chosen": best, "evaluations": len(trials.trials), "trials": trials.trials,
                  "flops_exact": graph_flops(model), "site_cost": site_cost}
        if not any(best):
            record["reason"] = f"no layer can take {self.name} inside the budget"
            return [], record
        record["flops_chosen"] = best_flops
        # Each layer's own error at its chosen level (that layer rewritten alone), for `edgeattn explain`.
        record["layer_error"] = [evaluate(tuple(k if j == i else 0 for j in range(n_sites)))["value"] if k else None
                                 for i, k in enumerate(levels)]
        return self.step(best, shared), record

    def steps_of(self, trial: dict) -> list[RewriteStep]:
        """A measured trial as the plan that produced it."""
        return self.step(list(trial[self.label]), trial["shared"])

    def safer(self, steps: list[RewriteStep]) -> list[RewriteStep] | None:
        """One step toward the exact graph: the layer with the smallest value (the most error;
        the earliest of equals) back to exact; None once no layer is rewritten."""
        settings = dict(steps[0].settings)
        values, layers = list(settings.pop(self.setting)), list(settings.pop("layers"))
        drop = values.index(min(values))
        del values[drop], layers[drop]
        return [RewriteStep(self.name, {self.setting: values, "layers": layers, **settings})] if layers else None
