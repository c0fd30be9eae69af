"""mobile (ONNX Runtime Mobile variant): ORT-format payload, the reduced-operator config a minimal
build needs, and the NNAPI/CoreML usability report; numerics are in the every-target template."""

from __future__ import annotations

import json

import pytest

from edgeattn import targets
from edgeattn.compiler.compile import compile_model

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
    assert m["payload"] == {"model": "model.ort", "operators": "required_operators.config",
                            "usability": "mobile-usability.json"}
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
