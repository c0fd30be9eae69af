"""Q/DQ placement: the graph computes exactly float MatMul on fake-quantized inputs and weights,
is valid ONNX, shares one Q/DQ per activation, keeps excluded MatMuls in float, and ORT fuses
it into integer GEMMs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn.passes._calibrate import activation_ranges
from edgeattn.passes.quantize_qdq import (QDQRule, QuantizeMatMuls, activation_params, fake_quant_activation,
                                          quantizable, quantize_weight)

from .conftest import op_counts, ort_run


def _one_matmul() -> ir.Model:
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "one",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 8])], [numpy_helper.from_array(w, "w")])
    return ir.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))


@pytest.mark.parametrize("rule", [QDQRule(), QDQRule(weight_max=63), QDQRule(act_levels=128), QDQRule(symmetric=True)])
def test_single_matmul_equals_fake_quant_formula(rule):
    model = _one_matmul()
    w = model.graph.initializers["w"].const_value.numpy()
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    ranges = {"x": (-2.5, 3.0)}
    p = QuantizeMatMuls(ranges, rule)
    p(model)
    assert p.sites_changed == 1 and op_counts(model) == {"QuantizeLinear": 1, "DequantizeLinear": 2, "MatMul": 1}
    scale, zp = rule.activation(*ranges["x"])
    assert (zp.dtype, int(zp)) == ((np.int8, 0) if rule.symmetric else (np.uint8, 116 if rule.act_levels == 256 else 58))
    wq, ws = quantize_weight(w, rule.weight_max)
    assert np.abs(wq).max() <= rule.weight_max
    want = fake_quant_activation(x, scale, zp) @ (wq.astype(np.float32) * ws)
    np.testing.assert_allclose(ort_run(model, {"x": x})[0], want, rtol=1e-5, atol=1e-5)


def test_symmetric_activation_grids():
    """Zero point 0: int8 over ±max|x| for a signed range, uint8 over [0, max] for a non-negative
    one (a ReLU output); x outside saturates at the type's ends, as QuantizeLinear does."""
    scale, zp = activation_params(-1.0, 2.54, symmetric=True)
    assert zp.dtype == np.int8 and zp == 0 and scale == np.float32(0.02)
    x = np.array([-3.0, -1.0, 0.013, 2.54, 9.0], np.float32)
    np.testing.assert_allclose(fake_quant_activation(x, scale, zp), [-2.56, -1.0, 0.02, 2.54, 2.54], atol=1e-6)
    scale, zp = activation_params(0.0, 5.1, symmetric=True)
    assert zp.dtype == np.uint8 and zp == 0 and scale == np.float32(0.02)
    np.testing.assert_allclose(fake_quant_activation(np.float32([-1.0, 6.0]), scale, zp), [0.0, 5.1], atol=1e-6)


def test_tiny_deit_placement(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    calib = [{"pixel_values": np.random.default_rng(i).standard_normal((2, 3, 32, 32)).astype(np.float32)} for i in range(3)]
    x = {"pixel_values": np.random.default_rng(9).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    want = ort_run(model, x)[0]
    nodes = quantizable(model)
    assert len(nodes) == 18  # 3 blocks × (q, k, v, o, fc1, fc2); the classifier Gemm stays float
    ranges = activation_ranges(model, [n.inputs[0].name for n in nodes], calib)
    keep = {nodes[0].name}
    p = QuantizeMatMuls(ranges, QDQRule(), exclude=keep)
    p(model)
    counts = op_counts(model)
    # q/k/v share their LayerNorm input: 4 distinct activations per block (LN1, attention out, LN2,
    # GELU out); excluding layer 0's q projection still leaves its LN1 quantized for k and v.
    assert p.sites_changed == 17 and counts["QuantizeLinear"] == 12 and counts["DequantizeLinear"] == 12 + 17
    kept = next(n for n in model.graph if n.name == nodes[0].name)
    assert kept.inputs[1].const_value is not None and kept.inputs[0].producer().op_type != "DequantizeLinear"
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = ort_run(model, x)[0]
    cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert 0.999 < cos < 1.0  # quantized: close, not identical
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(ir.to_proto(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
        fused = op_counts(ir.load(so.optimized_model_filepath))
    assert fused.get("MatMulIntegerToFloat", 0) + fused.get("QLinearMatMul", 0) == 17


def test_missing_range_is_reported_not_guessed():
    model = _one_matmul()
    p = QuantizeMatMuls({}, QDQRule())
    p(model)
    assert p.sites_changed == 0 and p.details["no_range"] == ["mm"]


def test_calibration_rejects_bad_input():
    model = _one_matmul()
    with pytest.raises(ValueError, match="empty"):
        activation_ranges(model, ["x"], [])
    with pytest.raises(ValueError, match="unknown calibration method"):
        activation_ranges(model, ["x"], [{"x": np.zeros((3, 16), np.float32)}], method="kl")
    xs = [{"x": np.random.default_rng(i).standard_normal((3, 16)).astype(np.float32)} for i in range(3)]
    low, high = activation_ranges(model, ["x"], xs)["x"]
    assert low == pytest.approx(min(f["x"].min() for f in xs)) and high == pytest.approx(max(f["x"].max() for f in xs))
