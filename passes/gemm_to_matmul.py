"""Token projections written as Gemm → MatMul (+ Add) on the tokens' (B, S, K) layout, exact.

GPT-2's Conv1D (`addmm` on `x.view(-1, K)`) exports as Reshape → Gemm → Reshape, where every
nn.Linear model exports MatMul + Add on (B, S, K). The quantizer, SmoothQuant and the token
passes (readout pruning) look for that form, so GPT-2 got no int8 at all ("no MatMul with
constant weights"). A Gemm by a constant weight whose A flattens (B, S, K) or (B, S, heads, d)
tokens, and whose every consumer is a Reshape with a fixed target, becomes MatMul(tokens,
alpha·op(B)) + beta·C: MatMul broadcasts over the leading dims, and the consumers' Reshapes see
the same elements in the same order (a 0 "copy this dim" entry would read other dims: refused).
Other Gemms (a classifier head on (B, C)) stay, and stay float under int8 as before.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes._linear import const
from edgeattn.passes._tokens import Emitter, attr, redirect_uses



def _weight(node: ir.Node) -> np.ndarray:
    """alpha · op(B), as the (K, N) right operand of a MatMul."""
    b = const(node.inputs[1])
    return (b.T if attr(node, "transB", 0) else b) * np.asarray(attr(node, "alpha", 1.0), b.dtype)


def _why_not(node: ir.Node) -> str | None:
    b = const(node.inputs[1])
    if b is None or b.ndim != 2:
        return "B is not a constant 2-D weight"
    if attr(node, "transA", 0):
        return "transA"
    c = node.inputs[2] if len(node.inputs) > 2 else None
    if c is not None and const(c) is None:
        return "C is not constant"
    if c is not None and const(c).ndim == 2 and const(c).shape[0] != 1:
        return "C has a bias per row"
    return None


def _unflattened(a: ir.Value, k: int, gemm: ir.Node, model: ir.Model) -> ir.Value | None:
    """The (B, S, K) tokens that `a` = Reshape(x, [-1, K]) flattens (x: (B, S, K) or (B, S, heads,
    d)), when the Gemm's output feeds Reshapes only (which do not care how many leading dims
    they receive)."""
    producer = a.producer()
    if producer is None or producer.op_type != "Reshape":
        return None
    x, target = producer.inputs[0], const(producer.inputs[1])
    if x.shape is None or len(x.shape) < 3 or target is None or target.shape != (2,) or target[1] != k:
        return None
    lead, inner = list(x.shape[:2]), list(x.shape[2:])
    rows = int(np.prod(lead)) if all(isinstance(d, int) for d in lead) else None
    if not all(isinstance(d, int) for d in inner) or int(np.prod(inner)) != k or target[0] not in (-1, rows):
        return None  # not a flattening of (B, S, ...) into (B·S, K)
    uses = gemm.outputs[0].uses()
    if not uses or gemm.outputs[0] in model.graph.outputs or not all(_fixed_reshape(u) for u in uses):
        return None
    if len(inner) == 1:
        return x
    # (B, S, heads, d) → (B, S, K): the head merge GPT-2 folds into its flattening Reshape
    e = Emitter(model, f"{producer.name or 'flat'}_tokens")
    merged = e.op("Reshape", x, e.ints(0, 0, k))
    merged.shape, merged.dtype = ir.Shape([*x.shape[:2], k]), x.dtype
    e.insert_after(producer)
    return merged


def _fixed_reshape(use) -> bool:
    """A Reshape whose target does not depend on its input's dims: a constant without the 0
    ("copy this input dim") entries, which would read the unflattened dims instead."""
    node = use.node
    if node.op_type != "Reshape" or use.idx != 0:
        return False
    target = const(node.inputs[1])
    return target is not None and (bool(attr(node, "allowzero", 0)) or not (target == 0).any())


class GemmToMatMul(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.sites_changed = 0
        self.details: dict = {"rewritten": 0, "skipped": []}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for node in [n for n in model.graph.all_nodes() if n.op_type == "Gemm" and n.domain in ("", "ai.onnx")]:
            why = _why_not(node)
            w = None if why else _weight(node)
            x = None if why else _unflattened(node.inputs[0], w.shape[0], node, model)
            if x is None:
                self.details["skipped"].append({"node": node.name, "reason": why or "not a projection of flattened (B, S, K) tokens"})
                continue
            self._rewrite(model, node, x, w)
            self.sites_changed += 1
        self.details["rewritten"] = self.sites_changed
        return ir.passes.PassResult(model, modified=self.sites_changed > 0)

    @staticmethod
    def _rewrite(model: ir.Model, node: ir.Node, x: ir.Value, w: np.ndarray) -> None:
        y = node.outputs[0]
        c = node.inputs[2] if len(node.inputs) > 2 else None
        e = Emitter(model, f"{node.name or 'gemm'}_matmul")
        out = e.op("MatMul", x, e.const(np.ascontiguousarray(w)))
        if c is not None:
            bias = const(c) * np.asarray(attr(node, "beta", 1.0), w.dtype)
            out = e.op("Add", out, e.const(np.ascontiguousarray(bias.reshape(bias.shape[-1:]) if bias.ndim == 2 else bias)))
        out.shape, out.dtype = ir.Shape([*x.shape[:-1], w.shape[1]]), y.dtype
        new_nodes = set(e.tape.nodes)
        e.insert_after(node)
        redirect_uses(y, out, new_nodes)
        model.graph.remove(node, safe=True)
