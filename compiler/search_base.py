"""What every `--rewrite auto` family search shares: measured trials under one evaluation cap,
cached by schedule, and a bisection over a monotone grid."""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, describe


def skip_reasons(skipped: list[dict]) -> str:
    """A pass's skipped sites as one line, each distinct reason once (twelve sites often share one)."""
    return "; ".join(dict.fromkeys(s["reason"] for s in skipped))


def clone(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))


class Trials:
    """Each candidate is built from the exact model, measured once (the same meter as explicit
    plans) and remembered; after `max_evals` measurements further candidates count as missed."""

    def __init__(self, model: ir.Model, budget: Budget, measure: Callable[[ir.Model], dict],
                 say: Callable[[str], None], max_evals: int, family: str) -> None:
        self.model, self.budget, self.measure, self.say = model, budget, measure, say
        self.max_evals, self.family = max_evals, family
        self.trials: list[dict] = []
        self._cache: dict[tuple, dict] = {}

    @property
    def spent(self) -> bool:
        return len(self.trials) >= self.max_evals

    def evaluate(self, key: tuple, apply: Callable[[ir.Model], None], label: dict) -> dict:
        if key in self._cache:
            return self._cache[key]
        if self.spent:
            return {"ok": False, "flops": None, "value": None, "skipped": "evaluation budget spent"}
        cand = clone(self.model)
        apply(cand)
        values = self.budget.measure(self.measure(cand))
        trial = {**label, "value": values, "ok": self.budget.met(values), "flops": graph_flops(cand)}
        self.trials.append(trial)
        self._cache[key] = trial
        mark = "ok" if trial["ok"] else "over budget"
        settings = " ".join(f"{k}={v}" for k, v in label.items())
        self.say(f"auto {self.family} #{len(self.trials)}: {settings} {describe(values)} {mark}")
        return trial


def largest(ok: Callable[[int], bool], hi: int, lo: int = 0) -> int:
    """Largest k in [lo, hi] with ok(k), assuming ok is monotone (true up to some point) and
    ok(lo) holds or does not matter."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def per_layer_schedule(run: Callable[[tuple[int, ...]], dict], sites: int, levels: int, site_cost: float,
                       spent: Callable[[], bool]) -> tuple[tuple[int, ...], int, list[int]]:
    """The per-layer schedule (one level 0…`levels` per site; 0 = exact, higher = cheaper and less
    accurate) with the fewest FLOPs + `site_cost` per changed site that `run` finds inside the
    budget: one level for every site bisected first (the uniform schedule a user would try),
    then each site alone from there up (sensitivity), then all sites scaled together from their
    levels alone (errors add up), then greedy single-site steps, earlier sites first (they save
    the most), keeping what stays inside and costs less; where sites cost something, dropping a
    site is a move too. Whatever the evaluation cap cuts short, the cheapest schedule measured
    inside the budget is returned. Returns (schedule, its FLOPs, each site's level alone); the
    schedule is all zeros (FLOPs None) when nothing inside was measured."""
    zero = (0,) * sites
    inside: dict[tuple[int, ...], int] = {}

    def measured(schedule: tuple[int, ...]) -> dict:
        trial = run(schedule)
        if trial["ok"]:
            inside[schedule] = trial["flops"]
        return trial

    def with_site(i: int, k: int) -> tuple[int, ...]:
        return tuple(k if j == i else v for j, v in enumerate(zero))

    def cost(schedule: tuple[int, ...], flops: int) -> float:
        return flops + site_cost * sum(1 for v in schedule if v)

    uniform = largest(lambda k: measured((k,) * sites)["ok"], levels)
    alone = [largest(lambda k, i=i: measured(with_site(i, k))["ok"], levels, lo=uniform) for i in range(sites)]

    def scaled(a: float) -> tuple[int, ...]:
        return tuple(int(a * k) for k in alone)

    grid = 8  # the joint scale's trials land in `inside` like every other; the pick comes from there
    largest(lambda g: measured(scaled(g / grid))["ok"], grid)
    measured(zero)
    if not inside:  # the cap came before any schedule inside the budget was measured
        return zero, None, alone
    best = min(inside, key=lambda sch: cost(sch, inside[sch]))
    best_flops = inside[best]
    improved = True
    while improved and not spent():
        improved = False
        for i in range(sites):
            moves = [tuple(v + 1 if j == i else v for j, v in enumerate(best))] if best[i] < levels else []
            if site_cost > 0 and best[i]:
                moves.append(tuple(0 if j == i else v for j, v in enumerate(best)))
            for cand in moves:
                trial = measured(cand)
                if trial["ok"] and cost(cand, trial["flops"]) < cost(best, best_flops):
                    best, best_flops, improved = cand, trial["flops"], True
                    break
    best = min(inside, key=lambda sch: cost(sch, inside[sch]))
    return best, inside[best], alone
