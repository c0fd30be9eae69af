"""Decompose attention: canonical ONNX `Attention` (opset 23, 4-D) → MatMul/Softmax/MatMul.

The last stage of the staged fusion in DESIGN.md ("a final pass expands anything a target
cannot run"). The expansion is written in the shape that backends' own attention fusions
recognise — that of OpenVINO's `ScaledDotProductAttentionDecomposition` output, which its CPU
plugin tokenizes into one fused MHA subgraph (checked on vit-tiny, OpenVINO 2026.4):

    q_BHSd ─ Mul(scale) ─┐
    k_BHSd ─ Transpose ──┴ MatMul ─ [Add(bias_BHSS)] ─ Softmax(-1) ─ MatMul(·, v_BHSd) ─ [NaN guard]

The scale multiplies q (B·H·S·d elements, not B·H·S·S). The additive bias is the float mask,
`Where(mask, 0, -inf)` for a boolean mask, a lower-triangular causal bias (a constant when both
sequence lengths are static, else built with `Trilu`), or the sum of a causal bias and a mask.
Where the bias can mask a whole query row (-inf everywhere), Softmax gives NaN; `Attention`
defines that row as 0, so a `Where(IsNaN(y), 0, y)` guard on the output (B·H·S·d, outside the
MatMul→Softmax→MatMul chain so fusion still applies) restores it — the same guard OpenVINO's
ONNX frontend adds. 3-D sites (`q_num_heads`) are first unfolded to 4-D. Features the expansion does not cover (KV cache, grouped-query
heads, softcap, extra outputs) leave the node untouched, with the reason in `details`.

Glossary of value-name suffixes: BHSd = (batch, heads, seq, head_dim); BHSS = (…, q_seq, kv_seq).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter._basics import MatchResult

from edgeattn.passes._rules import failure_reasons
from edgeattn.passes._tokens import attr
from edgeattn.passes.fold_attention_heads import unfold_attention_heads



def _dim(value: ir.Value, i: int):
    """Dimension i of value's static shape: an int, a symbolic name, or None when unknown."""
    if value.shape is None or len(value.shape) <= i:
        return None
    d = value.shape[i]
    if isinstance(d, int):
        return d
    return None if d is None or getattr(d, "value", None) is None else str(d.value)


def _same(a, b) -> bool:
    return a is not None and a == b


_FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def _used(v: ir.Value | None, graph: ir.Graph) -> bool:
    return v is not None and (bool(v.uses()) or v in graph.outputs)


def unsupported_reason(node: ir.Node, graph: ir.Graph | ir.Function) -> str | None:
    """Why this Attention node cannot be decomposed exactly, or None if it can."""
    inputs = list(node.inputs) + [None] * (7 - len(node.inputs))
    query, key, value, mask, past_key, past_value, nonpad = inputs[:7]
    if past_key is not None or past_value is not None:
        return "Attention has past_key/past_value inputs (KV cache); not decomposed"
    if nonpad is not None:
        return "Attention has a nonpad_kv_seqlen input; not decomposed"
    if any(_used(v, graph) for v in node.outputs[1:]):
        return "Attention's present_key/present_value/qk outputs are used; not decomposed"
    if query is None or key is None or value is None:
        return "Attention is missing query/key/value"
    ranks = [len(v.shape) if v.shape is not None else None for v in (query, key, value)]
    if ranks != [4, 4, 4]:
        return f"attention operands are not 4-D (ranks q/k/v {ranks}); only (B,H,S,d) is decomposed"
    if float(attr(node, "softcap", 0.0)) != 0.0:
        return "softcap is set; not decomposed"
    if attr(node, "q_num_heads", None) is not None or attr(node, "kv_num_heads", None) is not None:
        return "q_num_heads/kv_num_heads set on 4-D inputs; not decomposed"
    hq, hk, hv = _dim(query, 1), _dim(key, 1), _dim(value, 1)
    if not (_same(hq, hk) and _same(hk, hv)):
        return (f"query/key/value heads not provably equal ({hq}, {hk}, {hv}); "
                "grouped-query attention is not decomposed")
    if query.dtype not in _FLOAT_TYPES:
        return f"query dtype {query.dtype} is not a float type"
    if attr(node, "scale", None) is None and not isinstance(_dim(query, 3), int):
        return "no scale attribute and the head dimension is symbolic"
    if mask is not None:
        if mask.shape is None or not 1 <= len(mask.shape) <= 4:
            return f"attn_mask rank unknown or > 4 (shape {mask.shape})"
        if not _same(_dim(mask, len(mask.shape) - 1), _dim(key, 2)):
            # Attention pads a shorter mask with -inf; an Add would broadcast it instead.
            return (f"attn_mask's last dim {_dim(mask, len(mask.shape) - 1)} is not provably "
                    f"the key length {_dim(key, 2)}")
        if mask.dtype != ir.DataType.BOOL and mask.dtype != query.dtype:
            return f"attn_mask dtype {mask.dtype} is neither bool nor the query dtype"
    return None


class AttentionDecomposeRule(pattern.RewriteRuleClassBase):
    """Attention(q, k, v[, attn_mask]) → softmax(q·s·kᵀ + bias)·v, 4-D, no KV cache."""

    def pattern(self, op, query, key, value):
        return op.Attention(query, key, value, _allow_other_inputs=True)

    def check(self, context, query, key, value, **_):
        result = MatchResult()
        node = context.root
        reason = unsupported_reason(node, context.graph_or_function)
        if reason:
            return result.fail(reason)
        scale = attr(node, "scale", None)
        self._scale = float(scale) if scale is not None else 1.0 / math.sqrt(_dim(query, 3))
        self._causal = bool(attr(node, "is_causal", 0))
        self._mask = node.inputs[3] if len(node.inputs) > 3 else None
        return result

    def rewrite(self, op, query, key, value, **_):
        dtype = query.dtype.numpy()
        q_scaled = op.Mul(query, op.Constant(value=ir.tensor(np.array(self._scale, dtype))))
        key_t = op.Transpose(key, perm=[0, 1, 3, 2])
        scores = op.MatMul(q_scaled, key_t)
        zero = np.array(0.0, dtype)
        neg_inf = np.array(-np.inf, dtype)
        bias, may_mask_rows = self._causal_bias(op, query, key, dtype) if self._causal else (None, False)
        mask = self._mask
        if mask is not None:
            if mask.dtype == ir.DataType.BOOL:
                mask = op.Where(mask, op.Constant(value=ir.tensor(zero)), op.Constant(value=ir.tensor(neg_inf)))
                may_mask_rows = True
            else:
                may_mask_rows = may_mask_rows or not _finite_constant(mask)
            bias = mask if bias is None else op.Add(bias, mask)
        if bias is not None:
            scores = op.Add(scores, bias)
        probs = op.Softmax(scores, axis=-1)
        out = op.MatMul(probs, value)
        if may_mask_rows:
            # A fully masked row softmaxes to NaN; Attention defines it as 0.
            out = op.Where(op.IsNaN(out), op.Constant(value=ir.tensor(zero)), out)
        return out

    @staticmethod
    def _causal_bias(op, query, key, dtype):
        """Top-left aligned causal bias (q_seq, kv_seq): 0 where key j <= query i, else -inf."""
        sq, sk = _dim(query, 2), _dim(key, 2)
        if isinstance(sq, int) and isinstance(sk, int):
            keep = np.tril(np.ones((sq, sk), bool))
            bias = np.where(keep, 0.0, -np.inf).astype(dtype)
            # Row i keeps key 0 whenever sk >= 1, so no row is fully masked.
            return op.Constant(value=ir.tensor(bias)), False
        # Dynamic lengths: -inf strictly above the diagonal, 0 on and below it, in one Trilu.
        shape = op.Concat(op.Shape(query, start=2, end=3), op.Shape(key, start=2, end=3), axis=0)
        neg_inf = op.ConstantOfShape(shape, value=ir.tensor(np.array([-np.inf], dtype)))
        bias = op.Trilu(neg_inf, op.Constant(value=ir.tensor(np.array(1, np.int64))), upper=1)
        return bias, False


def _finite_constant(v: ir.Value) -> bool:
    arr = None if v.const_value is None else v.const_value.numpy()
    return arr is not None and bool(np.all(np.isfinite(arr)))


@dataclass
class DecomposeReport:
    """`sites` = Attention nodes found, `decomposed` = expanded by this run, `skipped` = left alone, why."""

    sites: int = 0
    decomposed: int = 0
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"sites": self.sites, "decomposed": self.decomposed, "skipped": self.skipped}


def _attention_nodes(graph: ir.Graph) -> list[ir.Node]:
    return [n for n in graph if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]


class DecomposeAttention(ir.passes.InPlacePass):
    """Expand every decomposable ONNX `Attention` into MatMul/Softmax/MatMul; `self.report` says what happened."""

    def __init__(self) -> None:
        super().__init__()
        self.rules = pattern.RewriteRuleSet([AttentionDecomposeRule.rule()])
        self.report = DecomposeReport()
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        sites = _attention_nodes(model.graph)
        report = DecomposeReport(sites=len(sites))
        if sites:
            unfold_attention_heads(model)  # 3-D (q_num_heads) sites → 4-D first
            report.decomposed = self.rules.apply_to_model(model)
            leftover = _attention_nodes(model.graph)
            report.skipped = self._explain(model, leftover) if leftover else []
        self.report = report
        self.sites_changed, self.details = report.decomposed, report.to_dict()
        return ir.passes.PassResult(model, modified=report.decomposed > 0)

    def _explain(self, model: ir.Model, leftover: list[ir.Node]) -> list[dict]:
        """Re-run the rule with a tracer (no changes, every site failed) to collect the reasons."""
        reasons = failure_reasons(self.rules, model)
        return [{"node": n.name or "<unnamed Attention>",
                 "reason": unsupported_reason(n, model.graph) or reasons.get(id(n), "not matched")}
                for n in leftover]
