"""TVM CUDA backend: the artifact's Relax VM executable on an NVIDIA GPU, with the TVM runtime alone.

Needs apache-tvm-ffi (`pip install apache-tvm-ffi==0.1.14.post1`), numpy and the NVIDIA driver;
not the TVM compiler, not nvcc, not torch. It loads the runtime libraries the artifact ships
(runtime/: libcudart, libtvm_runtime, libtvm_runtime_cuda) and answers TVM's load-time CUDA
compile callback (`tvm_callback_cuda_compile`) with the artifact's prebuilt kernels.fatbin,
matched by the SHA-256 of the kernel source (targets/tvm_cuda.py says why). Where the full
`tvm` package is already imported, its own runtime libraries are used instead (two copies of
libtvm_runtime in one process would register every global twice).

Batch: the executable holds one function per compiled batch size (`entries`); a feed of another
batch runs as a loop of batch-1 calls when batch 1 was compiled, else it is an InputError.
"""
from __future__ import annotations

import ctypes
import hashlib
import sys
import threading
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, BackendUnavailable, InputError

_RECOMPILE = "recompile with edgeattn compile --target tvm-cuda"
_KERNELS: dict[str, bytes] = {}  # kernel-source SHA-256 → fatbin, for every artifact opened here
_LOADED: set[str] = set()
_lock = threading.Lock()
_KDL = {"cpu": 1, "cuda": 2}
_POOLED = 2
_LIBS = ("libcudart.so.13", "libtvm_runtime.so", "libtvm_runtime_cuda.so")


def _import_ffi():
    try:
        import tvm_ffi
    except ImportError:
        raise BackendUnavailable("apache-tvm-ffi is not installed",
                                 "pip install apache-tvm-ffi==0.1.14.post1 (the TVM runtime's FFI)") from None
    return tvm_ffi


def load_runtime(lib_dir: Path, libs: tuple[str, ...] = _LIBS):
    """Load the shipped runtime libraries once per process (RTLD_GLOBAL: later ones link to earlier)."""
    tvm_ffi = _import_ffi()
    if "tvm" in sys.modules:  # the full TVM is here: its libtvm_runtime is loaded already
        import tvm.backend.cuda  # noqa: F401 - loads libtvm_runtime_cuda where a driver exists
        return tvm_ffi
    for name in libs:
        path = Path(lib_dir) / name
        if name in _LOADED or (name.startswith("libcudart") and (not path.is_file() or _mapped(name))):
            continue  # a CUDA runtime is loaded already (torch's), or the system's must resolve
        if not path.is_file():
            raise ArtifactError(f"runtime library {path} is missing", _RECOMPILE)
        try:
            ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise BackendUnavailable(f"cannot load {name}: {e}",
                                     "this needs the NVIDIA driver (libcuda.so.1) of a CUDA 13 capable GPU") from None
        _LOADED.add(name)
    return tvm_ffi


def _mapped(soname: str) -> bool:
    """Whether a library of this name is loaded in this process already (Linux)."""
    try:
        return any(line.rstrip().endswith("/" + soname) for line in Path("/proc/self/maps").read_text().splitlines())
    except OSError:
        return False


def _compile_callback(previous):
    def compile_cuda(code: str) -> bytes:
        key = hashlib.sha256(code.encode()).hexdigest()
        if key in _KERNELS:
            return _KERNELS[key]
        if previous is not None:  # e.g. tvm.support.nvcc's JIT, for modules that are not ours
            return previous(code)
        raise RuntimeError("the artifact's kernels.fatbin was not built from this model.so's CUDA source — "
                           + _RECOMPILE)
    compile_cuda.edgeattn = True
    return compile_cuda


def register_kernels(tvm_ffi, fatbin: bytes, sha256: str) -> None:
    with _lock:
        _KERNELS[sha256] = fatbin
        previous = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)
        if previous is None or not getattr(previous, "edgeattn", False):
            tvm_ffi.register_global_func("tvm_callback_cuda_compile", _compile_callback(previous), override=True)


def cuda_present(tvm_ffi) -> bool:
    try:  # kExist of device 0; raises where the CUDA device API is not registered
        return bool(tvm_ffi.get_global_func("runtime.GetDeviceAttr")(_KDL["cuda"], 0, 0))
    except Exception:
        return False


class VmRunner:
    """A Relax VM over an exported executable, driven through tvm-ffi globals only."""

    def __init__(self, tvm_ffi, lib_path: Path, device: str = "cuda"):
        g = tvm_ffi.get_global_func
        self._alloc, self._from, self._to = (g("runtime.TVMTensorAllocWithScope"), g("runtime.TVMTensorCopyFromBytes"),
                                            g("runtime.TVMTensorCopyToBytes"))
        self._ffi, self.device = tvm_ffi, tvm_ffi.device(device, 0)
        self._vm = tvm_ffi.load_module(str(lib_path))["vm_load_executable"]()
        init = [_KDL[device], 0, _POOLED] + ([_KDL["cpu"], 0, _POOLED] if device != "cpu" else [])
        self._vm["vm_initialization"](*init)

    def function(self, name: str):
        return self._vm[name]

    def to_device(self, a: np.ndarray):
        a = np.ascontiguousarray(a)
        t = self._alloc(self._ffi.Shape(list(a.shape)), self._ffi.dtype(str(a.dtype)), self.device, None)
        self._from(t, a.ctypes.data_as(ctypes.c_void_p), a.nbytes)
        return t

    def to_numpy(self, t) -> np.ndarray:
        out = np.empty(tuple(t.shape), dtype=np.dtype(str(t.dtype)))
        self._to(t, out.ctypes.data_as(ctypes.c_void_p), out.nbytes)
        return out


class TvmCudaHandle:
    def __init__(self, runner: VmRunner, entries: dict, inputs: list[dict], outputs: list[dict], batch_dims: list[str]):
        self._runner = runner
        self._fns = {int(b): runner.function(name) for b, name in entries.items()}
        self._inputs = [s["name"] for s in inputs]
        self._batched = [bool(s["shape"]) and s["shape"][0] in batch_dims for s in inputs]
        self.output_names = [s["name"] for s in outputs]
        self.threads = 1
        self._lock = threading.Lock()  # a VM is not re-entrant

    def run(self, feeds):
        arrays = [np.asarray(feeds[n]) for n in self._inputs]
        sizes = {a.shape[0] for a, b in zip(arrays, self._batched) if b and a.ndim}
        size = sizes.pop() if len(sizes) == 1 else None
        if size in self._fns:
            return self._run_once(self._fns[size], arrays)
        if size is None or 1 not in self._fns:
            raise InputError(f"this tvm-cuda artifact is compiled for batch sizes {sorted(self._fns)}; got {sorted(sizes) or 'none'}",
                             "feed one of those, or recompile with -O batches=...")
        runs = [self._run_once(self._fns[1], [a[i:i + 1] if b else a for a, b in zip(arrays, self._batched)])
                for i in range(size)]
        return [np.concatenate(parts, axis=0) for parts in zip(*runs)]

    def _run_once(self, fn, arrays):
        r = self._runner
        with self._lock:
            result = fn(*[r.to_device(a) for a in arrays])
            outs = [result] if hasattr(result, "shape") else list(result)
            if len(outs) != len(self.output_names):
                raise ArtifactError(f"tvm-cuda model returned {len(outs)} output(s), the manifest lists "
                                    f"{len(self.output_names)}", _RECOMPILE)
            return [r.to_numpy(o) for o in outs]


def open(artifact_dir: Path, manifest: dict, threads: int | None, profile: bool = False) -> TvmCudaHandle:
    d = Path(artifact_dir)
    payload, opts = manifest.get("payload") or {}, manifest.get("backend_options") or {}
    if "model" not in payload or "kernels" not in payload or not opts.get("entries"):
        raise ArtifactError("manifest lacks the tvm-cuda payload (model, kernels) or its entries", _RECOMPILE)
    tvm_ffi = load_runtime(d / "runtime")
    if not cuda_present(tvm_ffi):
        raise BackendUnavailable("no CUDA GPU is visible", f"run this artifact on an NVIDIA GPU ({opts.get('arch')})")
    register_kernels(tvm_ffi, (d / payload["kernels"]).read_bytes(), str(opts.get("kernels_sha256")))
    try:
        runner = VmRunner(tvm_ffi, d / payload["model"], "cuda")
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ArtifactError(f"tvm-cuda could not load {d / payload['model']}: {msg[-1] if msg else type(e).__name__}",
                            _RECOMPILE) from None
    return TvmCudaHandle(runner, opts["entries"], manifest.get("inputs") or [], manifest.get("outputs") or [],
                         list(opts.get("batch_dims") or []))
