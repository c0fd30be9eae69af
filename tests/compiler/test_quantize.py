"""int8 under a budget: the fallback order, the float fallback, the per-layer report, and the
end-to-end compile of digits-vit (real labels)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.compiler import plan, quantize
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import CompileError
from edgeattn.passes.quantize_qdq import QDQRule

from ..passes.conftest import canonical_tiny_deit

CALIB = [{"pixel_values": np.random.default_rng(i).standard_normal((2, 3, 32, 32)).astype(np.float32)} for i in range(3)]


def _int8_matmuls(model: ir.Model) -> int:
    return sum(1 for n in model.graph.all_nodes() if n.op_type == "DequantizeLinear" and "axis" in n.attributes)


@pytest.fixture(scope="module")
def tiny_deit_proto():
    return ir.to_proto(canonical_tiny_deit())


def test_fallback_returns_the_most_sensitive_matmuls_first(tiny_deit_proto):
    exact = ir.from_proto(tiny_deit_proto)
    # A meter whose error grows with every int8 MatMul: 18 in int8 → cosine 0.982; the budget
    # allows 6, so the 12 most sensitive must come back to float, in sensitivity order.
    meter = lambda m: {"cosine": 1 - 0.001 * _int8_matmuls(m), "max_abs_error": 0.0}  # noqa: E731
    model, rec = quantize.quantize(exact, QDQRule(), plan.Budget.parse("cosine>=0.9935"), meter, CALIB, lambda _m: None)
    assert rec["accepted"] and rec["matmuls"] == 18 and rec["quantized"] == 6 and _int8_matmuls(model) == 6
    forward = [s for s in rec["steps"] if "retried" not in s]
    assert [s["kept_float"] for s in forward] == list(range(13))
    assert len(rec["steps"]) == 13 + 12  # the backward pass retried each kept MatMul, none fits
    local = {r["layer"]: r["local_snr_db"] for r in rec["layers"]}
    kept = rec["kept_float"]
    assert [local[k] for k in kept] == sorted(local[k] for k in kept)  # most sensitive first
    assert max(local[k] for k in kept) <= min(v for k, v in local.items() if k not in kept)
    assert {r["layer"] for r in rec["layers"] if not r["int8"]} == set(rec["kept_float"])
    assert all(r["snr_db"] < quantize.EXACT_SNR_DB for r in rec["layers"] if r["int8"])


def test_unmeetable_budget_ships_the_float_graph(tiny_deit_proto):
    exact = ir.from_proto(tiny_deit_proto)
    meter = lambda m: {"cosine": 0.5, "max_abs_error": 1.0}  # noqa: E731
    model, rec = quantize.quantize(exact, QDQRule(), plan.Budget.parse("cosine>=0.99"), meter, CALIB, lambda _m: None)
    assert model is exact and not rec["accepted"] and "shipped the float graph" in rec["reason"]
    assert len(rec["steps"]) == 19 and _int8_matmuls(model) == 0


def test_a_step_limit_reports_what_its_last_trial_measured(tiny_deit_proto, monkeypatch):
    monkeypatch.setattr(quantize, "MAX_FALLBACK_STEPS", 5)  # fewer steps than the 18 MatMuls
    meter = lambda m: {"cosine": 0.5, "max_abs_error": 1.0}  # noqa: E731
    _, rec = quantize.quantize(ir.from_proto(tiny_deit_proto), QDQRule(), plan.Budget.parse("cosine>=0.99"), meter,
                               CALIB, lambda _m: None)
    assert len(rec["steps"]) == 6 and len(rec["kept_float"]) == rec["steps"][-1]["kept_float"] == 5
    assert "5 MatMuls back in float" in rec["reason"]


def test_bad_method_and_empty_calibration(tiny_deit_proto):
    exact = ir.from_proto(tiny_deit_proto)
    budget = plan.Budget.parse("cosine>=0.99")
    with pytest.raises(CompileError, match="calibration method"):
        quantize.quantize(exact, QDQRule(), budget, lambda m: {}, CALIB, lambda _m: None, method="kl")
    with pytest.raises(CompileError, match="calibration set is empty"):
        quantize.quantize(exact, QDQRule(), budget, lambda m: {}, [], lambda _m: None)


def test_digits_vit_int8_within_budget(tmp_path):
    m = compile_model("digits-vit", "ort", tmp_path / "art", target_options={"precision": "int8"},
                      budget="top1-drop<=0.5")
    q = m["quantization"]
    assert m["precision"] == "int8" and q["accepted"] and q["quantized"] >= 1
    assert q["smooth_quant"]["relative_error"] < 1e-4
    acc = m["accuracy"]  # measured on the built artifact, held-out split
    assert 100 * (acc["reference_top1"] - acc["top1"]) <= 0.5


def test_auto_method_keeps_the_calibration_with_more_int8(tiny_deit_proto):
    exact = ir.from_proto(tiny_deit_proto)
    seen = []

    def meter(m):  # budget met at <= 12 int8 MatMuls for the first method, <= 16 for the second
        seen.append(_int8_matmuls(m))
        limit = 12 if seen.count(18) <= 1 else 16  # each method's fallback starts with all 18 in int8
        return {"cosine": 1.0 if _int8_matmuls(m) <= limit else 0.5, "max_abs_error": 0.0}

    model, rec = quantize.quantize(exact, QDQRule(), plan.Budget.parse("cosine>=0.99"), meter, CALIB, lambda _m: None,
                                   method="auto")
    tried = rec["methods_tried"]
    assert list(tried) == list(quantize.AUTO_METHODS) and all(t["accepted"] for t in tried.values())
    assert [t["quantized"] for t in tried.values()] == [12, 16]
    assert rec["method_chosen"] == "percentile" and rec["quantized"] == 16 == _int8_matmuls(model)


def _int8_names(model: ir.Model) -> set[str]:
    """MatMuls whose weight comes through a DequantizeLinear (i.e. run in int8)."""
    return {n.name for n in model.graph.all_nodes() if n.op_type == "MatMul" and n.inputs[1].producer() is not None
            and n.inputs[1].producer().op_type == "DequantizeLinear"}


def test_backward_pass_returns_a_kept_matmul_that_costs_nothing(tiny_deit_proto):
    exact = ir.from_proto(tiny_deit_proto)
    every = {n.name for n in quantize.quantizable(exact, QDQRule())}
    free: list[str] = []

    def meter(m):  # the most sensitive MatMul by local SNR (the first one kept) costs nothing in int8
        int8 = _int8_names(m)
        if len(every - int8) == 1 and not free:
            free.extend(every - int8)
        return {"cosine": 1 - 0.001 * len(int8 - set(free)), "max_abs_error": 0.0}

    model, rec = quantize.quantize(exact, QDQRule(), plan.Budget.parse("cosine>=0.9935"), meter, CALIB, lambda _m: None)
    assert rec["accepted"] and rec["quantized"] == 7 and free[0] in _int8_names(model)
    assert len(rec["kept_float"]) == 11 and any(s.get("retried") == free[0] for s in rec["steps"])


def test_float_kept_matmuls_get_their_outlier_channels_split_and_retried():
    """A BERT whose MLP inputs carry one outlier channel: at a budget that int8 fc2s miss, the
    fallback keeps them in float; the split model meets it with every MatMul in int8."""
    from ..passes.conftest import ort_run
    from ..passes.test_outlier_split import CALIB as TEXT_CALIB
    from ..passes.test_outlier_split import _encoder, _feeds

    exact = _encoder(outlier=True)
    feed = _feeds(0)
    want = ort_run(exact, feed)[0]

    def meter(m):
        got = ort_run(m, feed)[0]
        return {"cosine": 1.0, "max_abs_error": float(np.abs(got - want).max() / np.abs(want).max())}

    budget = plan.Budget.parse("max-abs<=0.002")  # all-int8 error: ~0.005 unsplit, ~0.0008 split
    model, rec = quantize.quantize(exact, QDQRule(), budget, meter, TEXT_CALIB, lambda _m: None, outliers=2.0)
    retry = rec["outlier_retry"]
    assert retry["sites"] >= 1 and retry["shipped"] and retry["accepted"]
    assert rec["accepted"] and rec["kept_float"] == [] and rec["quantized"] == rec["matmuls"]
    parts = [r["layer"] for r in rec["layers"] if "other channels" in r["layer"]]
    assert len(parts) == retry["sites"] and all(r["int8"] for r in rec["layers"])
    assert sum(n.op_type == "Split" for n in model.graph) == retry["sites"]
    _, plain = quantize.quantize(exact, QDQRule(), budget, meter, TEXT_CALIB, lambda _m: None, outliers=0.0)
    assert plain["kept_float"] and "outlier_retry" not in plain
