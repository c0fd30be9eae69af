"""One template, run for every registered target: available ones must compile, load through the
runtime and match the reference; unavailable ones skip with their reason."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeattn import runtime, targets
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import CompileError

from ..tiny_models import tiny_attention_onnx

TARGET_ROWS = {row["name"]: row for row in targets.describe_all()}


def _require(name: str) -> None:
    row = TARGET_ROWS[name]
    if not row["available"]:
        pytest.skip(f"target {name} unavailable: {row['reason']}")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return tiny_attention_onnx(tmp_path_factory.mktemp("every") / "tiny.onnx", mask=True)


@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_target_compiles_and_matches_reference(name, tiny_onnx, tmp_path):
    _require(name)
    m = compile_model(str(tiny_onnx), name, tmp_path / "art")
    assert m["target"] == name and m["accuracy"]["max_abs_error"] <= 1e-4
    legal = m["attention"]["legalization"]
    assert legal["attention_native"] + legal["attention_decomposed"] == m["attention"]["canonicalized"] == 1
    sess = runtime.load(tmp_path / "art")
    feeds = sess.example_feeds(seed=3)
    feeds["mask"][..., -1] = False  # a padded key
    ref = compile_model(str(tiny_onnx), "ort", tmp_path / "ref", pipeline="none")
    assert ref["attention"]["canonicalized"] == 0
    want = runtime.load(tmp_path / "ref").run(feeds)
    got = sess.run(feeds)
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_target_rejects_unknown_precision(name, tiny_onnx, tmp_path):
    _require(name)
    with pytest.raises(CompileError, match="does not support precision int3"):
        compile_model(str(tiny_onnx), name, tmp_path / "a", target_options={"precision": "int3"})
    assert not (tmp_path / "a").exists()


def test_missing_backend_names_the_extra(tiny_onnx, tmp_path):
    """Simulate a machine without openvino: compile says which extra to install, in one line."""
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from edgeattn.compiler.cli import main\n"
            f"sys.argv = ['edgeattn', 'compile', {str(tiny_onnx)!r}, '--target', 'openvino', '-o', {str(tmp_path / 'o')!r}]\n"
            "main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'edgeattn[openvino]'" in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_targets_command_reports_every_target():
    r = subprocess.run([sys.executable, "-m", "edgeattn.compiler.cli", "targets", "--json"],
                       capture_output=True, text=True, timeout=300)
    rows = json.loads(r.stdout)
    assert {row["name"] for row in rows} == set(targets.TARGETS)
    assert all(row["available"] or row["reason"] for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit-tiny", "deit-small", "digits-vit", "minilm-l6", "gpt2-small"])
@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_zoo_model_fp32_within_1e4(name, model, tmp_path):
    _require(name)
    m = compile_model(model, name, tmp_path / "art")
    assert m["accuracy"]["max_abs_error"] <= 1e-4, m["accuracy"]
