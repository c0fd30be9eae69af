"""Constant-weight projections (x → MatMul(W) [→ Add(b)]) and calibration statistics, shared by
the passes that edit weights on measured data (head pruning, SmoothQuant, INT8 placement)."""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import onnx_ir as ir


def const(v: ir.Value | None) -> np.ndarray | None:
    return None if v is None or v.const_value is None else v.const_value.numpy()


class Projection:
    """x → MatMul(W) [→ Add(b)] feeding (or fed by) an attention site; W, b constant."""

    def __init__(self, matmul: ir.Node, add: ir.Node | None) -> None:
        self.matmul, self.add = matmul, add
        self.weight = const(matmul.inputs[1])
        self.bias = None if add is None else next((const(i) for i in add.inputs if const(i) is not None), None)

    def set_weight(self, model: ir.Model, w: np.ndarray) -> None:
        replace_const(model, self.matmul, 1, w)
        self.weight = w

    def set_bias(self, model: ir.Model, b: np.ndarray) -> None:
        idx = next(i for i, v in enumerate(self.add.inputs) if const(v) is not None)
        replace_const(model, self.add, idx, b)
        self.bias = b


def replace_const(model: ir.Model, node: ir.Node, idx: int, array: np.ndarray) -> None:
    """A fresh initializer for node.inputs[idx] (the old one may be shared: exports deduplicate
    equal weights, e.g. every LayerNorm of a freshly initialised model)."""
    old = node.inputs[idx]
    t = ir.tensor(np.ascontiguousarray(array))  # with shape and type: FLOP counts and later passes read them
    value = ir.Value(name=f"{old.name}_edit_{len(model.graph.initializers)}", shape=ir.Shape(t.shape),
                     type=ir.TensorType(t.dtype), const_value=t)
    model.graph.register_initializer(value)
    node.replace_input_with(idx, value)


def input_projection(v: ir.Value) -> Projection | None:
    node = v.producer()
    add = None
    if node is not None and node.op_type == "Add":
        add = node
        node = next((i.producer() for i in node.inputs if i is not None and const(i) is None), None)
    if node is None or node.op_type != "MatMul" or const(node.inputs[1]) is None:
        return None
    return Projection(node, add)


def output_projection(v: ir.Value) -> Projection | None:
    users = [u.node for u in v.uses()]
    if len(users) != 1 or users[0].op_type != "MatMul" or const(users[0].inputs[1]) is None:
        return None
    mm = users[0]
    nxt = [u.node for u in mm.outputs[0].uses()]
    add = nxt[0] if len(nxt) == 1 and nxt[0].op_type == "Add" and any(const(i) is not None for i in nxt[0].inputs) else None
    return Projection(mm, add)


@contextlib.contextmanager
def quiet_ort_logs():
    """ORT sessions made inside (by tools that take no session options: the calibrators, the
    ORT-format converter) log errors only: they warn about every unused initializer."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)  # ORT's default, warnings


def ort_unoptimized(model):
    """An ORT CPU session with graph optimizations off: the graph's own numbers."""
    import onnxruntime as ort

    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def reduce_values(model: ir.Model, values: list[ir.Value], calibration: list[dict],
                  reduce: Callable[[np.ndarray], np.ndarray],
                  tokens: Callable[[dict], np.ndarray] | None = None) -> list[list[np.ndarray]]:
    """Run `model` (ORT, optimizations off) on each calibration feed with `values` exposed as
    outputs; returns reduce(value as (tokens, channels)) per value per feed. `tokens(feed)`: which
    rows count (a flat boolean per token, e.g. not padding); default all."""
    proto = ir.to_proto(model)
    known = {o.name for o in proto.graph.output}
    for v in values:
        if v.name not in known:
            proto.graph.output.add().name = v.name
    sess = ort_unoptimized(proto)
    names = [v.name for v in values]
    rows: list[list[np.ndarray]] = [[] for _ in values]
    for feeds in calibration:
        keep = None if tokens is None else tokens(feeds)
        for i, out in enumerate(sess.run(names, feeds)):
            flat = out.reshape(-1, out.shape[-1]).astype(np.float64)
            rows[i].append(reduce(flat if keep is None else flat[keep]))
    return rows


def channel_stats(model: ir.Model, values: list[ir.Value], calibration: list[dict],
                  tokens: Callable[[dict], np.ndarray] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance of each value over the calibration tokens (`tokens` as in
    reduce_values)."""
    rows = reduce_values(model, values, calibration, lambda x: x, tokens)
    return [(np.concatenate(r).mean(0), np.concatenate(r).var(0)) for r in rows]


def channel_absmax(model: ir.Model, values: list[ir.Value], calibration: list[dict]) -> list[np.ndarray]:
    """Per-channel max |x| of each value over all calibration tokens."""
    rows = reduce_values(model, values, calibration, lambda x: np.abs(x).max(0))
    return [np.max(r, axis=0) for r in rows]
