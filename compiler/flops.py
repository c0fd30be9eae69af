"""FLOP count of an ONNX graph at given example dims: the GEMM-like ops (MatMul, Gemm, Conv,
Attention), which is what a roofline against the machine's GEMM peak is about."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir


def _dims(v: ir.Value | None, example: dict[str, int]) -> list[int] | None:
    if v is None or v.shape is None:
        return None
    out = []
    for d in v.shape:
        if isinstance(d, int):
            out.append(d)
        else:
            name = str(getattr(d, "value", d))
            if name not in example:
                return _reshaped_dims(v, example)
            out.append(example[name])
    return out


def _reshaped_dims(v: ir.Value, example: dict[str, int]) -> list[int] | None:
    """A Reshape output whose one unknown dim (a -1 folded over the batch, as the windowed
    rewrites write it) follows from the input's size."""
    node = v.producer()
    if node is None or node.op_type != "Reshape":
        return None
    src = _dims(node.inputs[0], example)
    if src is None:
        return None
    dims = [d if isinstance(d, int) else example.get(str(getattr(d, "value", d))) for d in v.shape]
    unknown = [i for i, d in enumerate(dims) if d is None]
    known = math.prod(d for d in dims if d is not None)
    if len(unknown) != 1 or known == 0 or math.prod(src) % known:
        return None
    dims[unknown[0]] = math.prod(src) // known
    return dims


def _static(v: ir.Value | None, axis: int) -> int | None:
    """One dim of `v` if it is a known int."""
    if v is None or v.shape is None or len(v.shape) < -axis:
        return None
    d = v.shape[axis]
    return d if isinstance(d, int) else None


def _matmul(a: list[int], b: list[int]) -> int:
    a = [1] + a if len(a) == 1 else a
    b = b + [1] if len(b) == 1 else b
    batch = math.prod(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    return 2 * batch * a[-2] * a[-1] * b[-1]


def node_flops(node: ir.Node, example: dict[str, int]) -> int | None:
    ins = [_dims(v, example) for v in node.inputs]
    op = node.op_type
    if op == "MatMul" and ins[0] and ins[1]:
        return _matmul(ins[0], ins[1])
    if op == "Gemm" and ins[0] and ins[1]:
        ta = node.attributes.get("transA")
        m, k = ins[0][::-1] if ta is not None and ta.value else ins[0]
        tb = node.attributes.get("transB")
        n = ins[1][0] if tb is not None and tb.value else ins[1][1]
        return 2 * m * k * n
    if op == "Conv" and ins[1]:
        out = _dims(node.outputs[0], example)
        if out is None:
            return None
        w = ins[1]  # (out_ch, in_ch/groups, *kernel)
        return 2 * math.prod(out) * math.prod(w[1:])
    if op == "Attention" and ins[0]:  # the batch comes from q; k/v need only their static dims
        keys, v_width = _static(node.inputs[1], -2), _static(node.inputs[2], -1)
        if len(ins[0]) == 4 and keys and v_width:
            b, h, s, d = ins[0]
            return 2 * b * h * s * keys * (d + v_width)
        if len(ins[0]) == 3 and keys and v_width:  # (B, S, H·d) form
            b, s, hd = ins[0]
            return 2 * b * s * keys * (hd + v_width)
    return 0 if op not in ("MatMul", "Gemm", "Conv", "Attention") else None


def graph_flops(model: ir.Model, example: dict[str, int] | None = None) -> int:
    """Total FLOPs (multiply-adds × 2); nodes whose shapes are unknown count 0."""
    example = example or {"batch": 1}
    return sum(node_flops(n, example) or 0 for n in model.graph.all_nodes())
