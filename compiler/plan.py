"""Explicit rewrite plans under a measured accuracy budget (the guard; the search comes later).

`--rewrite NAME:key=val,...` names an approximate pass and its settings (a value list such as
`layers=0-5,8` continues until the next `key=`); `--budget` states what the compile must
measure: `cosine>=0.99` (output cosine to the reference), `top1-drop<=0.5` (points of top-1 on
labelled data), `max-abs<=1e-3`, and for models with a text set `embedding-cosine>=0.99` (mean
over the texts) and `nn-agree>=0.98` (nearest-neighbour agreement); several, comma-separated,
must all hold. A plan that misses its budget is not shipped: the compile
falls back to the exact graph and the manifest says why.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx_ir as ir

from edgeattn import passes
from edgeattn.compiler import accuracy
from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.rewrite_spec import AUTO, RewriteStep, check_sites, parse_rewrite  # noqa: F401 (the plan's API)

DEFAULT_BUDGET = "cosine>=0.99"
_OPS = {">=": operator.ge, "<=": operator.le}
_METRICS = {"cosine": ">=", "top1-drop": "<=", "top1-agree": ">=", "max-abs": "<=", "embedding-cosine": ">=",
            "nn-agree": ">="}
# metric → key of the accuracy dict (top1-drop is computed from top1 and reference_top1)
_KEYS = {"cosine": "cosine", "max-abs": "max_abs_error", "embedding-cosine": "embedding_cosine",
         "nn-agree": "nn_agreement", "top1-agree": "top1_agreement"}
EMBEDDING_METRICS = {"embedding-cosine", "nn-agree"}


@dataclass
class Budget:
    """One or more conditions, all of which a plan must meet (`cosine>=0.99,nn-agree>=0.98`)."""

    conditions: list[tuple[str, str, float]]

    @classmethod
    def parse(cls, text: str) -> "Budget":
        conditions = []
        for part in text.split(","):
            m = re.fullmatch(r"\s*([a-z0-9-]+)\s*(>=|<=)\s*([0-9.eE+-]+)\s*", part)
            if not m or m.group(1) not in _METRICS or _METRICS[m.group(1)] != m.group(2):
                allowed = ", ".join(f"{k}{v}X" for k, v in _METRICS.items())
                raise CompileError(f"bad budget '{text}'", f"use one or more (comma-separated) of: {allowed}")
            try:
                threshold = float(m.group(3))
            except ValueError:
                example = {"top1-drop": "0.5", "max-abs": "1e-3"}.get(m.group(1), "0.99")
                raise CompileError(f"--budget '{text}': '{m.group(3)}' is not a number",
                                   f"give the threshold as a number, e.g. {m.group(1)}{m.group(2)}{example}") from None
            conditions.append((m.group(1), m.group(2), threshold))
        return cls(conditions)

    @property
    def metric(self) -> str:
        return self.conditions[0][0]

    @property
    def metrics(self) -> list[str]:
        return [c[0] for c in self.conditions]

    def __str__(self) -> str:
        return ",".join(f"{m}{op}{t:g}" for m, op, t in self.conditions)

    def measure(self, acc: dict) -> dict[str, float]:
        return {metric: _measured(metric, acc) for metric in self.metrics}

    def met(self, values: dict[str, float]) -> bool:
        return all(_OPS[op](values[m], t) for m, op, t in self.conditions)

    def floor(self, metric: str) -> float | None:
        """The strictest `metric>=X` condition's X, or None when the budget has none."""
        floors = [t for m, op, t in self.conditions if m == metric and op == ">="]
        return max(floors) if floors else None

    def margin(self, values: dict[str, float]) -> float:
        """The tightest condition's slack (negative when missed): larger is better."""
        return min((values[m] - t) if op == ">=" else (t - values[m]) for m, op, t in self.conditions)


def _measured(metric: str, acc: dict) -> float:
    key = _KEYS.get(metric)
    if key is not None:
        if key not in acc:
            need = "(batch, classes) scores or labelled data" if metric == "top1-agree" else "the model's text set"
            raise CompileError(f"budget {metric} needs {need}", "use cosine>=X for this model")
        return acc[key]
    if "top1" not in acc:
        raise CompileError("budget top1-drop needs labelled evaluation data", "use cosine>=X for this model")
    return 100.0 * (acc["reference_top1"] - acc["top1"])


def describe(values: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:.6g}" for k, v in values.items())


def measure_candidate(model: ir.Model, feeds: dict | list[dict], reference_out: list, zoo_model=None,
                      reference_top1: tuple[float, np.ndarray] | None = None, reference_embeddings=None,
                      runner=None) -> dict:
    """`runner(model) -> run(feeds)`; default ORT with optimizations off (the graph's own numbers).
    With a list of feeds, `reference_out` holds their outputs one after another; the lowest cosine
    and the largest error over them count. `reference_top1`: the reference's top-1 on the labelled
    set and its predicted classes there (top1_agreement is then measured on that set; without
    it, on the first output of the feeds)."""
    run = (runner or _ort_unoptimized)(model)
    outs = [out for f in (feeds if isinstance(feeds, list) else [feeds]) for out in run(f)]
    acc = accuracy.compare(reference_out, outs)
    if zoo_model is not None and zoo_model.evaluate_top1 is not None and reference_top1 is not None:
        name = zoo_model.inputs[0].name
        top1, predicted = accuracy.top1_with_predictions(zoo_model.evaluate_top1, lambda x: run({name: x})[0])
        acc["top1"], acc["reference_top1"] = top1, reference_top1[0]
        acc["top1_agreement"] = float(np.mean(predicted == reference_top1[1]))
    else:
        stride = len(reference_out) // max(1, len(feeds) if isinstance(feeds, list) else 1)
        firsts = lambda xs: [x for i, x in enumerate(xs) if i % stride == 0]
        agreement = accuracy.top1_agreement(firsts(reference_out), firsts(outs))
        if agreement is not None:
            acc["top1_agreement"] = agreement
    if reference_embeddings is not None:
        emb = zoo_model.evaluate_embeddings(lambda f: run(f)[0])
        acc.update(accuracy.embedding_agreement(reference_embeddings, emb))
    return acc


def _ort_unoptimized(model: ir.Model):
    return accuracy.onnx_reference_runner(ir.to_proto(model).SerializeToString())


def build_plan(model: ir.Model, steps: list[RewriteStep], say: Callable[[str], None],
               calibration: Callable[[], list[dict]] | None = None) -> tuple[ir.Model, list[dict]]:
    """`steps` applied to a copy of `model`; passes that need calibration data
    (NEEDS_CALIBRATION) get `calibration()`. Returns the copy and what each step changed."""
    candidate = ir.from_proto(ir.to_proto(model))
    applied = []
    for step in steps:
        say(f"rewrite {step.name}")
        extra = {}
        if getattr(passes.pass_class(step.name), "NEEDS_CALIBRATION", False):
            if calibration is None:
                raise CompileError(f"rewrite '{step.name}' needs calibration data", "use a zoo model or give example inputs")
            extra["calibration"] = calibration()
        try:
            p = passes.create(step.name, **step.settings, **extra)
        except TypeError as e:
            raise CompileError(f"bad settings for rewrite '{step.name}': {e}") from None
        p(candidate)
        applied.append({**step.to_dict(), "count": p.sites_changed, "details": p.details})
    return candidate, applied


def apply_plan(model: ir.Model, steps: list[RewriteStep], budget: Budget,
               measure: Callable[[ir.Model], dict], say: Callable[[str], None],
               calibration: Callable[[], list[dict]] | None = None) -> tuple[ir.Model, dict]:
    """Apply `steps` to a copy of the exact `model`; keep it only if `budget` is met."""
    check_sites(model, steps)
    candidate, applied = build_plan(model, steps, say, calibration)
    say("measure the plan against the budget")
    acc = measure(candidate)
    values = budget.measure(acc)
    accepted = budget.met(values)
    record = {"rewrites": applied, "budget": str(budget), "measured": {**values, **acc},
              "accepted": accepted, "gemm_flops": {"exact": graph_flops(model), "plan": graph_flops(candidate)}}
    if not accepted:
        record["reason"] = f"budget {budget} missed: measured {describe(values)}; shipped the exact graph instead"
    return (candidate if accepted else model), record
