"""OpenVINO target end to end: compile a tiny ONNX attention model, load it with edgeattn.runtime,
check accuracy, the payload table, per-op profiling, bf16, concurrency and the decompose path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed — pip install 'edgeattn[openvino]'")

from edgeattn import runtime, targets  # noqa: E402
from edgeattn.compiler.compile import compile_model  # noqa: E402
from edgeattn.targets import openvino as ov_target  # noqa: E402

from ..tiny_models import D, H, S, tiny_attention_onnx as _tiny_attention_onnx  # noqa: E402


def _supports_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_attention_onnx(tmp_path_factory.mktemp("ov") / "tiny.onnx")


@pytest.fixture(scope="module")
def artifact(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ov-art") / "art"
    compile_model(str(tiny), "openvino", out)
    return out


def test_available_and_registered():
    ok, reason = ov_target.available()
    assert ok, reason
    assert reason.startswith("openvino ")
    assert targets.get("openvino") is ov_target
    assert {r["name"]: r["available"] for r in targets.describe_all()}["openvino"] is True


def test_manifest_payload_and_accuracy(artifact):
    m = json.loads((artifact / "manifest.json").read_text())
    assert m["target"] == "openvino" and m["backend"] == "openvino"
    assert m["payload"] == {"model": "model.xml", "weights": "model.bin"}
    assert set(m["files"]) == {"model.xml", "model.bin"}
    assert all(len(f["sha256"]) == 64 for f in m["files"].values())
    assert not (artifact / "_source.onnx").exists()
    assert m["backend_options"] == {"precision": "fp32", "performance_hint": "LATENCY", "num_threads": None}
    assert m["attention"]["canonicalized"] == 1
    assert m["attention"]["legalization"] == {"attention_native": 1, "attention_decomposed": 0, "heads_folded": 1}
    assert m["accuracy"]["max_abs_error"] <= 1e-4 and m["accuracy"]["cosine"] > 0.9999


def test_runtime_matches_reference_and_batch_is_dynamic(artifact, tiny):
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((3, S, H * D)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(tiny), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    sess = runtime.load(artifact, threads=1)
    assert sess.threads == 1 and sess.output_names == ["y"]
    y = sess.run({"x": x})["y"]
    assert y.shape == ref.shape and np.abs(y - ref).max() <= 1e-4


def test_bool_padding_mask_model(tmp_path):
    src = _tiny_attention_onnx(tmp_path / "masked.onnx", mask=True)
    m = compile_model(str(src), "openvino", tmp_path / "art")
    assert m["attention"]["legalization"]["attention_native"] == 1
    assert m["accuracy"]["max_abs_error"] <= 1e-4
    sess = runtime.load(tmp_path / "art")
    x = np.random.default_rng(0).standard_normal((2, S, H * D)).astype(np.float32)
    mask = np.ones((2, 1, 1, S), bool)
    mask[1, ..., -2:] = False
    assert np.isfinite(sess.run({"x": x, "mask": mask})["y"]).all()


def test_decompose_path_matches(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(ov_target, "DECOMPOSE_ATTENTION", True)
    m = compile_model(str(tiny), "openvino", tmp_path / "art")
    assert m["attention"]["legalization"] == {"attention_native": 0, "attention_decomposed": 1}
    assert m["accuracy"]["max_abs_error"] <= 1e-4


@pytest.mark.skipif(not _supports_bf16(), reason="this CPU has no BF16 support (OPTIMIZATION_CAPABILITIES)")
def test_bf16_cosine(tiny, tmp_path):
    m = compile_model(str(tiny), "openvino", tmp_path / "art", target_options={"precision": "bf16"})
    assert m["backend_options"]["precision"] == "bf16"
    assert m["accuracy"]["cosine"] >= 0.999


@pytest.mark.parametrize("cpu_bf16,asked,rest,hint", [(True, "auto", "bf16", "bf16"), (False, "auto", "fp32", "f32"),
                                                      (True, "fp32", "fp32", "f32"), (False, "bf16", "fp32", "f32")])
def test_int8_float_parts_follow_the_cpu(monkeypatch, cpu_bf16, asked, rest, hint):
    """An int8 artifact's float parts run in bf16 where the CPU has it (as the NNCF peer is run),
    unless float_precision=fp32; the runtime's inference hint follows the manifest."""
    from edgeattn.runtime.backends import openvino as ov_backend

    monkeypatch.setattr(ov_target, "_has_bf16", lambda _ov: cpu_bf16)
    opts = ov_target._options({"precision": "int8", "float_precision": asked})
    ov_target._int8_rest(opts, ov)
    assert opts["float_precision"] == rest
    assert ov_backend._config({"backend_options": opts}, 2, False)["INFERENCE_PRECISION_HINT"] == hint
    fp32 = ov_target._options({"precision": "fp32"})
    ov_target._int8_rest(fp32, ov)
    assert "float_precision" not in fp32  # only int8 artifacts carry it
    with pytest.raises(ValueError, match="float_precision 'fp16'"):
        ov_target._options({"float_precision": "fp16"})


def test_bad_options_are_one_line_errors(tiny, tmp_path):
    from edgeattn.compiler.errors import CompileError

    with pytest.raises(CompileError, match="does not support precision int3"):
        compile_model(str(tiny), "openvino", tmp_path / "a", target_options={"precision": "int3"})
    with pytest.raises(ValueError, match="num_threads"):
        compile_model(str(tiny), "openvino", tmp_path / "b", target_options={"num_threads": 0})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_vit_tiny_zoo_model(tmp_path):
    m = compile_model("vit-tiny", "openvino", tmp_path / "vit")
    assert m["attention"]["legalization"] == {"attention_native": 12, "attention_decomposed": 0, "heads_folded": 12}
    assert m["accuracy"]["max_abs_error"] <= 1e-4
    assert runtime.load(tmp_path / "vit").benchmark(runs=2, warmup=1)["latency"]["p50_ms"] > 0


@pytest.mark.skipif(not _supports_bf16(), reason="this CPU has no BF16 support (OPTIMIZATION_CAPABILITIES)")
def test_bf16_plan_is_measured_in_bf16(tmp_path):
    """A rewrite plan compiled for bf16 is judged in the arithmetic it ships with: an exact plan
    meets max-abs<=1e-5 in fp32 (tests/compiler/test_plan.py) but not with bf16's rounding."""
    from ..tiny_models import tiny_causal_attention_onnx

    causal = tiny_causal_attention_onnx(tmp_path / "c.onnx", seq=12)
    exact_plan = ["sink-window:sink=0,window=12"]
    strict = compile_model(str(causal), "openvino", tmp_path / "a", rewrites=exact_plan, budget="max-abs<=1e-5",
                           target_options={"precision": "bf16"})["plan"]
    assert not strict["accepted"] and strict["measured"]["max-abs"] > 1e-5
    assert strict["measured_on"].startswith("openvino bf16")
    loose = compile_model(str(causal), "openvino", tmp_path / "b", rewrites=exact_plan, budget="cosine>=0.999",
                          target_options={"precision": "bf16"})["plan"]
    assert loose["accepted"] and 0.999 <= loose["measured"]["cosine"] < 1 - 1e-7
