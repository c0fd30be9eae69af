"""Explicit rewrite plans under a measured accuracy budget (the guard; the search comes later).

`--rewrite NAME:key=val,...` names an approximate pass and its settings (a value list such as
`layers=0-5,8` continues until the next `key=`); `--budget` states what the compile must
measure: `cosine>=0.99` (output cosine to the reference), `top1-drop<=0.5` (points of top-1 on
labelled data), `max-abs<=1e-3`. A plan that misses its budget is not shipped: the compile
falls back to the exact graph and the manifest says why.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Callable

import onnx_ir as ir

from edgeattn import passes
from edgeattn.compiler import accuracy
from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.flops import graph_flops

DEFAULT_BUDGET = "cosine>=0.99"
_OPS = {">=": operator.ge, "<=": operator.le}
_METRICS = {"cosine": ">=", "top1-drop": "<=", "max-abs": "<="}


@dataclass
class RewriteStep:
    name: str
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "settings": self.settings}


def _value(key: str, text: str):
    if key == "layers":
        out: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise CompileError(f"bad layers '{text}'", "use e.g. layers=0-5,8")
            out += list(range(int(lo), int(hi or lo) + 1))
        return out
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


AUTO = "auto"  # the measured per-layer search (compiler/planner.py)


def parse_rewrite(spec: str) -> RewriteStep:
    name, _, rest = spec.partition(":")
    if name not in passes.APPROXIMATE and name != AUTO:
        raise CompileError(f"unknown rewrite '{name}'", f"known rewrites: {', '.join(sorted(passes.APPROXIMATE))}, or {AUTO}")
    pairs: list[list[str]] = []
    for token in filter(None, rest.split(",")):
        if "=" in token:
            pairs.append(token.split("=", 1))
        elif pairs:
            pairs[-1][1] += "," + token  # a list value such as layers=0-5,8
        else:
            raise CompileError(f"bad rewrite setting '{token}' in '{spec}'", "use NAME:key=value,key=value")
    return RewriteStep(name, {k: _value(k, v) for k, v in pairs})


@dataclass
class Budget:
    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> "Budget":
        m = re.fullmatch(r"\s*([a-z0-9-]+)\s*(>=|<=)\s*([0-9.eE+-]+)\s*", text)
        if not m or m.group(1) not in _METRICS or _METRICS[m.group(1)] != m.group(2):
            allowed = ", ".join(f"{k}{v}X" for k, v in _METRICS.items())
            raise CompileError(f"bad budget '{text}'", f"use one of: {allowed}")
        return cls(m.group(1), m.group(2), float(m.group(3)))

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def measure(self, acc: dict) -> float:
        if self.metric == "cosine":
            return acc["cosine"]
        if self.metric == "max-abs":
            return acc["max_abs_error"]
        if "top1" not in acc:
            raise CompileError("budget top1-drop needs labelled evaluation data", "use cosine>=X for this model")
        return 100.0 * (acc["reference_top1"] - acc["top1"])

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


def measure_candidate(model: ir.Model, feeds: dict, reference_out: list, zoo_model=None,
                      reference_top1: float | None = None) -> dict:
    run = accuracy.onnx_reference_runner(ir.to_proto(model).SerializeToString())
    acc = accuracy.compare(reference_out, run(feeds))
    if zoo_model is not None and zoo_model.evaluate_top1 is not None and reference_top1 is not None:
        name = zoo_model.inputs[0].name
        acc["top1"], acc["reference_top1"] = zoo_model.evaluate_top1(lambda x: run({name: x})[0]), reference_top1
    return acc


def apply_plan(model: ir.Model, steps: list[RewriteStep], budget: Budget,
               measure: Callable[[ir.Model], dict], say: Callable[[str], None]) -> tuple[ir.Model, dict]:
    """Apply `steps` to a copy of the exact `model`; keep it only if `budget` is met."""
    candidate = ir.from_proto(ir.to_proto(model))
    applied = []
    for step in steps:
        say(f"rewrite {step.name}")
        try:
            p = passes.create(step.name, **step.settings)
        except TypeError as e:
            raise CompileError(f"bad settings for rewrite '{step.name}': {e}") from None
        p(candidate)
        applied.append({**step.to_dict(), "count": p.sites_changed, "details": p.details})
    say("measure the plan against the budget")
    acc = measure(candidate)
    value = budget.measure(acc)
    accepted = budget.met(value)
    record = {"rewrites": applied, "budget": str(budget), "measured": {budget.metric: value, **acc},
              "accepted": accepted, "gemm_flops": {"exact": graph_flops(model), "plan": graph_flops(candidate)}}
    if not accepted:
        record["reason"] = (f"budget {budget} missed: measured {budget.metric} = {value:.6g}; "
                            "shipped the exact graph instead")
    return (candidate if accepted else model), record
