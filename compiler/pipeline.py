"""Pipelines are data: a named list of passes (with settings), listable from the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx_ir as ir

from edgeattn import passes
from edgeattn.compiler.errors import CompileError

PIPELINES: dict[str, list[str]] = {
    # Exact rewrites only: fold, canonicalize attention, write Gemm-by-weight as the MatMul every
    # later pass and the quantizer look for, turn run-time causal masks into is_causal, fold again.
    "default": ["cleanup", "canonicalize-attention", "gemm-to-matmul", "fold-causal-masks", "cleanup"],
    # The export as is (for baselines and debugging).
    "none": [],
}

# Run after the rewrite plan (the planner's rewrites need whole blocks; these narrow the last one)
# and before quantization: exact passes whose sites the rewrites would otherwise lose.
FINISH: dict[str, list[str]] = {
    "default": ["readout-prune", "cleanup"],
    "none": [],
}


@dataclass
class PassRecord:
    name: str
    sites_changed: int
    details: dict

    def to_dict(self) -> dict:
        return {"name": self.name, "count": self.sites_changed, "details": self.details}


def check_pipeline(name: str) -> None:
    """An unknown pipeline name fails in one line (call it before loading the model)."""
    if name not in PIPELINES:
        raise CompileError(f"unknown pipeline '{name}'",
                           f"use one of: {', '.join(PIPELINES)} (see `edgeattn pipelines`)")


def run_pipeline(model: ir.Model, name: str = "default",
                 on_pass: Callable[[str], None] | None = None, finish: bool = False) -> list[PassRecord]:
    """The pipeline's passes; `finish`: its passes that run after the rewrite plan instead."""
    check_pipeline(name)
    records = []
    for pass_name in (FINISH if finish else PIPELINES).get(name, []):
        if on_pass:
            on_pass(pass_name)
        p = passes.create(pass_name)
        p(model)
        records.append(PassRecord(pass_name, p.sites_changed, p.details))
    return records


def attention_summary(records: list[PassRecord]) -> dict:
    """`sites` found and `canonicalized` (rewritten) from the canonicalization pass records."""
    canon = [r for r in records if r.name == "canonicalize-attention"]
    if not canon:
        return {"sites": None, "canonicalized": 0, "already_canonical": None, "unmatched": []}
    d = canon[0].details
    return {"sites": d["sites"], "canonicalized": d["canonicalized"],
            "already_canonical": d["already_canonical"], "unmatched": d["unmatched"]}
