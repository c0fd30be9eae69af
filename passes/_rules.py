"""Helpers shared by rule-based passes."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter._basics import MatchingTracer


def failure_reasons(rules: pattern.RewriteRuleSet, model: ir.Model) -> dict[int, str]:
    """Re-run `rules` with a tracer (which changes nothing) and map id(node) → the reason the
    best partial match through that node failed: the rule's own check message or the matcher's."""
    tracer = MatchingTracer()
    rules.apply_to_model(model, tracer=tracer)
    reasons: dict[int, str] = {}
    for infos in tracer.best_matches_map.values():
        for info in infos:
            reason = info.match_result.reason or info.status.name.lower()
            for n in info.match_result.nodes:
                reasons.setdefault(id(n), reason)
    return reasons
