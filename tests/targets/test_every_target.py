"""One template, run for every registered target: available ones must compile, load through the
runtime and match the reference; unavailable ones skip with their reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from edgeattn import runtime, targets
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import CompileError
from edgeattn.runtime.errors import ArtifactError

from ..tiny_models import D, H, S, tiny_attention_onnx

TARGET_ROWS = {row["name"]: row for row in targets.describe_all()}


def _require(name: str, run: bool = True) -> None:
    """Skip where the target cannot build here, or (run=True) where it builds but cannot run here."""
    row = TARGET_ROWS[name]
    if not row["available"]:
        pytest.skip(f"target {name} unavailable: {row['reason']}")
    here = getattr(targets.get(name), "runs_here", None)
    if run and here is not None and not here()[0]:
        pytest.skip(f"target {name} builds here but cannot run here: {here()[1]}")


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


@pytest.fixture(scope="module")
def artifacts(tiny_onnx, tmp_path_factory) -> dict:
    """One compiled artifact per available target, shared by the checks below."""
    out = {}
    for name, row in TARGET_ROWS.items():
        if row["available"]:
            out[name] = tmp_path_factory.mktemp(f"every-{name}") / "art"
            compile_model(str(tiny_onnx), name, out[name])
    return out


@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_concurrent_runs_are_independent(name, artifacts):
    _require(name)
    sess = runtime.load(artifacts[name])
    rng = np.random.default_rng(5)
    feeds = [{**sess.example_feeds(), "x": rng.standard_normal((1, S, H * D)).astype(np.float32)} for _ in range(4)]
    expected = [sess.run(f)["y"] for f in feeds]
    errors: list[str] = []

    def worker(i):
        for _ in range(20):
            if not np.array_equal(sess.run(feeds[i])["y"], expected[i]):
                errors.append(f"thread {i} got another thread's result")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_benchmark_per_op_rows(name, artifacts):
    _require(name)
    report = runtime.load(artifacts[name]).benchmark(runs=3, warmup=1, per_op=True)
    assert report["backend"] == targets.get(name).RUNTIME_BACKEND and report["latency"]["p50_ms"] > 0
    rows = report["ops"]
    assert rows and set(rows[0]) == {"op_type", "name", "calls", "total_ms", "mean_ms", "percent"}
    assert all(r["calls"] >= 1 for r in rows)
    assert sum(r["percent"] for r in rows) == pytest.approx(100.0)
    assert rows == sorted(rows, key=lambda r: r["total_ms"], reverse=True)


@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_missing_payload_file_is_refused(name, artifacts, tmp_path):
    _require(name, run=False)
    broken = tmp_path / "broken"
    shutil.copytree(artifacts[name], broken)
    payload = sorted(json.loads((broken / "manifest.json").read_text())["payload"].values())[-1]
    (broken / payload).unlink()
    with pytest.raises(ArtifactError, match=payload.split("/")[-1]):
        runtime.load(broken)


@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_target_rejects_unknown_precision(name, tiny_onnx, tmp_path):
    _require(name, run=False)
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


@pytest.mark.parametrize("name", sorted(TARGET_ROWS))
def test_int8_where_the_target_has_it(name, tiny_onnx, tmp_path):
    """The shared Q/DQ graph, placed by the target's rule, loads and stays within its budget on
    the built artifact (accuracy is measured on the target itself, not the fake-quant graph)."""
    _require(name)
    if "int8" not in getattr(targets.get(name), "PRECISIONS", ()):
        pytest.skip(f"target {name} has no int8 path")
    m = compile_model(str(tiny_onnx), name, tmp_path / "art", target_options={"precision": "int8"}, budget="cosine>=0.99")
    assert m["precision"] == "int8" and m["quantization"]["accepted"] and m["quantization"]["quantized"] == 3
    assert m["accuracy"]["cosine"] >= 0.99
    sess = runtime.load(tmp_path / "art")
    assert sess.run(sess.example_feeds(seed=4))["y"].shape == (1, S, H * D)
