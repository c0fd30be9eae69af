"""tvm-cuda target on a machine without a GPU: the build (Relax → CUDA source → nvcc fatbin, one
executable for several batch sizes, the runtime bundle, check.npz) and the runtime-only loader.
Running the kernels needs an NVIDIA GPU: tests/benchmarks/gpu_tvm_cuda.py does that on the H100."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed — pip install 'edgeattn[tvm]'")

from edgeattn import targets  # noqa: E402
from edgeattn.compiler.compile import compile_model  # noqa: E402
from edgeattn.runtime import check  # noqa: E402
from edgeattn.runtime.errors import BackendUnavailable, EdgeAttnError  # noqa: E402

from ..tiny_models import S, tiny_attention_onnx  # noqa: E402

tvm_cuda = targets.get("tvm-cuda")
_ok, _why = tvm_cuda.available()
pytestmark = pytest.mark.skipif(not _ok, reason=_why)


def _ort(model: Path, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_attention_onnx(tmp_path_factory.mktemp("cuda") / "tiny.onnx")


@pytest.fixture(scope="module")
def artifact(tiny, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cuda-art") / "art"
    manifest = compile_model(str(tiny), "tvm-cuda", out, target_options={"batches": "1,3"})
    return out, manifest


def test_artifact_bundles_kernels_runtime_and_check(artifact):
    out, m = artifact
    opts = m["backend_options"]
    assert m["backend"] == "tvm-cuda" and opts["arch"] == "sm_90" and opts["cuda_graph"] is True
    assert opts["entries"] == {"1": "main_b1", "3": "main_b3"} and opts["batch_dims"] == ["batch"]
    fatbin = (out / "kernels.fatbin").read_bytes()
    assert fatbin[:4] == bytes.fromhex("50ed55ba")  # fatbin magic 0xBA55ED50, little-endian
    for lib in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        assert (out / "runtime" / lib).stat().st_size > 100_000
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert {"model.so", "kernels.fatbin", "check.npz", "runtime/libtvm_runtime.so"} <= set(files)
    acc = m["accuracy"]
    if not tvm_cuda.runs_here()[0]:
        assert acc["verified"] is False and acc["check_batches"] == [1, 3] and "GPU" in acc["reason"]


def test_fatbin_holds_every_kernel_of_the_source(tiny, tmp_path):
    """The fatbin is compiled from exactly the CUDA source the executable carries (its SHA-256 is
    what the runtime matches at load); every __global__ kernel of it is in the fatbin."""
    import onnx_ir as ir

    model = ir.load(str(tiny))
    tvm_cuda.legalize(model)
    import tvm

    mod, shared = tvm_cuda.relax_functions(model, [1, 2])
    assert shared  # one import, specialised per batch size
    assert {gv.name_hint for gv in mod.get_global_vars()} == {"main_b1", "main_b2"}
    ex = tvm.compile(mod, tvm_cuda.cuda_target("sm_90"))
    source = tvm_cuda._cuda_source(ex)
    names = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', source)
    assert names
    tvm_cuda.compile_kernels(source, "sm_90", tmp_path / "k.fatbin")
    blob = (tmp_path / "k.fatbin").read_bytes()
    assert all(n.encode() in blob for n in names)


def test_check_npz_rebuilds_inputs_and_holds_the_reference(artifact, tiny):
    out, m = artifact
    cases = check.unpack(out / check.CHECK_FILE, m)
    assert sorted(cases) == [1, 3]
    feeds, refs = cases[3]
    assert feeds["x"].shape == (3, S, 8)
    np.testing.assert_allclose(refs[0], _ort(tiny, feeds)[0], rtol=1e-5, atol=1e-5)


def test_check_npz_refuses_inputs_that_do_not_rebuild(artifact, tmp_path):
    out, m = artifact
    with np.load(out / check.CHECK_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["seed"] = 7  # another seed draws other inputs: their SHA-256 no longer matches
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "check.npz", **arrays)
    with pytest.raises(EdgeAttnError, match="rebuilt here differ"):
        check.unpack(tmp_path / "check.npz", m)


def test_runtime_only_loader_runs_a_tvm_executable_without_the_tvm_package(tiny, tmp_path):
    """The loader the GPU machine uses (tvm-ffi + libtvm_runtime, no `tvm` import), on a CPU build."""
    import tvm

    art = tmp_path / "cpu"
    compile_model(str(tiny), "tvm", art)
    x = np.random.default_rng(0).standard_normal((1, S, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = f"""
import sys, numpy as np
from pathlib import Path
from edgeattn.runtime.backends import tvm_cuda as B
ffi = B.load_runtime(Path({str(Path(tvm.__file__).parent / 'lib')!r}), ("libtvm_runtime.so",))
r = B.VmRunner(ffi, Path({str(art / 'model.so')!r}), "cpu")
y = r.function("main")(r.to_device(np.load({str(tmp_path / 'x.npy')!r})))
np.save({str(tmp_path / 'y.npy')!r}, r.to_numpy(y))
assert "tvm" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), _ort(tiny, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_load_callback_serves_the_prebuilt_kernels_by_source_hash():
    from edgeattn.runtime.backends import tvm_cuda as backend

    backend._KERNELS[hashlib.sha256(b"__global__ k(){}").hexdigest()] = b"FATBIN"
    cb = backend._compile_callback(None)
    assert cb("__global__ k(){}") == b"FATBIN"
    with pytest.raises(RuntimeError, match="not built from this model.so"):
        cb("__global__ other(){}")
    assert backend._compile_callback(lambda code: b"JIT")("other") == b"JIT"  # not ours: the previous callback


def test_open_without_a_gpu_names_the_driver(artifact):
    if tvm_cuda.runs_here()[0]:
        pytest.skip("a CUDA GPU is present")
    from edgeattn import runtime

    with pytest.raises(BackendUnavailable, match="libcuda|CUDA GPU"):
        runtime.load(artifact[0])


def test_bad_options_are_one_line_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="sm_XY"):
        compile_model(str(tiny), "tvm-cuda", tmp_path / "a", target_options={"arch": "hopper"})
    with pytest.raises(ValueError, match="batches"):
        compile_model(str(tiny), "tvm-cuda", tmp_path / "b", target_options={"batches": "0"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_batch_the_frontend_cannot_import_symbolically_is_imported_per_size(tmp_path):
    """Relax's ONNX frontend fails on a symbolic-batch mask Expand: each size gets its own import."""
    masked = tiny_attention_onnx(tmp_path / "masked.onnx", mask=True)
    m = compile_model(str(masked), "tvm-cuda", tmp_path / "art", target_options={"batches": [1, 2]})
    assert m["backend_options"]["weights_shared"] is False
    assert m["backend_options"]["entries"] == {"1": "main_b1", "2": "main_b2"}
    feeds, refs = check.unpack(tmp_path / "art" / check.CHECK_FILE, m)[2]
    assert feeds["mask"].shape == (2, 1, 1, S) and refs[0].shape == (2, S, 8)


def test_precision_plan_is_checked_on_this_cpu(tiny, tmp_path):
    """Without a GPU the compile runs the same Relax module (fp16 casts included) on the CPU."""
    for precision, cosine in (("fp32", 0.999999), ("fp16", 0.999)):
        m = compile_model(str(tiny), "tvm-cuda", tmp_path / precision, target_options={"precision": precision})
        h = m["accuracy"].get("host_emulation")
        if tvm_cuda.runs_here()[0]:
            assert h is None
            continue
        assert h["batch"] == 1 and h["cosine"] >= cosine, h
        assert (h["max_abs_error"] <= 1e-4) == (precision == "fp32")
