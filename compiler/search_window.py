"""`--rewrite auto`, family `window`: the per-layer blocked-window schedule (tile-aligned
neighborhood attention) with the fewest GEMM FLOPs inside the accuracy budget.

Each site's options are the window sides that divide its patch grid, largest first (level 0 =
full attention, each level a smaller window: fewer keys per query, more error). The schedule is
searched like token merging's (compiler/search_base.per_layer_schedule): each layer alone, then
all together scaled, then greedy single-layer steps. Blocked windows are chosen over strided or
sliding ones here because they are cut by Reshape/Transpose alone: the work they skip is real on
every backend, without the key copies a gathered window needs.
"""

from __future__ import annotations

import math
from typing import Callable

import onnx_ir as ir

from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, RewriteStep
from edgeattn.compiler.search_base import Trials, clone, per_layer_schedule
from edgeattn.passes._tokens import site_blocks
from edgeattn.passes.window_attention import WindowAttention


def window_options(grid: int) -> list[int]:
    """Window sides below `grid` that tile it, largest first (2 at least: a 1×1 window is no attention)."""
    return [w for w in range(grid - 1, 1, -1) if grid % w == 0]


def _step(windows: list[int]) -> list[RewriteStep]:
    """Per-site windows (0 = full attention) as one window rewrite; [] when none is windowed."""
    layers = [i for i, w in enumerate(windows) if w]
    return [RewriteStep("window", {"window": [windows[i] for i in layers], "layers": layers})] if layers else []


class _Search(Trials):
    def __init__(self, model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict],
                 say: Callable[[str], None], max_evals: int, options: list[int]) -> None:
        super().__init__(model, budget, measure, say, max_evals, "window")
        self.options = options

    def windows(self, levels: tuple[int, ...]) -> list[int]:
        return [self.options[k - 1] if k else 0 for k in levels]

    def evaluate(self, levels: tuple[int, ...]) -> dict:
        windows = self.windows(levels)
        steps = _step(windows)
        apply = (lambda m: WindowAttention(**steps[0].settings)(m)) if steps else (lambda m: None)
        return super().evaluate(levels, apply, {"windows": windows})


def search(model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict], say: Callable[[str], None],
           max_evals: int = 60, site_cost: float = 0.0) -> tuple[list[RewriteStep], dict]:
    """`site_cost`: FLOPs counted per windowed site on top of the GEMMs (its reshapes' cost)."""
    n_sites = sum(1 for n in model.graph if n.op_type == "Attention")
    blocks, skipped = site_blocks(clone(model), None, None)
    grids = {math.isqrt(b.tokens - p) for b, p in blocks if math.isqrt(b.tokens - p) ** 2 == b.tokens - p}
    options = window_options(min(grids)) if len(grids) == 1 and len(blocks) == n_sites else []
    if not options:
        reasons = "; ".join(s["reason"] for s in skipped) or "the patch tokens of every site are not one square grid with a divisor"
        return [], {"family": "window", "reason": f"no schedule to search: {reasons}"}
    s = _Search(model, budget, measure, say, max_evals, options)
    levels, best_flops, alone = per_layer_schedule(s.evaluate, n_sites, len(options), site_cost, lambda: s.spent)
    best = s.windows(levels)
    record = {"family": "window", "options": options, "alone": s.windows(tuple(alone)), "chosen": best,
              "evaluations": len(s.trials), "trials": s.trials, "flops_exact": graph_flops(model), "site_cost": site_cost}
    if not any(best):
        record["reason"] = "no layer can take a window inside the budget"
        return [], record
    record["flops_chosen"] = best_flops
    # Each layer's own error at its chosen window (that layer windowed alone), for `edgeattn explain`.
    record["layer_error"] = [s.evaluate(tuple(k if j == i else 0 for j in range(n_sites)))["value"] if k else None
                             for i, k in enumerate(levels)]
    return _step(best), record


def steps_of(trial: dict) -> list[RewriteStep]:
    """A measured trial as the plan that produced it."""
    return _step(list(trial["windows"]))


def safer(steps: list[RewriteStep]) -> list[RewriteStep] | None:
    """One step toward the exact graph: the layer with the smallest window (the most error; the
    earliest of equals) back to full attention; None once no layer is windowed."""
    settings = steps[0].settings
    windows, layers = list(settings["window"]), list(settings["layers"])
    drop = windows.index(min(windows))
    del windows[drop], layers[drop]
    return [RewriteStep("window", {"window": windows, "layers": layers})] if layers else None
