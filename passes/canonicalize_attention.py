"""Canonicalize attention: every exported shape of scaled-dot-product attention → ONNX `Attention` (opset 23).

Stage 1 of the staged fusion in DESIGN.md: decomposed MatMul/Softmax attention, as written
by the dynamo exporter (opset 18–20, SDPA decomposed with an IsNaN guard), the legacy
TorchScript exporter (opset 17) and Hugging Face eager code, becomes one standard op that
ORT and OpenVINO already run. Scale, causality and additive masks/biases carry over; a
site the rule cannot prove equivalent is left untouched and its failure reason reported.

Glossary of value-name suffixes: BHSd = (batch, heads, seq, head_dim); BSHd likewise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter._basics import MatchResult

from edgeattn.passes._opset import ensure_opset
from edgeattn.passes._rules import failure_reasons

ATTENTION_OPSET = 23
# Anything at or below this is treated as "minus infinity" in an additive mask.
_NEG_INF_THRESHOLD = -1e4


def _scale_of(tag: str, value: ir.Value | None) -> float | None:
    """Scalar factor a Mul/Div by `value` contributes, or None if it is not a constant scalar."""
    if tag == "none":
        return 1.0
    if value is None or value.const_value is None:
        return None
    arr = value.const_value.numpy()
    if arr.size != 1:
        return None
    s = float(arr.reshape(()))
    return s if tag == "mul" else 1.0 / s


def _const_array(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _mask_values(value: ir.Value | None) -> np.ndarray | None:
    """The constant values of a mask, also through an Expand (which only repeats them): with a
    symbolic batch the exporter broadcasts a constant mask to (batch, 1, q, kv) at run time."""
    arr = _const_array(value)
    if arr is not None or value is None:
        return arr
    producer = value.producer()
    if producer is not None and producer.op_type == "Expand":
        return _const_array(producer.inputs[0])
    return None


def _is_causal_mask(mask: np.ndarray, boolean: bool) -> bool:
    """True if mask (bool: True=keep; float: additive) is exactly the lower-triangular causal mask."""
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]:
        return False
    n = mask.shape[-1]
    tril = np.tril(np.ones((n, n), dtype=bool))
    keep = mask.astype(bool) if boolean else mask > _NEG_INF_THRESHOLD
    if not boolean and not np.all((mask == 0) | (mask <= _NEG_INF_THRESHOLD)):
        return False  # a real bias, not just a mask
    return bool(np.all(keep == np.broadcast_to(tril, keep.shape)))


def _same_dim(a: ir.Value, ai: int, b: ir.Value, bi: int) -> bool:
    if a.shape is None or b.shape is None or len(a.shape) < abs(ai) or len(b.shape) <= bi:
        return False
    da, db = a.shape[ai], b.shape[bi]
    return da == db if isinstance(da, int) and isinstance(db, int) else (da is not None and str(da) == str(db))


class AttentionRule(pattern.RewriteRuleClassBase):
    """softmax(q·kᵀ·s + mask)·v in any of its exported spellings → Attention(q, k, v, mask)."""

    def pattern(self, op, query, key, value, mask, q_scale, k_scale, qk_scale, nan_fill):
        # The transposed key appears directly (BHSd→BHdS), through a 3-D round trip
        # (dynamo's decomposition), or fused with the head split (BSHd→BHdS).
        key_t = pattern.OrValue(
            [
                op.Transpose(key, perm=[0, 1, 3, 2]),
                op.Reshape(op.Transpose(op.Reshape(key, pattern.ANY_VALUE), perm=[0, 2, 1]), pattern.ANY_VALUE),
                op.Transpose(key, perm=[0, 2, 3, 1]),
            ],
            tag_var="key_layout",
            tag_values=["BHSd", "BHSd", "BSHd"],
        )
        query = pattern.OrValue(
            [op.Mul(query, q_scale), op.Div(query, q_scale), query],
            tag_var="q_tag", tag_values=["mul", "div", "none"],
        )
        key_t = pattern.OrValue(
            [op.Mul(key_t, k_scale), op.Div(key_t, k_scale), key_t],
            tag_var="k_tag", tag_values=["mul", "div", "none"],
        )
        scores = op.MatMul(query, key_t)
        scores = pattern.OrValue(
            [op.Mul(scores, qk_scale), op.Div(scores, qk_scale), scores],
            tag_var="qk_tag", tag_values=["mul", "div", "none"],
        )
        scores = pattern.OrValue([op.Add(scores, mask), scores], tag_var="has_mask", tag_values=[True, False])
        probs = op.Softmax(scores, axis=-1)
        # SDPA's decomposition zeroes NaN rows (fully masked queries); Attention does the same.
        probs = pattern.OrValue([op.Where(op.IsNaN(probs), nan_fill, probs), probs])
        return op.MatMul(probs, value)

    def check(self, context, query, key, value, key_layout, q_tag, k_tag, qk_tag, has_mask,
              mask=None, q_scale=None, k_scale=None, qk_scale=None, nan_fill=None, **_):
        result = MatchResult()
        if nan_fill is not None:
            fill = _const_array(nan_fill)
            if fill is None or fill.size != 1 or float(fill.reshape(())) != 0.0:
                return result.fail("the NaN guard after Softmax does not fill with a constant 0")
        q_shape, k_shape, v_shape = query.shape, key.shape, value.shape
        if q_shape is None or k_shape is None or v_shape is None:
            return result.fail("query/key/value shapes unknown (shape inference did not reach them)")
        if not (len(q_shape) == len(k_shape) == len(v_shape) == 4):
            return result.fail(f"attention operands are not 4-D (q {q_shape}, k {k_shape}, v {v_shape})")
        head_dim = q_shape[3]
        k_head_dim = k_shape[3]
        if isinstance(head_dim, int) and isinstance(k_head_dim, int) and head_dim != k_head_dim:
            return result.fail(f"query head dim {head_dim} != key head dim {k_head_dim}")
        if key_layout == "BHSd" and isinstance(q_shape[1], int) and isinstance(k_shape[1], int):
            if q_shape[1] % k_shape[1]:
                return result.fail(f"query heads {q_shape[1]} not a multiple of key heads {k_shape[1]}")
        factors = [_scale_of(q_tag, q_scale), _scale_of(k_tag, k_scale), _scale_of(qk_tag, qk_scale)]
        if any(f is None for f in factors):
            return result.fail("attention scale is not a constant scalar")
        self._scale = math.prod(factors)
        if not isinstance(head_dim, int):
            return result.fail("head dimension is symbolic; the scale cannot be checked")
        self._mask_kind = self._classify_mask(mask if has_mask else None)
        if self._mask_kind is None:
            return result.fail("mask is not broadcastable to (batch, heads, q_seq, kv_seq)")
        return result

    def _classify_mask(self, mask: ir.Value | None) -> tuple[str, ir.Value | None] | None:
        """('none'|'causal'|'bool'|'float', value to pass as attn_mask)."""
        if mask is None:
            return ("none", None)
        if mask.shape is not None and len(mask.shape) > 4:
            return None
        producer = mask.producer()
        # Where(cond, 0, -inf) is the exporter's bool→additive conversion: pass cond directly.
        if producer is not None and producer.op_type == "Where" and len(producer.inputs) == 3:
            zero, neg = _const_array(producer.inputs[1]), _const_array(producer.inputs[2])
            cond = producer.inputs[0]
            if (zero is not None and neg is not None and zero.size == 1 and neg.size == 1
                    and float(zero.reshape(())) == 0.0 and float(neg.reshape(())) <= _NEG_INF_THRESHOLD):
                cond_arr = _mask_values(cond)
                if cond_arr is not None and _is_causal_mask(cond_arr, boolean=True):
                    return ("causal", None)
                if cond_arr is not None and cond_arr.all():
                    return ("none", None)
                return ("bool", cond)
        arr = _mask_values(mask)
        if arr is not None:
            if not np.any(arr):
                return ("none", None)
            if _is_causal_mask(arr, boolean=arr.dtype == np.bool_):
                return ("causal", None)
        return ("bool" if mask.dtype == ir.DataType.BOOL else "float", mask)

    def rewrite(self, op, query, key, value, key_layout, **_):
        kind, mask_value = self._mask_kind
        if key_layout == "BSHd":
            key = op.Transpose(key, perm=[0, 2, 1, 3])
        if mask_value is not None and not _same_dim(mask_value, -2, query, 2):
            # ONNX allows any broadcastable mask; ORT's kernel insists on the query length at
            # dim -2, so broadcast a (…, 1, kv) padding mask to (…, q, kv) explicitly.
            rank = len(mask_value.shape) if mask_value.shape is not None else 4
            q_len = op.Shape(query, start=2, end=3)
            ones = op.Constant(value_ints=[1])
            target = op.Concat(*([ones] * (rank - 2)), q_len, ones, axis=0) if rank > 2 else op.Concat(q_len, ones, axis=0)
            mask_value = op.Expand(mask_value, target)
        inputs = [query, key, value] + ([mask_value] if mask_value is not None else [])
        return op.Attention(*inputs, scale=float(self._scale), is_causal=int(kind == "causal"))


@dataclass
class CanonicalizeReport:
    """What the pass found: `sites` = attention blocks found, `canonicalized` = rewritten by this run."""

    sites: int = 0
    already_canonical: int = 0
    canonicalized: int = 0
    unmatched: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"sites": self.sites, "already_canonical": self.already_canonical,
                "canonicalized": self.canonicalized, "unmatched": self.unmatched}


def _softmax_sites(graph: ir.Graph) -> list[ir.Node]:
    """Softmax nodes whose probabilities feed a MatMul (directly or through the NaN guard)."""
    sites = []
    for node in graph:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            continue
        frontier, seen = [node.outputs[0]], 0
        while frontier and seen < 4:
            v = frontier.pop()
            seen += 1
            users = [u for u, _ in v.uses()]
            if any(u.op_type == "MatMul" for u in users):
                sites.append(node)
                break
            frontier += [u.outputs[0] for u in users if u.op_type in ("Where", "IsNaN", "Cast", "Dropout")]
    return sites


def _count_attention(graph: ir.Graph) -> int:
    return sum(1 for n in graph if n.op_type == "Attention" and n.domain in ("", "ai.onnx"))


class CanonicalizeAttention(ir.passes.InPlacePass):
    """Rewrite every attention block to ONNX `Attention`; `self.report` says what happened."""

    def __init__(self) -> None:
        super().__init__()
        self.rules = pattern.RewriteRuleSet([AttentionRule.rule()])
        self.report = CanonicalizeReport()
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        already = _count_attention(model.graph)
        candidates = _softmax_sites(model.graph)
        report = CanonicalizeReport(sites=already + len(candidates), already_canonical=already)
        if candidates:
            ensure_opset(model, ATTENTION_OPSET)
            report.canonicalized = self.rules.apply_to_model(model)
            leftover = _softmax_sites(model.graph)
            report.unmatched = self._explain(model, leftover) if leftover else []
        self.report = report
        self.sites_changed, self.details = report.canonicalized, report.to_dict()
        return ir.passes.PassResult(model, modified=report.canonicalized > 0)

    def _explain(self, model: ir.Model, leftover: list[ir.Node]) -> list[dict]:
        """Re-run the rule with a tracer (no changes) to collect why each leftover site failed."""
        reasons = failure_reasons(self.rules, model)
        out = []
        for node in leftover:
            reason = reasons.get(id(node), "no MatMul(Softmax(MatMul(q, kᵀ)), v) structure around this Softmax")
            out.append({"node": node.name or "<unnamed Softmax>", "reason": reason})
        return out
