"""The compile's check that an fp32 artifact computes the graph it was built from (against that
graph on ONNX Runtime with optimizations off), and the comparison it relies on."""

from __future__ import annotations

import numpy as np
import pytest

from edgeattn.compiler import compile as compile_mod
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import CompileError
from edgeattn.runtime.check import compare, within_marks

from ..tiny_models import tiny_attention_onnx


def test_nan_on_one_side_fails_and_nan_on_both_agrees():
    ref = [np.array([1.0, 2.0, np.nan], np.float32)]
    bad = compare(ref, [np.array([1.0, np.nan, np.nan], np.float32)])
    assert bad["max_abs_error"] == float("inf") and bad["cosine"] == -1.0 and not within_marks(bad, "fp32")
    same = compare(ref, [np.array([1.0, 2.0, np.nan], np.float32)])
    assert same["max_abs_error"] == 0.0 and within_marks(same, "fp32")


def test_the_compile_records_the_check(tmp_path):
    m = compile_model(str(tiny_attention_onnx(tmp_path / "t.onnx")), "ort", tmp_path / "art")
    check = m["accuracy"]["vs_graph"]
    assert check["reference"] == "this graph on ONNX Runtime, optimizations off" and within_marks(check, "fp32")


def test_an_artifact_that_does_not_compute_its_graph_fails_the_compile(tmp_path, monkeypatch):
    """A backend that returns wrong numbers (as TVM did on ToMe graphs) stops the compile; no artifact."""
    opened = compile_mod._open_backend

    class Wrong:
        def __init__(self, backend):
            self.backend = backend

        def run(self, feeds):
            return [o + 0.01 for o in self.backend.run(feeds)]

    monkeypatch.setattr(compile_mod, "_open_backend", lambda work, manifest: Wrong(opened(work, manifest)))
    with pytest.raises(CompileError, match="does not compute its graph: max abs error 0.01"):
        compile_model(str(tiny_attention_onnx(tmp_path / "t.onnx")), "ort", tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_compile_summary_prints_the_check(tmp_path):
    from .test_cli import edgeattn

    done = edgeattn("compile", str(tiny_attention_onnx(tmp_path / "t.onnx")), "-o", str(tmp_path / "art"))
    assert done.returncode == 0, done.stderr
    assert "artifact vs its own graph (ONNX Runtime, optimizations off): max abs error" in done.stdout
