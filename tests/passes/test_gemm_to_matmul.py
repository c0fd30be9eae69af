"""gemm-to-matmul: a token projection written as Gemm becomes MatMul + Add on (B, S, K), exact; other Gemms stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn import passes
from edgeattn.compiler.flops import graph_flops
from edgeattn.passes._linear import ort_unoptimized

K, N, S = 8, 6, 5


def _gemm_model(trans_b: int, bias_shape: tuple | None, consumer: str = "Reshape", const_b: bool = True) -> ir.Model:
    """x (B, S, K) → Reshape [-1, K] → Gemm(alpha 0.5, beta 2) → consumer."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([-1, K], np.int64), "flat"),
             numpy_helper.from_array(np.array([-1, S, N] if consumer == "Reshape" else [0, N], np.int64), "unflat")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", S, K])]
    if const_b:
        inits.append(numpy_helper.from_array(w, "w"))
    else:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape)))
    gemm_in = ["x2", "w"]
    if bias_shape is not None:
        inits.append(numpy_helper.from_array(rng.standard_normal(bias_shape).astype(np.float32), "b"))
        gemm_in.append("b")
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2"]),
             helper.make_node("Gemm", gemm_in, ["g"], transB=trans_b, alpha=0.5, beta=2.0)]
    if consumer == "Reshape":
        nodes.append(helper.make_node("Reshape", ["g", "unflat"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", S, N])
    elif consumer == "Reshape0":  # [0, N]: its 0 copies the flattened rows, it would read B unflattened
        nodes.append(helper.make_node("Reshape", ["g", "unflat"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])
    else:  # a 2-D consumer: the Gemm's rows stay flattened
        nodes.append(helper.make_node("Relu", ["g"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])
    m = helper.make_model(helper.make_graph(nodes, "gemm", inputs, [out], inits), opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return ir.from_proto(onnx.shape_inference.infer_shapes(m))


@pytest.mark.parametrize("trans_b,bias_shape", [(1, (N,)), (0, (1, N)), (1, None)])
def test_token_gemm_becomes_an_exact_matmul_on_the_tokens(trans_b, bias_shape):
    model = _gemm_model(trans_b, bias_shape)
    x = np.random.default_rng(1).standard_normal((2, S, K)).astype(np.float32)
    want = ort_unoptimized(model).run(None, {"x": x})[0]
    flops = graph_flops(model)
    p = passes.create("gemm-to-matmul")
    p(model)
    assert graph_flops(model) == flops == 2 * S * K * N  # counted on the pass's own weight, before any cleanup
    passes.create("cleanup")(model)
    ops = [n.op_type for n in model.graph]
    assert p.sites_changed == 1 and "Gemm" not in ops and ops.count("MatMul") == 1
    matmul = next(n for n in model.graph if n.op_type == "MatMul")
    assert matmul.inputs[0].name == "x" and ops.count("Reshape") == 1  # the flattening Reshape is gone
    got = ort_unoptimized(model).run(None, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias_shape,consumer,reason", [
    ((2 * S, N), "Reshape", "C has a bias per row"),
    ((N,), "Relu", "not a projection of flattened (B, S, K) tokens"),  # a 2-D consumer
    ((N,), "Reshape0", "not a projection of flattened (B, S, K) tokens"),  # its 0 would copy B, not B·S
])
def test_other_gemms_stay(bias_shape, consumer, reason):
    model = _gemm_model(1, bias_shape, consumer)
    p = passes.create("gemm-to-matmul")
    p(model)
    assert p.sites_changed == 0 and p.details["skipped"][0]["reason"] == reason
    assert [n.op_type for n in model.graph].count("Gemm") == 1


def test_gemm_by_a_runtime_weight_is_left_alone():
    model = _gemm_model(1, (N,), const_b=False)
    p = passes.create("gemm-to-matmul")
    p(model)
    assert p.sites_changed == 0 and p.details["skipped"][0]["reason"] == "B is not a constant 2-D weight"
    assert [n.op_type for n in model.graph].count("Gemm") == 1


def test_gpt2_conv1d_gets_matmuls_the_quantizer_takes():
    """GPT-2's Conv1D exports as Reshape → Gemm → Reshape; after the default pipeline its 4
    projections a layer are (B, S, K) MatMuls, exact, and all of them quantizable."""
    from edgeattn.compiler.pipeline import run_pipeline
    from edgeattn.passes.quantize_qdq import quantizable

    from .conftest import export, op_counts, ort_run, tiny_gpt2

    import torch

    ids = np.random.default_rng(0).integers(0, 100, (2, 7)).astype(np.int64)
    model = export(tiny_gpt2(), (torch.from_numpy(ids),), dynamo=True, opset=18, input_names=["ids"])
    assert op_counts(model).get("Gemm") == 8 and quantizable(model) == []
    want = ort_run(model, {"ids": ids})[0]
    run_pipeline(model, "default")
    assert "Gemm" not in op_counts(model) and len(quantizable(model)) == 8
    assert all(len(n.inputs[0].shape) == 3 for n in quantizable(model))
    np.testing.assert_allclose(ort_run(model, {"ids": ids})[0], want, rtol=1e-4, atol=1e-5)
