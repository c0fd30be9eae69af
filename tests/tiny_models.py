"""Tiny ONNX models shared by tests (built with onnx.helper, no export needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

H, S, D = 2, 5, 4


def tiny_attention_onnx(path: Path, mask: bool = False) -> Path:
    """x → q,k,v projections → decomposed SDPA (opset 18), symbolic batch; optionally a bool padding mask."""
    rng = np.random.default_rng(0)
    e = H * D
    inits = [numpy_helper.from_array(rng.standard_normal((e, e)).astype(np.float32) * 0.5, n) for n in ("wq", "wk", "wv")]
    inits += [numpy_helper.from_array(np.array([0, S, H, D], np.int64), "shape4"),
              numpy_helper.from_array(np.array([0, S, e], np.int64), "shape3"),
              numpy_helper.from_array(np.array(D ** -0.5, np.float32), "c"),
              numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(-np.inf, np.float32), "ninf")]
    nodes = []
    for n in ("q", "k", "v"):
        nodes += [helper.make_node("MatMul", ["x", "w" + n], [n + "0"]),
                  helper.make_node("Reshape", [n + "0", "shape4"], [n + "1"]),
                  helper.make_node("Transpose", [n + "1"], [n], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "c"], ["s1"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", S, e])]
    if mask:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 1, 1, S]))
        nodes += [helper.make_node("Where", ["mask", "zero", "ninf"], ["bias"]),
                  helper.make_node("Add", ["s1", "bias"], ["s2"])]
    nodes += [helper.make_node("Softmax", ["s2" if mask else "s1"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["o"]),
              helper.make_node("Transpose", ["o"], ["o1"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["o1", "shape3"], ["y"])]
    g = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", S, e])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def tiny_causal_attention_onnx(path: Path, seq: int = 12) -> Path:
    """x (batch, seq, 8) → q,k,v projections → ONNX Attention(is_causal=1), opset 23."""
    rng = np.random.default_rng(1)
    e = H * D
    inits = [numpy_helper.from_array(rng.standard_normal((e, e)).astype(np.float32), n) for n in ("wq", "wk", "wv")]
    inits.append(numpy_helper.from_array(np.array([0, seq, H, D], np.int64), "shape4"))
    nodes = []
    for n in ("q", "k", "v"):
        nodes += [helper.make_node("MatMul", ["x", "w" + n], [n + "0"]),
                  helper.make_node("Reshape", [n + "0", "shape4"], [n + "1"]),
                  helper.make_node("Transpose", [n + "1"], [n], perm=[0, 2, 1, 3])]
    nodes.append(helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1))
    g = helper.make_graph(nodes, "causal", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", seq, e])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", H, seq, D])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path
