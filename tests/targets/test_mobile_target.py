"""mobile (ONNX Runtime Mobile variant): ORT-format payload, the reduced-operator config a minimal
build needs, and the NNAPI/CoreML usability report; numerics are in the every-target template."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeattn import runtime, targets
from edgeattn.compiler.compile import compile_model

from ..passes.conftest import canonical_tiny_deit
from ..tiny_models import tiny_attention_onnx


@pytest.fixture(scope="module")
def mobile_artifact(tmp_path_factory):
    ok, reason = targets.get("mobile").available()
    if not ok:
        pytest.skip(f"target mobile unavailable: {reason}")
    tmp = tmp_path_factory.mktemp("mobile")
    manifest = compile_model(str(tiny_attention_onnx(tmp / "tiny.onnx", mask=True)), "mobile", tmp / "art")
    return tmp / "art", manifest


def test_payload_is_ort_format_with_operator_config(mobile_artifact):
    art, m = mobile_artifact
    want = {"model": "model.ort", "operators": "required_operators.config", "usability": "mobile-usability.json"}
    assert {k: v for k, v in m["payload"].items() if k in want} == want
    assert all(v.startswith("tvm-aarch64/") for k, v in m["payload"].items() if k not in want)
    assert (art / "model.ort").read_bytes()[4:8] == b"ORTM"  # the ORT-format flatbuffer identifier
    config = (art / "required_operators.config").read_text()
    ops = {op for line in config.splitlines() if line and not line.startswith("#")
           for op in line.split(";")[2].split(",")}
    assert "Attention" in ops and "MatMul" in ops


def test_usability_report_names_each_provider(mobile_artifact):
    art, m = mobile_artifact
    report = json.loads((art / "mobile-usability.json").read_text())
    assert report == m["mobile"]["usability"] and set(report) == {"NNAPI", "CoreML (ML Program)"}
    for ep in report.values():
        assert 0 <= ep["supported_nodes"] <= ep["nodes"] and ep["suitability"] in ("YES", "MAYBE", "NO")
    assert "not device timings" in m["mobile"]["verified_on"]


def test_tvm_aarch64_bundle_runs_under_qemu(mobile_artifact):
    """Where the cross toolchain is installed (make install does it as root), the artifact carries
    the aarch64 bundle, checked under qemu against ORT at compile time; re-run it here."""
    from edgeattn.targets import mobile_tvm

    art, m = mobile_artifact
    tvm = m["mobile"]["tvm"]
    if not tvm["built"]:
        pytest.skip(f"TVM aarch64 variant not built: {tvm['reason']}")
    bundle = art / mobile_tvm.SUBDIR
    assert {p.name for p in bundle.iterdir()} == {"model.so", "loader", "libtvm_runtime.so", "libtvm_ffi.so"}
    assert (bundle / "loader").stat().st_mode & 0o111, "the loader must stay executable in the artifact"
    assert (bundle / "model.so").read_bytes()[18] == 183  # ELF e_machine = EM_AARCH64
    if isinstance(tvm["verified"], str):
        pytest.skip(tvm["verified"])
    assert tvm["verified"]["max_abs_error"] <= 1e-4
    sess = runtime.load(art)  # the ORT Mobile variant, on the host
    feeds = sess.example_feeds(seed=5)
    want = sess.run(feeds)["y"]
    (got,) = mobile_tvm.run_emulated(bundle, {s.name: feeds[s.name] for s in sess.inputs})
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-4, rtol=1e-4)


def test_token_selecting_rewrite_ships_the_runtime_sort_kernels(tmp_path):
    """cls-prune's TopK calls the runtime's contrib top-k (libtvm_runtime_extra.so): without it the
    loader failed under qemu ("Cannot find function tvm.contrib.sort.topk") and so did the compile."""
    import onnx_ir as ir

    from edgeattn.targets import mobile_tvm

    ok, reason = mobile_tvm.available()
    if not ok:
        pytest.skip(f"TVM aarch64 variant unavailable: {reason}")
    ir.save(canonical_tiny_deit(), tmp_path / "tiny_deit.onnx")
    m = compile_model(str(tmp_path / "tiny_deit.onnx"), "mobile", tmp_path / "art",
                      rewrites=["cls-prune:keep=0.5,layers=0"], budget="cosine>=-1")
    assert (tmp_path / "art" / mobile_tvm.SUBDIR / "libtvm_runtime_extra.so").is_file()
    verified = m["mobile"]["tvm"]["verified"]
    if isinstance(verified, str):
        pytest.skip(verified)
    assert verified["max_abs_error"] <= 1e-4


def test_device_preset_builds_for_its_cpu(tmp_path):
    from edgeattn.targets import mobile_tvm

    ok, reason = mobile_tvm.available()
    if not ok:
        pytest.skip(f"TVM aarch64 variant unavailable: {reason}")
    m = compile_model(str(tiny_attention_onnx(tmp_path / "tiny.onnx")), "mobile", tmp_path / "art",
                      target_options={"device": "rpi5"})
    tvm = m["mobile"]["tvm"]
    assert tvm["device"] == "rpi5" and tvm["target"].startswith("cortex-a76")
    if isinstance(tvm["verified"], dict):
        assert tvm["verified"]["max_abs_error"] <= 1e-4
    with pytest.raises(ValueError, match="unknown mobile device 'pi9'.*rpi4"):
        mobile_tvm.check_device("pi9")


def test_device_option_errors_are_one_line(tmp_path):
    from ..compiler.test_cli import _one_error_line, edgeattn

    tiny = str(tiny_attention_onnx(tmp_path / "tiny.onnx"))
    _one_error_line(edgeattn("compile", tiny, "--device", "rpi5", "-o", str(tmp_path / "a")), "--target mobile")
    _one_error_line(edgeattn("compile", tiny, "--target", "mobile", "--device", "pi9", "-o", str(tmp_path / "b")),
                    "unknown mobile device")


def test_int8_follows_the_device_rule_and_arithmetic(tmp_path):
    """Mobile int8: full 8-bit weights (the ARM64 rule, whatever the host) and the budget measured in
    the device's exact int8 arithmetic; the .ort carries the Q/DQ graph, the TVM bundle stays fp32-only."""
    if not targets.get("mobile").available()[0]:
        pytest.skip("mobile target unavailable")
    m = compile_model(str(tiny_attention_onnx(tmp_path / "t.onnx")), "mobile", tmp_path / "art",
                      target_options={"precision": "int8"}, budget="cosine>=0.99")
    q = m["quantization"]
    assert m["precision"] == "int8" and q["accepted"] and q["quantized"] == 3
    assert "exact int8 arithmetic" in q["measured_on"] and "ARM64" in q["rule"]["note"]
    assert q["rule"]["weight_max"] == 127
    assert m["mobile"]["tvm"]["built"] is False and "int8" in m["mobile"]["tvm"]["reason"]
    assert "host" in m["accuracy"]["note"] and m["accuracy"]["cosine"] >= 0.99
    sess = runtime.load(tmp_path / "art")
    assert sess.run(sess.example_feeds())["y"].shape[0] == 1
