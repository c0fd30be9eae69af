"""fold-weight-transpose: a tied output projection MatMul(x, Transpose(E)) gets E.T as its own initializer, exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgeattn import passes
from edgeattn.passes._linear import ort_unoptimized
from edgeattn.passes.quantize_qdq import quantizable

V, D = 11, 6


def _tied_model(perm=(1, 0)) -> ir.Model:
    """ids → Gather(E) → MatMul(·, Transpose(E)): GPT-2's tied embedding and lm_head."""
    e = np.random.default_rng(0).standard_normal((V, D)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"]),
             helper.make_node("Transpose", ["E"], ["Et"], perm=list(perm)),
             helper.make_node("MatMul", ["h", "Et"], ["logits"])]
    g = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, V])],
                          [numpy_helper.from_array(e, "E")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return ir.from_proto(onnx.shape_inference.infer_shapes(m))


def test_tied_lm_head_becomes_a_quantizable_constant():
    model = _tied_model()
    ids = np.array([[1, 4, 0, 10], [3, 3, 7, 2]], np.int64)
    want = ort_unoptimized(model).run(None, {"ids": ids})[0]
    assert quantizable(model) == []
    p = passes.create("fold-weight-transpose")
    p(model)
    ops = [n.op_type for n in model.graph]
    assert p.sites_changed == 1 and "Transpose" not in ops and ops.count("Gather") == 1
    assert [n.op_type for n in quantizable(model)] == ["MatMul"]
    np.testing.assert_array_equal(ort_unoptimized(model).run(None, {"ids": ids})[0], want)


def test_other_weight_producers_stay():
    model = _tied_model(perm=(0, 1))  # not a 2-D transpose
    p = passes.create("fold-weight-transpose")
    p(model)
    assert p.sites_changed == 0 and [n.op_type for n in model.graph].count("Transpose") == 1
