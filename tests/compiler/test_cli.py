"""End-to-end: `edgeattn compile → run → profile → inspect` through the real CLI, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..tiny_models import tiny_attention_onnx

CLI = [sys.executable, "-m", "edgeattn.compiler.cli"]


def edgeattn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def _one_error_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    model = tiny_attention_onnx(tmp / "tiny.onnx")
    r = edgeattn("compile", str(model), "-o", str(tmp / "art"))
    assert r.returncode == 0, r.stderr
    return tmp / "art"


def test_compile_onnx_file_manifest(onnx_artifact):
    m = json.loads((onnx_artifact / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["target"] == "ort" and m["model"] == "tiny"
    assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 5, 8]}]
    assert m["outputs"][0]["name"] == "y"
    assert m["attention"]["sites"] == 1 and m["attention"]["canonicalized"] == 1
    assert {p["name"]: p["count"] for p in m["passes"]}["canonicalize-attention"] == 1
    assert m["accuracy"]["max_abs_error"] <= 1e-5 and m["accuracy"]["cosine"] > 0.99999
    assert "optimizations off" in m["accuracy"]["reference"]
    assert set(m["files"]) == {"model.onnx"} and len(m["files"]["model.onnx"]["sha256"]) == 64
    assert m["versions"]["onnxruntime"] and m["versions"]["torch"]


def test_run_profile_inspect(onnx_artifact, tmp_path):
    x = np.random.default_rng(1).standard_normal((3, 5, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = edgeattn("run", str(onnx_artifact), "--input", f"x={tmp_path / 'x.npy'}", "--save", str(tmp_path / "y.npz"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "y.npz")["y"].shape == (3, 5, 8)
    r = edgeattn("profile", str(onnx_artifact), "--runs", "20", "--json", str(tmp_path / "p.json"),
                 "--csv", str(tmp_path / "p.csv"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "p.json").read_text())
    lat = rep["latency"]
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert rep["throughput_per_s"] > 0 and rep["peak_rss_mb"] > 0
    assert any(op["op_type"] == "Attention" for op in rep["ops"])
    assert "p50" in r.stdout and (tmp_path / "p.csv").read_text().count("\n") > 3
    r = edgeattn("inspect", str(onnx_artifact), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert len(info["sites"]) == 1 and info["sites"][0]["q"] == ["batch", 2, 5, 4]
    assert info["sites"][0]["flops"] == 2 * 2 * 5 * 5 * (4 + 4)


def test_targets_json():
    r = edgeattn("targets", "--json")
    assert r.returncode == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["ort"]["available"] is True


def test_help_has_examples():
    for cmd in ("compile", "run", "profile", "inspect", "targets", "tune"):
        r = edgeattn(cmd, "--help")
        assert r.returncode == 0 and "Example" in r.stdout, cmd


def test_tune_help():
    r = edgeattn("tune", "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--trials", "--tuning-db", "--retune", "no artifact"):
        assert flag in r.stdout, flag
    r = edgeattn("compile", "--help")
    assert "--tune-trials" in r.stdout and "--tuning-db" in r.stdout


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

def test_unknown_zoo_name(tmp_path):
    r = edgeattn("compile", "deit-smal", "-o", str(tmp_path / "o"))
    _one_error_line(r, "unknown zoo model 'deit-smal'", "deit-small")
    assert not (tmp_path / "o").exists()


def test_missing_and_corrupt_onnx(tmp_path):
    _one_error_line(edgeattn("compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o")), "not found")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage-not-a-protobuf" * 10)
    _one_error_line(edgeattn("compile", str(bad), "-o", str(tmp_path / "o")), "not a valid ONNX model")
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]  # no temp dirs left


def test_unknown_target(tmp_path, onnx_artifact):
    r = edgeattn("compile", str(onnx_artifact.parent / "tiny.onnx"), "--target", "tpu", "-o", str(tmp_path / "o"))
    _one_error_line(r, "unknown target 'tpu'", "ort")
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_force(onnx_artifact):
    r = edgeattn("compile", str(onnx_artifact.parent / "tiny.onnx"), "-o", str(onnx_artifact))
    _one_error_line(r, "already exists", "--force")


def test_wrong_input_name_and_shape(onnx_artifact, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 8), np.float32))
    _one_error_line(edgeattn("run", str(onnx_artifact), "--input", f"x={tmp_path / 'x.npy'}"), "(batch, 5, 8)")
    _one_error_line(edgeattn("run", str(onnx_artifact), "--input", f"pixels={tmp_path / 'x.npy'}"), "pixels")
    np.save(tmp_path / "xi.npy", np.zeros((1, 5, 8), np.int64))
    _one_error_line(edgeattn("run", str(onnx_artifact), "--input", f"x={tmp_path / 'xi.npy'}"), "float32")


def test_tampered_artifact_is_refused(onnx_artifact, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(onnx_artifact, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    _one_error_line(edgeattn("profile", str(copy), "--runs", "1"), "SHA-256")


def test_debug_shows_traceback(tmp_path):
    r = edgeattn("--debug", "compile", str(tmp_path / "nope.onnx"))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_compile_without_compiler_extras_is_one_line(tmp_path):
    """A runtime-only install (no onnx_ir/torch) asked to compile: say which extra to install."""
    code = ("import sys; sys.modules['onnx_ir'] = None\n"
            "from edgeattn.compiler.cli import main\n"
            f"sys.argv = ['edgeattn', 'compile', 'digits-vit', '-o', {str(tmp_path / 'o')!r}]\n"
            "main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    _one_error_line(r, "onnx_ir", "pip install 'edgeattn[compiler]'")
    assert not (tmp_path / "o").exists()


# --- tuning options (checked before anything is loaded; no tvm needed) --------------------------

def test_tune_trials_on_a_target_that_does_not_tune(tmp_path):
    model = tiny_attention_onnx(tmp_path / "tiny.onnx")
    r = edgeattn("compile", str(model), "--target", "ort", "--tune-trials", "4", "-o", str(tmp_path / "o"))
    _one_error_line(r, "target 'ort' does not tune kernels", "--tune-trials", "--target tvm")
    r = edgeattn("compile", str(model), "--target", "openvino", "--tuning-db", str(tmp_path / "db"), "-o", str(tmp_path / "o"))
    _one_error_line(r, "target 'openvino' does not tune kernels", "--tuning-db")
    assert not (tmp_path / "o").exists() and not (tmp_path / "db").exists()


def test_negative_trials_are_rejected(tmp_path):
    model = tiny_attention_onnx(tmp_path / "tiny.onnx")
    r = edgeattn("compile", str(model), "--target", "tvm", "--tune-trials", "-1", "--tuning-db", str(tmp_path / "db"),
                 "-o", str(tmp_path / "o"))
    _one_error_line(r, "--tune-trials -1 is negative", "0 or more")
    r = edgeattn("tune", str(model), "--trials", "-2", "--tuning-db", str(tmp_path / "db"))
    _one_error_line(r, "--trials -2 is negative", "0 or more")
    assert not (tmp_path / "o").exists() and not (tmp_path / "db").exists()
