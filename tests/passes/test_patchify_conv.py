"""patchify-conv: a patch-embedding Conv becomes patchify + MatMul, exact; other convs are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn import passes
from edgeattn.passes._linear import ort_unoptimized


def _conv_model(kernel=4, stride=4, pads=(0, 0, 0, 0), group=1, bias=True, c=3, f=8, hw=16) -> ir.Model:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((f, c // group, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(rng.standard_normal(f).astype(np.float32), "b")] if bias else [])
    conv = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], kernel_shape=[kernel, kernel],
                            strides=[stride, stride], pads=list(pads), group=group)
    out = (hw + pads[0] + pads[2] - kernel) // stride + 1
    g = helper.make_graph([conv], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", f, out, out])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return ir.from_proto(onnx.shape_inference.infer_shapes(m))


@pytest.mark.parametrize("bias", [True, False])
def test_patch_embedding_becomes_an_exact_matmul(bias):
    model = _conv_model(bias=bias)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    want = ort_unoptimized(model).run(None, {"x": x})[0]
    p = passes.create("patchify-conv")
    p(model)
    ops = [n.op_type for n in model.graph]
    assert p.sites_changed == 1 and "Conv" not in ops and ops.count("MatMul") == 1
    got = ort_unoptimized(model).run(None, {"x": x})[0]
    assert got.shape == want.shape == (2, 8, 4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, reason", [({"stride": 2}, "stride differs"), ({"pads": (1, 1, 1, 1), "hw": 14}, "padding"),
                                             ({"group": 3, "c": 3, "f": 6}, "groups")])
def test_other_convolutions_are_left_alone_with_the_reason(kwargs, reason):
    model = _conv_model(**kwargs)
    p = passes.create("patchify-conv")
    p(model)
    assert p.sites_changed == 0 and [n.op_type for n in model.graph] == ["Conv"]
    assert reason in p.details["skipped"][0]["reason"]
