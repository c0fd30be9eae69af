"""TVM target end to end: compile a tiny ONNX attention model to a Relax `model.so`, load it with
edgeattn.runtime, check accuracy, the payload table, the static batch, per-op profiling, concurrency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed — pip install 'edgeattn[tvm]'")

from edgeattn import runtime, targets  # noqa: E402
from edgeattn.compiler.compile import compile_model  # noqa: E402
from edgeattn.runtime.errors import ArtifactError, InputError  # noqa: E402
from edgeattn.targets import tvm as tvm_target  # noqa: E402

from ..tiny_models import D, H, S, tiny_attention_onnx as _tiny_attention_onnx  # noqa: E402


def _ort_reference(model: Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_attention_onnx(tmp_path_factory.mktemp("tvm") / "tiny.onnx")


@pytest.fixture(scope="module")
def artifact(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tvm-art") / "art"
    compile_model(str(tiny), "tvm", out)
    return out


def test_available_and_registered():
    ok, reason = tvm_target.available()
    assert ok, reason
    assert reason.startswith("apache-tvm ")
    assert targets.get("tvm") is tvm_target
    assert {r["name"]: r["available"] for r in targets.describe_all()}["tvm"] is True


def test_manifest_payload_and_accuracy(artifact):
    m = json.loads((artifact / "manifest.json").read_text())
    assert m["target"] == "tvm" and m["backend"] == "tvm"
    assert m["payload"] == {"model": "model.so"}
    assert set(m["files"]) == {"model.so"} and len(m["files"]["model.so"]["sha256"]) == 64
    opts = m["backend_options"]
    assert opts["entry"] == "main" and opts["tuned"] is False and opts["static_dims"] == {"batch": 1}
    assert opts["target"]["kind"] == "llvm" and opts["target"]["mcpu"] and opts["target"]["num_cores"] >= 1
    assert opts["target_key"] == f"llvm-{opts['target']['mcpu']}-{opts['target']['num_cores']}c"
    assert m["attention"]["canonicalized"] == 1
    # Relax's ONNX frontend has no Attention-23: the canonical op is expanded before import.
    assert m["attention"]["legalization"] == {"attention_native": 0, "attention_decomposed": 1, "conv_patchified": 0}
    # The specs stay symbolic; the library itself is compiled for batch 1 (static_dims above).
    assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", S, H * D]}]
    assert m["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", S, H * D]}]
    assert m["accuracy"]["max_abs_error"] <= 1e-4 and m["accuracy"]["cosine"] > 0.9999


def test_runtime_matches_ort_on_fresh_inputs(artifact, tiny):
    sess = runtime.load(artifact, threads=1)
    assert sess.output_names == ["y"] and sess.threads >= 1
    for seed in (3, 4):
        x = np.random.default_rng(seed).standard_normal((1, S, H * D)).astype(np.float32)
        y = sess.run({"x": x})["y"]
        ref = _ort_reference(tiny, {"x": x})
        assert y.shape == ref.shape and np.abs(y - ref).max() <= 1e-4


def test_larger_batch_runs_as_a_loop_of_batch_one(artifact, tiny):
    sess = runtime.load(artifact)
    x = np.random.default_rng(7).standard_normal((3, S, H * D)).astype(np.float32)
    y = sess.run({"x": x})["y"]
    assert y.shape == (3, S, H * D) and np.abs(y - _ort_reference(tiny, {"x": x})).max() <= 1e-4
    assert np.array_equal(y[1:2], sess.run({"x": x[1:2]})["y"])


def test_unloopable_batch_is_an_input_error(artifact):
    from edgeattn.runtime.backends import tvm as backend

    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["outputs"][0]["shape"] = [S, "batch", H * D]  # batch not on axis 0: cannot loop
    handle = backend.open(artifact, manifest, threads=1)
    with pytest.raises(InputError, match="compiled for"):
        handle.run({"x": np.zeros((2, S, H * D), np.float32)})


def test_benchmark_per_op_rows(artifact):
    report = runtime.load(artifact).benchmark(runs=3, warmup=1, per_op=True)
    assert report["backend"] == "tvm" and report["batch"] == 1 and report["latency"]["p50_ms"] > 0
    rows = report["ops"]
    assert rows and set(rows[0]) == {"op_type", "name", "calls", "total_ms", "mean_ms", "percent"}
    assert all(r["calls"] >= 1 for r in rows)
    assert any(not r["name"].startswith("vm.") for r in rows)  # the compiled kernels, not only builtins
    assert sum(r["percent"] for r in rows) == pytest.approx(100.0)
    assert rows == sorted(rows, key=lambda r: r["total_ms"], reverse=True)


def test_bool_padding_mask_model(tmp_path):
    src = _tiny_attention_onnx(tmp_path / "masked.onnx", mask=True)
    m = compile_model(str(src), "tvm", tmp_path / "art")
    assert m["attention"]["legalization"]["attention_decomposed"] == 1
    assert m["accuracy"]["max_abs_error"] <= 1e-4
    sess = runtime.load(tmp_path / "art")
    x = np.random.default_rng(0).standard_normal((2, S, H * D)).astype(np.float32)
    mask = np.ones((2, 1, 1, S), bool)
    mask[1, ..., -2:] = False
    y = sess.run({"x": x, "mask": mask})["y"]
    assert np.abs(y - _ort_reference(src, {"x": x, "mask": mask})).max() <= 1e-4


def test_bad_options_are_one_line_errors(tiny, tmp_path):
    from edgeattn.compiler.errors import CompileError

    with pytest.raises(CompileError, match="does not support precision bf16"):
        compile_model(str(tiny), "tvm", tmp_path / "a", target_options={"precision": "bf16"})
    with pytest.raises(ValueError, match="num_cores"):
        compile_model(str(tiny), "tvm", tmp_path / "b", target_options={"num_cores": 0})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_payload_is_an_artifact_error(artifact, tmp_path):
    import shutil

    from edgeattn.runtime.backends import tvm as backend

    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    (broken / "model.so").unlink()
    manifest = json.loads((broken / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match="model.so is missing"):
        backend.open(broken, manifest, threads=1)


@pytest.mark.slow
def test_digits_vit_end_to_end(tmp_path):
    m = compile_model("digits-vit", "tvm", tmp_path / "digits")
    legal = m["attention"]["legalization"]
    assert legal["attention_native"] == 0 and legal["attention_decomposed"] == m["attention"]["canonicalized"] > 0
    assert m["accuracy"]["max_abs_error"] <= 1e-4, m["accuracy"]
    assert m["accuracy"]["top1"] == m["accuracy"]["reference_top1"]
    assert runtime.load(tmp_path / "digits").benchmark(runs=2, warmup=1)["latency"]["p50_ms"] > 0


def test_default_schedules_cover_every_kernel_and_keep_the_numbers(tiny):
    """An untuned build schedules every kernel (kernels/tvm_cpu_rules.py: tiled GEMMs in parallel,
    vectorised layout ops) instead of LegalizeOps' serial loops, with the same outputs."""
    import onnx_ir as ir

    from edgeattn.kernels.tvm_cpu_rules import apply_default_schedules

    model = ir.load(str(tiny))
    tvm_target.legalize(model)
    mod = tvm_target.import_relax(model)
    target = tvm_target.host_target()
    fused = tvm_target._fused(mod, target)
    with target:
        scheduled = apply_default_schedules()(fused)
    prims = {gv.name_hint: f for gv, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert prims and all(f.attrs and f.attrs.get("tirx.is_scheduled", False) for f in prims.values()), sorted(prims)
    x = np.random.default_rng(2).standard_normal((1, S, H * D)).astype(np.float32)
    outs = []
    for ex in (tvm_target.compile_default(mod, target), tvm.compile(mod, target)):
        vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[0], _ort_reference(tiny, {"x": x}), rtol=1e-4, atol=1e-4)


def test_ragged_gemm_is_padded_to_whole_tiles_and_stays_exact(tmp_path):
    """A GEMM whose rows/columns do not divide into the register tile (attention's 198×198
    scores) is padded to whole tiles (pad_einsum) rather than left scalar; same numbers."""
    import onnx
    import onnx_ir as ir
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 37, 16]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 16, 37])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 37, 37])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    model = ir.from_proto(m)
    mod, target = tvm_target.import_relax(model), tvm_target.host_target()
    from edgeattn.kernels.tvm_cpu_rules import apply_default_schedules

    with target:
        scheduled = apply_default_schedules()(tvm_target._fused(mod, target))
    script = next(f for gv, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)).script()
    assert "pad" in script  # the padded operand copies
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 3, 37, 16)).astype(np.float32), rng.standard_normal((1, 3, 16, 37)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy(), a @ b, rtol=1e-5, atol=1e-5)


def test_cumsum_beside_a_packed_weight_compiles_and_stays_exact():
    """RoBERTa's position ids (a CumSum, TOPI's hand-written IR without a root block of blocks) in
    the same module as a GEMM whose constant weight is packed at compile time: relax's
    SplitLayoutRewritePreproc stopped on the cumsum (found by the architecture sweep)."""
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 48)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("CumSum", ["ids", "axis"], ["pos"]), helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 12]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, 16])],
        [helper.make_tensor_value_info("pos", TensorProto.INT64, [1, 12]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, 48])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(1, np.int64), "axis")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    mod, target = tvm_target.import_relax(ir.from_proto(m)), tvm_target.host_target()
    ids, x = rng.integers(0, 2, (1, 12)).astype(np.int64), rng.standard_normal((1, 12, 16)).astype(np.float32)
    ex = tvm_target.compile_default(mod, target)
    assert "_prepacked" in ex.stats()  # the weight was packed while compiling
    pos, y = tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(ids), tvm.runtime.tensor(x))
    np.testing.assert_array_equal(pos.numpy(), np.cumsum(ids, axis=1))
    np.testing.assert_allclose(y.numpy(), x @ w, rtol=1e-5, atol=1e-5)
