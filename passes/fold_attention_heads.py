"""Fold the head split/merge around a canonical Attention into the op (3-D form), exact.

Exports write q/k/v as (B,S,H·d) → Reshape (B,S,H,d) → Transpose (B,H,S,d), and the output
back through Transpose → Reshape. ONNX Attention takes 3-D (B,S,H·d) inputs with
`q_num_heads`/`kv_num_heads` and returns (B,S,H·d), so the six layout ops per site disappear
and the backend picks its own internal layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter._basics import MatchResult

from edgeattn.passes._rules import failure_reasons

# Attention attributes this fold carries over; anything else (softcap, qk output modes) stays 4-D.
_CARRIED = {"scale", "is_causal"}


def _shape_const(value: ir.Value | None) -> list[int] | None:
    if value is None or value.const_value is None:
        return None
    return [int(x) for x in value.const_value.numpy().reshape(-1)]


def _heads(split: list[int] | None, x3: ir.Value) -> tuple[int, int] | None:
    """(heads, head_dim) if `split` reshapes the 3-D x3 (B,S,H·d) into (B,S,H,d)."""
    if split is None or len(split) != 4 or x3.shape is None or len(x3.shape) != 3:
        return None
    h, d = split[2], split[3]
    if h <= 0 or d <= 0:
        return None
    width = x3.shape[2]
    if isinstance(width, int) and width != h * d:
        return None
    return h, d


class FoldHeadsRule(pattern.RewriteRuleClassBase):
    def pattern(self, op, q3, k3, v3, q_split, k_split, v_split, merge):
        q = op.Transpose(op.Reshape(q3, q_split), perm=[0, 2, 1, 3])
        k = op.Transpose(op.Reshape(k3, k_split), perm=[0, 2, 1, 3])
        v = op.Transpose(op.Reshape(v3, v_split), perm=[0, 2, 1, 3])
        y = op.Attention(q, k, v, pattern.Var("mask", can_match_none=True), _outputs=["y_BHSd"])
        return op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), merge)

    def check(self, context, q3, k3, v3, q_split, k_split, v_split, merge, y_BHSd, **_):
        result = MatchResult()
        node = y_BHSd.producer()
        extra = set(node.attributes) - _CARRIED
        if extra:
            return result.fail(f"Attention has attributes this fold does not carry: {sorted(extra)}")
        if len(node.outputs) > 1 and any(o.uses() for o in node.outputs[1:]):
            return result.fail("Attention's extra outputs are used")
        hq, hk, hv = (_heads(_shape_const(s), x) for s, x in ((q_split, q3), (k_split, k3), (v_split, v3)))
        if hq is None or hk is None or hv is None:
            return result.fail("head split is not a constant (B,S,H,d) reshape of a 3-D tensor")
        if hk[0] != hv[0] or hq[1] != hk[1]:
            return result.fail(f"key/value heads {hk[0]}/{hv[0]} or head dims {hq[1]}/{hk[1]} differ")
        out = _shape_const(merge)
        if out is None or len(out) != 3 or out[2] not in (hq[0] * hv[1], -1):
            return result.fail("head merge is not a constant reshape to (B,S,H·d)")
        self._heads = (hq[0], hk[0])
        self._attrs = {name: a.value for name, a in node.attributes.items()}
        return result

    def rewrite(self, op, q3, k3, v3, mask=None, **_):
        inputs = [q3, k3, v3] + ([mask] if mask is not None else [])
        return op.Attention(*inputs, q_num_heads=self._heads[0], kv_num_heads=self._heads[1], **self._attrs)


@dataclass
class FoldReport:
    sites: int = 0
    folded: int = 0
    kept_4d: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"sites": self.sites, "folded": self.folded, "kept_4d": self.kept_4d}


class FoldAttentionHeads(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.rules = pattern.RewriteRuleSet([FoldHeadsRule.rule()])
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        four_d = [n for n in model.graph if n.op_type == "Attention" and not n.attributes.get("q_num_heads")]
        report = FoldReport(sites=len(four_d))
        if four_d:
            report.folded = self.rules.apply_to_model(model)
            left = [n for n in model.graph if n.op_type == "Attention" and not n.attributes.get("q_num_heads")]
            if left:
                reasons = failure_reasons(self.rules, model)
                report.kept_4d = [{"node": n.name or "<Attention>", "reason": reasons.get(id(n), "no head split/merge around it")}
                                  for n in left]
        self.sites_changed, self.details = report.folded, report.to_dict()
        return ir.passes.PassResult(model, modified=report.folded > 0)


class UnfoldHeadsRule(pattern.RewriteRuleClassBase):
    """The inverse, for backends that only take the 4-D form: 3-D Attention(q_num_heads) →
    Reshape/Transpose to (B,H,S,d), 4-D Attention, and back to (B,S,H·d)."""

    def pattern(self, op, q3, k3, v3):
        return op.Attention(q3, k3, v3, _allow_other_inputs=True, _outputs=["y"])

    def check(self, context, q3, k3, v3, y, **_):
        result = MatchResult()
        node = y.producer()
        attrs = {name: a.value for name, a in node.attributes.items()}
        hq, hk = attrs.pop("q_num_heads", None), attrs.pop("kv_num_heads", None)
        if not hq or not hk:
            return result.fail("not the 3-D form")
        if len(node.inputs) > 4 and any(v is not None for v in node.inputs[4:]):
            return result.fail("has a KV cache")
        if len(node.outputs) > 1 and any(o.uses() for o in node.outputs[1:]):
            return result.fail("Attention's extra outputs are used")
        self._heads, self._attrs = (int(hq), int(hk)), attrs
        self._mask = node.inputs[3] if len(node.inputs) > 3 else None
        return result

    def rewrite(self, op, q3, k3, v3, **_):
        def ints(*v):  # a tensor-valued Constant: Relax's ONNX frontend cannot read value_ints
            return op.Constant(value=ir.tensor(np.array(v, np.int64)))

        def split(x, heads):
            return op.Transpose(op.Reshape(x, ints(0, 0, heads, -1)), perm=[0, 2, 1, 3])

        hq, hk = self._heads
        inputs = [split(q3, hq), split(k3, hk), split(v3, hk)] + ([self._mask] if self._mask is not None else [])
        y = op.Attention(*inputs, **self._attrs)
        return op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), ints(0, 0, -1))


def unfold_attention_heads(model: ir.Model) -> int:
    """Rewrite every 3-D Attention into the 4-D form (exact); shapes are inferred again."""
    count = pattern.RewriteRuleSet([UnfoldHeadsRule.rule()]).apply_to_model(model)
    if count:
        ir.passes.common.ShapeInferencePass()(model)
    return count
