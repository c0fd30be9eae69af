"""What every `--rewrite auto` family search shares: measured trials under one evaluation cap,
cached by schedule, and a bisection over a monotone grid."""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, describe


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
