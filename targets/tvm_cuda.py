"""TVM CUDA target: the canonical graph → Relax → CUDA kernels (dlight's default GPU schedules) →
`model.so` + `kernels.fatbin`, run by the Relax VM with CUDA graphs on an NVIDIA GPU.

Facts of apache-tvm 0.27 this module is built around:
- Its CUDA codegen never compiles: the `cuda` module inside `model.so` holds CUDA C++ source,
  and the CUDA runtime JIT-compiles it at load through the global `tvm_callback_cuda_compile`
  (Python's tvm.support.nvcc). A deployed device has neither the TVM compiler nor, often, nvcc.
  So the build compiles that source with nvcc here (SASS for `arch` + PTX for newer GPUs) into
  `kernels.fatbin`, records the source's SHA-256, and the runtime backend (runtime/backends/
  tvm_cuda.py) answers the callback with the fatbin when the hash matches: no compiler at load.
- The artifact bundles the runtime it needs (libtvm_runtime, libtvm_runtime_cuda, libcudart;
  ~4.5 MB), so a device needs python, numpy, apache-tvm-ffi and the NVIDIA driver only.
- One executable serves several batch sizes: the graph is imported with its symbolic batch and
  specialised per size (`main_b1`, `main_b32`, ...); the VM's constant pool dedups the shared
  weights, so each extra size costs kernels, not weights. Static shapes let RewriteCUDAGraph
  capture each function into a CUDA graph (option cuda_graph, default on).
- fp16: ToMixedPrecision casts the matmul/conv inputs to fp16 and accumulates in fp32;
  LayerNorm and softmax keep fp32 inputs. dlight's fp16 matmul rule imports
  tvm.s_tir.tensor_intrin, which takes ~3 minutes on a 2-core machine (once per process).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import onnx_ir as ir

from edgeattn.targets import tvm as tvm_cpu

NAME = "tvm-cuda"
DESCRIPTION = "Apache TVM (Relax VM), CUDA kernels compiled by nvcc at build, CUDA graphs; NVIDIA GPUs"
RUNTIME_BACKEND = "tvm-cuda"
PAYLOAD = "model.so"
KERNELS = "kernels.fatbin"
RUNTIME_DIR = "runtime"
PRECISIONS = ("fp32", "fp16")
DEFAULT_ARCH = "sm_90"  # H100/H200; e.g. sm_87 for Jetson Orin, sm_89 for Ada, sm_80 for A100
DEFAULT_BATCHES = (1,)
# Shared-memory/threads limits of every GPU from sm_80 on; the codegen needs them without a GPU.
_LIMITS = {"max_num_threads": 1024, "thread_warp_size": 32, "max_shared_memory_per_block": 49152}


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def available() -> tuple[bool, str]:
    ok, reason = tvm_cpu.available()
    if not ok:
        return ok, reason
    from tvm import support

    if support.libinfo().get("USE_CUDA") != "ON":
        return False, "this apache-tvm build has no CUDA codegen (USE_CUDA is off)"
    nvcc = _nvcc()
    if nvcc is None:
        return False, "nvcc not found — install the CUDA toolkit (or pip install nvidia-cuda-nvcc) and put nvcc on PATH"
    here, where = runs_here()
    return True, f"{reason}, kernels by {nvcc}; " + (f"runs here on {where.split(' ', 2)[-1]}" if here else
                                                    "builds here, runs on an NVIDIA GPU (none here)")


def runs_here() -> tuple[bool, str]:
    """Whether this machine can load and run the artifact (a CUDA GPU visible to TVM)."""
    import tvm

    if tvm.cuda(0).exist:
        return True, f"CUDA GPU {tvm.cuda(0).device_name}"
    return False, "no CUDA GPU visible on the build machine"


def legalize(model: ir.Model) -> dict:
    return tvm_cpu.legalize(model)


def _arch(options: dict) -> str:
    arch = str(options.get("arch") or DEFAULT_ARCH)
    if not (arch.startswith("sm_") and arch[3:].rstrip("a").isdigit()):
        raise ValueError(f"tvm-cuda arch {arch!r} is not an sm_XY name — pass e.g. arch=sm_90 (H100) or arch=sm_87 (Jetson Orin)")
    return arch


def _batches(options: dict) -> list[int]:
    raw = options.get("batches", DEFAULT_BATCHES)
    sizes = [int(b) for b in (raw.split(",") if isinstance(raw, str) else raw)]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"tvm-cuda batches {raw!r} must be positive sizes — pass e.g. batches=1,32")
    return sorted(set(sizes))


def cuda_target(arch: str):
    import tvm

    return tvm.target.Target({"kind": "cuda", "arch": arch, **_LIMITS})


def relax_functions(model: ir.Model, batches: list[int]) -> tuple:
    """(IRModule with `main_b{N}` per batch size, whether they share one set of weight constants).

    The graph is imported once with its symbolic batch and specialised per size, so the weights
    are shared; where Relax's ONNX frontend cannot import the symbolic batch (e.g. an `Expand` of
    a (batch, 1, 1, S) mask), each size is imported on its own and carries its own weights."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    batch = batch_symbols(model)
    other = {d: n for d, n in tvm_cpu.static_dims(model).items() if d not in batch}
    mod = tvm.IRModule()
    try:
        main = from_onnx(ir.to_proto(model), keep_params_in_input=False)["main"]
        shared = True
    except Exception:  # the frontend's failure modes on symbolic shapes are many (AttributeError, TVMError, ...)
        main, shared = None, False
    for b in batches:
        name = f"main_b{b}"
        sizes = {**other, **{d: b for d in batch}}
        f = main.bind_symbolic_vars(sizes) if shared else tvm_cpu.import_relax(model, sizes)["main"]
        mod[name] = f.with_attr("global_symbol", name)
    return mod, shared


def relax_module(model: ir.Model, batches: list[int], precision: str) -> tuple:
    """relax_functions with the precision plan applied (fp16: ToMixedPrecision, fp32 accumulation)."""
    from tvm import relax

    mod, shared = relax_functions(model, batches)
    if precision == "fp16":
        mod = relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
    return mod, shared


def batch_symbols(model: ir.Model) -> set[str]:
    """Symbolic dims on axis 0 of the inputs: the batch. Other symbolic dims are fixed like the CPU target's."""
    return {s for v in model.graph.inputs if v.shape for s in [tvm_cpu._symbol(v.shape[0])] if s is not None}


def _cuda_source(executable) -> str:
    mods = [m for m in _walk(executable.mod) if m.kind == "cuda"]
    if len(mods) != 1:
        raise RuntimeError(f"expected one CUDA module in the TVM executable, found {len(mods)}")
    return mods[0].inspect_source("cuda")


def _walk(mod):
    yield mod
    for m in mod.imports:
        yield from _walk(m)


def compile_kernels(source: str, arch: str, out: Path) -> None:
    """nvcc: SASS for `arch` plus its PTX (the driver JITs that for newer GPUs)."""
    import subprocess
    import tempfile

    num = arch[3:]
    with tempfile.TemporaryDirectory(prefix="edgeattn-nvcc-") as tmp:
        cu = Path(tmp) / "kernels.cu"
        cu.write_text(source)
        cmd = [_nvcc(), "--fatbin", "-O3", "-lineinfo", "-std=c++17", f"-gencode=arch=compute_{num},code=sm_{num}",
               f"-gencode=arch=compute_{num},code=compute_{num}", str(cu), "-o", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nvcc failed on the generated kernels: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


def _runtime_libs() -> dict[str, Path]:
    """The TVM runtime pieces a device needs (from the installed wheel) and the CUDA runtime they link."""
    import tvm

    lib = Path(tvm.__file__).parent / "lib"
    libs = {"libtvm_runtime.so": lib / "libtvm_runtime.so", "libtvm_runtime_cuda.so": lib / "libtvm_runtime_cuda.so"}
    cudart = _resolved_dependency(libs["libtvm_runtime_cuda.so"], "libcudart.so.13")
    if cudart is not None:  # the runtime lib links libcudart.so.13; ship it so the device needs the driver only
        libs["libcudart.so.13"] = cudart
    return libs


def _resolved_dependency(lib: Path, soname: str) -> Path | None:
    """Where the dynamic loader finds `soname` for `lib` on this machine (ldd), if anywhere."""
    import subprocess

    try:
        out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if name == soname and rest.startswith("/"):
            return Path(rest.split(" (")[0])
    return None


def build(model: ir.Model, workdir: Path, options: dict) -> dict:
    import tvm

    precision = str(options.get("precision", "fp32")).lower()
    if precision not in PRECISIONS:
        raise ValueError(f"tvm-cuda precision {precision!r} is not supported — use one of {', '.join(PRECISIONS)}")
    arch, batches = _arch(options), _batches(options)
    graphs = bool(options.get("cuda_graph", True))
    mod, shared = relax_module(model, batches, precision)
    target = cuda_target(arch)
    with tvm.transform.PassContext(opt_level=3, config={"relax.backend.use_cuda_graph": graphs}):
        executable = tvm.compile(mod, target)
    work = Path(workdir)
    source = _cuda_source(executable)
    compile_kernels(source, arch, work / KERNELS)
    executable.export_library(str(work / PAYLOAD))
    payload = {"model": PAYLOAD, "kernels": KERNELS}
    (work / RUNTIME_DIR).mkdir(exist_ok=True)
    for name, src in _runtime_libs().items():
        shutil.copy(src, work / RUNTIME_DIR / name)
        payload[f"runtime_{name.split('.')[0]}"] = f"{RUNTIME_DIR}/{name}"
    opts = {"entries": {str(b): f"main_b{b}" for b in batches}, "batch_dims": sorted(batch_symbols(model)),
            "weights_shared": shared,
            "arch": arch, "cuda_graph": graphs, "kernels_sha256": hashlib.sha256(source.encode()).hexdigest(),
            "kernel_count": source.count('extern "C" __global__'), "target": str(target)}
    return {"backend": RUNTIME_BACKEND, "payload": payload, "backend_options": opts}


def host_emulation(model: ir.Model, options: dict):
    """run(feeds) → outputs of the same Relax module (same batch-1 function, same fp16 casts) compiled
    for this CPU: checks the precision plan where no GPU is, not the CUDA kernels (check.npz does)."""
    import numpy as np
    import tvm
    from tvm import relax

    mod, _ = relax_module(model, [1], str(options.get("precision", "fp32")).lower())
    vm = relax.VirtualMachine(tvm.compile(mod, tvm_cpu.host_target()), tvm.cpu())
    names = [v.name for v in model.graph.inputs]

    def run(feeds: dict) -> list:
        result = vm["main_b1"](*[tvm.runtime.tensor(np.ascontiguousarray(feeds[n])) for n in names])
        return [o.numpy() for o in (list(result) if not hasattr(result, "numpy") else [result])]
    return run


def tune(model: ir.Model, options: dict) -> dict:
    return {"tuned": False, "reason": "tvm-cuda uses dlight's default GPU schedules; MetaSchedule on the GPU "
                                      "needs the GPU at build time (not wired yet)"}
