"""Readout pruning: compute only the tokens the model's output reads, exact.

A classifier reads one token (ViT/DeiT: `last_hidden[:, 0]`), yet every exporter and backend
runs the whole last block — its query projection, attention rows, output projection and MLP — on
every token. Token i of a token-wise op (LayerNorm, MatMul by weights, elementwise) depends on
token i of its inputs only, and row i of attention on query i only (keys and values stay whole).
So the token selection moves up from the readout through the last block to its attention's
query, and everything it passes runs on the selected tokens; ~85% of one block's work for a
DeiT (7% of deit-small, 21% of the 4-block digits-vit). A constant token-mixing MatMul on the way
(the `pool` rewrite) passes the selection on through the columns its selected rows read.

Values are narrowed in place only where every consumer wants the same tokens; elsewhere (the
last block's LayerNorm output, which K and V read whole) a Gather is inserted for the narrowed
consumers. Runs after the rewrite plan (the planner's passes need the last block whole), and
folds the attention heads first (`fold-attention-heads`, as the token-reducing rewrites do).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import Emitter, attr
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads

UNARY = {"Abs", "Cast", "Ceil", "Clip", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity",
         "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Softplus",
         "Softsign", "Sqrt", "Swish", "Tanh"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"}
NORMS = {"LayerNormalization", "RMSNormalization"}



def _const(v: ir.Value | None) -> np.ndarray | None:
    return None if v is None or v.const_value is None else v.const_value.numpy()


def _tokens(v: ir.Value | None) -> int | None:
    """The static token count of a (B, S, C) value, else None."""
    if v is None or v.shape is None or len(v.shape) != 3 or not isinstance(v.shape[1], int):
        return None
    return int(v.shape[1])


def _readout(node: ir.Node) -> np.ndarray | None:
    """Token indices a Gather/Slice on axis 1 of a (B, S, C) value reads (as written), else None."""
    n = _tokens(node.inputs[0])
    if n is None:
        return None
    if node.op_type == "Gather" and attr(node, "axis", 0) in (1, -2):
        idx = _const(node.inputs[1])
        return None if idx is None else np.where(idx < 0, idx + n, idx)
    if node.op_type == "Slice" and len(node.inputs) >= 4:
        starts, ends, axes = (_const(node.inputs[i]) for i in (1, 2, 3))
        steps = _const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else np.ones(1, np.int64)
        if any(a is None or a.size != 1 for a in (starts, ends, axes, steps)) or int(axes[0]) not in (1, -2):
            return None
        return np.arange(n)[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
    return None


def _token_inputs(node: ir.Node, rows: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]] | None:
    """For a node whose (B, S, C) output is wanted at token `rows` only: [(input index, rows that
    input must provide)] for its token-carrying inputs, or None where the node mixes tokens."""
    out = node.outputs[0] if len(node.outputs) == 1 else None
    n = _tokens(out)
    if n is None:
        return None
    ins = node.inputs
    if node.op_type in UNARY or node.op_type in NORMS and attr(node, "axis", -1) in (-1, 2):
        return [(0, rows)] if _tokens(ins[0]) == n else None
    if node.op_type in BINARY:
        carrying = []
        for i, v in enumerate(ins):
            if v is None or v.shape is None:
                return None
            if _tokens(v) == n:
                carrying.append((i, rows))
            elif len(v.shape) >= 2 and v.shape[-2] != 1:
                return None  # broadcasts over tokens in a form we do not narrow
        return carrying
    if node.op_type == "MatMul" and ins[1] is not None and ins[1].shape is not None and len(ins[1].shape) == 2:
        return [(0, rows)] if _tokens(ins[0]) == n else None
    if node.op_type == "MatMul" and _const(ins[0]) is not None and _const(ins[0]).ndim == 2 and _tokens(ins[1]):
        read = np.flatnonzero(np.abs(_const(ins[0])[list(rows)]).sum(axis=0))  # token-mixing: the columns read
        return [(1, tuple(int(c) for c in read))]
    if node.op_type == "Attention" and _attention_ok(node):
        return [(0, rows)] if _tokens(ins[0]) == n else None
    return None


def _attention_ok(node: ir.Node) -> bool:
    """Row i of this Attention depends on query i only: 3-D, not causal, no KV cache, and a mask
    (if any) that is static in its query axis."""
    if not attr(node, "q_num_heads") or attr(node, "is_causal", 0) or len(node.outputs) > 1 and any(
            o.uses() for o in node.outputs[1:]):
        return False
    if len(node.inputs) > 4 and any(v is not None for v in node.inputs[4:]):
        return False
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    return mask is None or (mask.shape is not None and len(mask.shape) in (2, 4) and isinstance(mask.shape[-2], int))


def _narrow_shape(value: ir.Value, like: ir.Value, rows: int, axis: int) -> ir.Value:
    """`value` gets `like`'s shape and dtype with `rows` on `axis`."""
    dims = list(like.shape)
    dims[axis] = rows
    value.shape, value.dtype = ir.Shape(dims), like.dtype
    return value


class ReadoutPrune(ir.passes.InPlacePass):
    """No settings. `sites_changed`: how many nodes now run on fewer tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        if any(_readout(n) is not None for n in graph):
            FoldAttentionHeads()(model)  # tokens on axis 1 of every value the selection passes (as the token passes)
        graph.sort()
        outputs = set(graph.outputs)
        wants: dict[ir.Value, list[tuple[ir.Node, int, tuple[int, ...]]]] = {}
        readouts = []
        for node in graph:
            idx = _readout(node)
            if idx is not None:
                readouts.append((node, idx))
        by_value: dict[ir.Value, list] = {}
        for node, idx in readouts:
            by_value.setdefault(node.inputs[0], []).append((node, idx))
        roots = {}
        for v, reads in by_value.items():
            if v in outputs or len(reads) != len(v.uses()):
                continue
            rows = tuple(sorted({int(i) for _, idx in reads for i in np.ravel(idx)}))
            if len(rows) < _tokens(v):
                roots[v] = (rows, reads)
                wants[v] = [(node, 0, rows) for node, _ in reads]
        narrowed: dict[ir.Value, tuple[int, ...]] = {}
        cone: list[ir.Node] = []
        boundaries = 0
        for node in reversed(list(graph)):
            for v in node.outputs:
                self._decide(v, wants, outputs, narrowed)
            out = node.outputs[0] if node.outputs else None
            if out is None or out not in narrowed:
                continue
            cone.append(node)
            for i, rows in _token_inputs(node, narrowed[out]):
                wants.setdefault(node.inputs[i], []).append((node, i, rows))
        for v in [v for v in roots if v not in narrowed]:  # its producer mixes tokens: leave that readout be
            del roots[v], wants[v]
        if not cone:
            self.details = {"narrowed_nodes": 0, "reason": "no readout of a subset of tokens reaches a token-wise op"}
            return ir.passes.PassResult(model, modified=False)
        for v, pending in wants.items():  # values that could not be narrowed: gather for the wanting uses
            for rows in {r for _, _, r in pending}:
                boundaries += 1
                self._gather(model, v, rows, [(n, i) for n, i, r in pending if r == rows])
        for node in cone:
            self._narrow_side_inputs(model, node, narrowed[node.outputs[0]])
        for v, (rows, reads) in roots.items():
            pos = {r: k for k, r in enumerate(rows)}
            for node, idx in reads:
                e = Emitter(model, f"{node.name or 'readout'}_pos")
                node.replace_input_with(1, e.const(np.vectorize(pos.get)(idx).astype(np.int64)) if node.op_type == "Gather"
                                        else e.const(np.array([pos[int(i)] for i in idx], np.int64)))
                if node.op_type == "Slice":
                    node.op_type = "Gather"
                    node.resize_inputs(2)
                    node.attributes["axis"] = ir.AttrInt64("axis", 1)
        for v, rows in narrowed.items():  # set, not re-inferred: ONNX inference would rename the symbolic batch
            _narrow_shape(v, v, len(rows), 1)
        self.sites_changed = len(cone)
        self.details = {"narrowed_nodes": len(cone), "gathers": boundaries,
                        "attention_sites": sum(1 for n in cone if n.op_type == "Attention"),
                        "tokens_read": sorted({len(r) for r, _ in roots.values()})}
        return ir.passes.PassResult(model, modified=True)

    @staticmethod
    def _decide(v: ir.Value, wants: dict, outputs: set, narrowed: dict) -> None:
        """Narrow `v` in place when every use of it wants the same rows and its producer can make
        just those rows; otherwise its wanting uses stay in `wants` and get a Gather."""
        pending = wants.get(v)
        if not pending or v in outputs or len(pending) != len(v.uses()) or len({r for _, _, r in pending}) != 1:
            return
        producer = v.producer()
        if producer is None or len(producer.outputs) != 1 or _token_inputs(producer, pending[0][2]) is None:
            return
        narrowed[v] = pending[0][2]
        del wants[v]

    @staticmethod
    def _gather(model: ir.Model, v: ir.Value, rows: tuple[int, ...], uses: list[tuple[ir.Node, int]]) -> None:
        e = Emitter(model, f"{v.name or 'tokens'}_readout")
        out = _narrow_shape(e.op("Gather", v, e.const(np.array(rows, np.int64)), axis=1), v, len(rows), 1)
        anchor = v.producer()
        if anchor is None:
            model.graph.insert_before(next(iter(model.graph)), list(e.tape.nodes))
        else:
            e.insert_after(anchor)
        for node, i in uses:
            node.replace_input_with(i, out)

    @staticmethod
    def _narrow_side_inputs(model: ir.Model, node: ir.Node, rows: tuple[int, ...]) -> None:
        """Inputs that follow the output's rows without carrying tokens themselves: the constant
        mixing matrix of a token-mixing MatMul, the query axis of an attention mask."""
        e = Emitter(model, f"{node.name or node.op_type}_readout")
        if node.op_type == "MatMul" and node.inputs[0].const_value is not None:
            m = node.inputs[0].const_value.numpy()[list(rows)]
            node.replace_input_with(0, e.const(np.ascontiguousarray(m[:, np.flatnonzero(np.abs(m).sum(axis=0))])))
        mask = node.inputs[3] if node.op_type == "Attention" and len(node.inputs) > 3 else None
        if mask is not None and mask.shape[-2] != 1:
            axis = len(mask.shape) - 2
            picked = e.op("Gather", mask, e.const(np.array(rows, np.int64)), axis=axis)
            node.replace_input_with(3, _narrow_shape(picked, mask, len(rows), axis))
            model.graph.insert_before(node, list(e.tape.nodes))
