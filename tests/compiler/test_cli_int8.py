"""`compile --precision int8 --calib ...` and `explain --layers` through the real CLI, and bad
calibration input (one clear line, no artifact)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ..tiny_models import D, H, S, tiny_attention_onnx
from .test_cli import _one_error_line, edgeattn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_attention_onnx(tmp_path_factory.mktemp("int8") / "tiny.onnx")


def _calib(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_int8_with_given_calibration_and_layer_report(tiny, tmp_path):
    x = np.random.default_rng(0).standard_normal((6, S, H * D)).astype(np.float32)
    calib = _calib(tmp_path / "calib.npz", x=x)
    r = edgeattn("compile", str(tiny), "--precision", "int8", "--calib", calib, "--calib-method", "auto",
                 "--budget", "cosine>=0.99", "-o", str(tmp_path / "art"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "art" / "manifest.json").read_text())
    q = m["quantization"]
    assert m["precision"] == "int8" and q["accepted"] and q["matmuls"] == 3 and q["calibration_source"] == "given (--calib)"
    assert set(q["methods_tried"]) == {"minmax", "percentile"} and q["method_chosen"] in q["methods_tried"]
    assert "int8 (budget cosine>=0.99): accepted" in r.stdout and f"auto: {q['method_chosen']} (chosen)" in r.stdout
    r = edgeattn("explain", str(tmp_path / "art"), "--layers", "--csv", str(tmp_path / "layers.csv"))
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "layers.csv").read_text().strip().splitlines()
    assert rows[0].startswith("layer,node,precision") and len(rows) == 1 + 3


@pytest.mark.parametrize("arrays,needle", [
    ({"y": np.zeros((2, S, H * D), np.float32)}, "do not match the model's inputs"),
    ({"x": np.zeros((2, S + 1, H * D), np.float32)}, "has shape"),
    ({"x": np.zeros((2, S, H * D), np.float64)}, "is float64"),
    ({"x": np.zeros((0, S, H * D), np.float32)}, "empty"),
])
def test_bad_calibration_is_one_line(tiny, tmp_path, arrays, needle):
    calib = _calib(tmp_path / "bad.npz", **arrays)
    r = edgeattn("compile", str(tiny), "--precision", "int8", "--calib", calib, "-o", str(tmp_path / "art"))
    _one_error_line(r, needle)
    assert not (tmp_path / "art").exists()


def test_corrupt_calibration_file(tiny, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    r = edgeattn("compile", str(tiny), "--precision", "int8", "--calib", str(bad), "-o", str(tmp_path / "art"))
    _one_error_line(r, "not a readable .npz")


def test_npy_and_empty_calibration_files(tmp_path):
    from edgeattn.compiler.calib import load_calibration
    from edgeattn.compiler.errors import CompileError

    np.save(tmp_path / "one.npy", np.zeros((2, S, H * D), np.float32))  # np.load gives an array, not an archive
    with pytest.raises(CompileError, match="is a .npy"):
        load_calibration(tmp_path / "one.npy")
    (tmp_path / "empty.npz").write_bytes(b"")  # np.load raises EOFError: was a bare "Aborted."
    with pytest.raises(CompileError, match="not a readable .npz"):
        load_calibration(tmp_path / "empty.npz")


def test_layers_without_int8_is_one_line(tiny, tmp_path):
    assert edgeattn("compile", str(tiny), "-o", str(tmp_path / "art")).returncode == 0
    _one_error_line(edgeattn("explain", str(tmp_path / "art"), "--layers"), "no int8 layer report")

