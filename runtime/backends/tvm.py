"""TVM backend: a Relax VM over the artifact's `model.so`, on the CPU.

Only the TVM runtime is imported (tvm.runtime, tvm.relax.VirtualMachine), lazily.

Thread safety: a Relax VM keeps its registers and frames in the VM object, so it is not
re-entrant; `run` holds a per-handle lock and concurrent callers take turns (each gets its own
result). Threads: TVM's thread pool is per calling OS thread and sized when that thread first
launches a parallel kernel. `runtime.config_threadpool(mode, n, cpus)` sets the process-wide
pool size (len(cpus)) before this thread's pool exists and the thread count of this thread's
pool; each OS thread configures once, on its first `run`. A pool created earlier in the same
thread with fewer workers (e.g. by TVM's constant folding at compile time, which sizes it at
half the logical CPUs on x86) cannot grow, so `threads` reports what the pool actually uses.
Untuned builds are serial loops anyway; threads matter once kernels are tuned.
Batch: the library is compiled for static shapes, each named symbolic dim fixed to the size in
`backend_options.static_dims` (1); the manifest keeps the symbolic specs. A feed whose batch is
larger runs as a loop of batch-1 calls concatenated on axis 0 (N× the latency, same numbers),
when every such dim sits on axis 0 of the inputs and outputs; otherwise it is an InputError.
Inputs are copied into TVM tensors (no zero-copy from numpy).
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, BackendUnavailable, InputError
from ..oprows import finish_rows

_SHARE_ALL_CORES = -3  # ThreadGroup::kSpecifyThreadShareAllCore: workers float over the given CPUs
_local = threading.local()  # this OS thread's configured pool size


def _import_tvm():
    try:
        import tvm.runtime
        from tvm.runtime.vm import VirtualMachine
    except ImportError:
        raise BackendUnavailable("apache-tvm is not installed", "pip install 'edgeattn[tvm]'") from None
    return tvm, VirtualMachine


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def default_threads() -> int:
    # Affinity respects taskset/cgroup pinning; cpu_count() would oversubscribe there.
    return max(1, len(_allowed_cpus()))


def _configure_threads(tvm, threads: int) -> int:
    """Size this OS thread's TVM pool (once per thread and size); returns the threads it uses."""
    if getattr(_local, "threads", None) != threads:
        cpus = [str(c) for c in _allowed_cpus()]
        tvm.get_global_func("runtime.config_threadpool")(_SHARE_ALL_CORES, int(threads), cpus)
        _local.threads = threads
        _local.used = int(tvm.get_global_func("runtime.NumThreads")())
    return _local.used


def _op_type(symbol: str) -> str:
    """`fused_matmul_add3` → `fused_matmul_add`; VM builtins keep their names."""
    return symbol if symbol.startswith("vm.") else re.sub(r"\d+$", "", symbol) or symbol


class TvmHandle:
    def __init__(self, tvm, vm, entry: str, inputs: list[dict], outputs: list[dict], static: dict,
                 threads: int, profile: bool):
        self._tvm = tvm
        self._vm = vm
        self._fn = vm[entry]
        self._inputs = [s["name"] for s in inputs]
        self.output_names = [s["name"] for s in outputs]
        self._static = {str(k): int(v) for k, v in (static or {}).items()}
        # Inputs batched on axis 0 by a static dim, and whether a larger batch can be looped.
        self._batched = [bool(s["shape"]) and s["shape"][0] in self._static for s in inputs]
        self._loopable = (any(self._batched) and set(self._static.values()) == {1}
                          and all(d not in self._static for s in inputs + outputs for d in s["shape"][1:])
                          and all(s["shape"] and s["shape"][0] in self._static for s in outputs))
        self._requested = threads
        self.threads = _configure_threads(tvm, threads)
        self._lock = threading.Lock()
        self._rows: dict[str, dict] = {}
        self._t0 = 0
        if profile:
            vm.set_instrument(self._instrument)

    def _instrument(self, func, symbol, before_run, ret_value, *args) -> int:
        # Called around every VM Call instruction, under the run lock; CPU kernels are synchronous.
        now = time.perf_counter_ns()
        if before_run:
            self._t0 = now
        else:
            symbol = str(symbol)
            row = self._rows.setdefault(symbol, {"op_type": _op_type(symbol), "name": symbol,
                                                 "calls": 0, "total_ms": 0.0})
            row["calls"] += 1
            row["total_ms"] += (now - self._t0) / 1e6
        return 0  # VMInstrumentReturnKind.NO_OP

    def run(self, feeds):
        arrays = [np.asarray(feeds[name]) for name in self._inputs]  # manifest input order
        sizes = {a.shape[0] for a, b in zip(arrays, self._batched) if b and a.ndim}
        if not sizes or sizes == {1}:
            return self._run_once(arrays)
        if not self._loopable or len(sizes) != 1 or 0 in sizes:
            raise InputError(f"this tvm artifact is compiled for {self._static}; got axis-0 sizes {sorted(sizes)}",
                             "feed batch 1, or compile for another target for dynamic shapes")
        runs = [self._run_once([a[i:i + 1] if b else a for a, b in zip(arrays, self._batched)])
                for i in range(sizes.pop())]
        return [np.concatenate(parts, axis=0) for parts in zip(*runs)]

    def _run_once(self, arrays):
        tvm = self._tvm
        args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
        with self._lock:
            _configure_threads(tvm, self._requested)
            result = self._fn(*args)
        outs = list(result) if not hasattr(result, "numpy") else [result]
        if len(outs) != len(self.output_names):
            raise ArtifactError(f"tvm model returned {len(outs)} output(s), the manifest lists "
                                f"{len(self.output_names)}", "recompile with edgeattn compile --target tvm")
        return [o.numpy() for o in outs]

    def end_profiling(self) -> list[dict]:
        """Per-kernel rows (same keys as the ort backend's), sorted by total time, descending."""
        with self._lock:
            rows, self._rows = list(self._rows.values()), {}
        return finish_rows(rows)


def open(artifact_dir: Path, manifest: dict, threads: int | None, profile: bool = False) -> TvmHandle:
    tvm, VirtualMachine = _import_tvm()
    try:
        lib_path = Path(artifact_dir) / manifest["payload"]["model"]
    except (KeyError, TypeError):
        raise ArtifactError("manifest has no payload.model entry for the tvm backend",
                            "recompile with edgeattn compile --target tvm") from None
    if not lib_path.is_file():
        raise ArtifactError(f"payload {lib_path} is missing", "recompile with edgeattn compile --target tvm")
    opts = manifest.get("backend_options") or {}
    entry = str(opts.get("entry", "main"))
    try:
        lib = tvm.runtime.load_module(str(lib_path))
        vm = VirtualMachine(lib, tvm.cpu())
        vm[entry]  # noqa: B018 - fail here, not on the first run, when the entry is missing
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ArtifactError(f"tvm could not load {lib_path}: {msg[-1] if msg else type(e).__name__}",
                            "recompile with edgeattn compile --target tvm on this machine") from None
    inputs, outputs = manifest.get("inputs") or [], manifest.get("outputs") or []
    if not inputs or not outputs:
        raise ArtifactError("manifest of a tvm artifact lists no inputs/outputs",
                            "recompile with edgeattn compile --target tvm")
    threads = int(threads) if threads else default_threads()
    return TvmHandle(tvm, vm, entry, inputs, outputs, opts.get("static_dims") or {}, threads, profile)
