"""OpenVINO backend (CPU plugin). openvino is imported lazily so the registry stays cheap.

One compiled model per handle; one InferRequest per calling thread (threading.local), so
concurrent `run` calls never share a request. Profiling compiles with PERF_COUNT and sums
each request's per-node counters after every run (OpenVINO keeps only the last run's).
"""
from __future__ import annotations

import threading
from pathlib import Path

from ..checks import cores
from ..errors import ArtifactError, BackendUnavailable
from ..oprows import finish_rows

# int8 comes from the FakeQuantize ops of a Q/DQ graph; the rest of the graph runs in f32.
_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_HINTS = ("LATENCY", "THROUGHPUT")


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("openvino is not installed", "pip install 'edgeattn[openvino]'") from None
    return openvino


default_threads = cores  # all the cores this process may use


class OpenVinoHandle:
    def __init__(self, compiled, output_names: list[str], threads: int, profile: bool):
        self._compiled = compiled
        self.output_names = output_names
        self.threads = threads
        index = {}
        for i, port in enumerate(compiled.outputs):
            for name in port.get_names():
                index.setdefault(name, i)
        missing = [n for n in output_names if n not in index]
        if missing:
            raise ArtifactError(f"OpenVINO model has no output(s) {missing} listed in the manifest",
                                "recompile with edgeattn compile --target openvino")
        self._out_index = [index[n] for n in output_names]
        self._local = threading.local()
        self._profile = profile
        self._lock = threading.Lock()
        self._rows: dict[str, dict] = {}

    def _request(self):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self._compiled.create_infer_request()
        return req

    def run(self, feeds):
        req = self._request()
        # share_inputs: zero-copy views of the caller's arrays (infer is synchronous);
        # outputs are copied, since this thread's request is reused by its next call.
        res = req.infer(dict(feeds), share_inputs=True, share_outputs=False)
        outs = res.to_tuple()
        if self._profile:
            self._accumulate(req.profiling_info)
        return [outs[i] for i in self._out_index]

    def _accumulate(self, infos) -> None:
        executed = _import_openvino().ProfilingInfo.Status.EXECUTED
        with self._lock:
            for info in infos:
                if info.status != executed:
                    continue
                row = self._rows.setdefault(info.node_name, {"op_type": info.node_type, "name": info.node_name,
                                                             "calls": 0, "total_ms": 0.0})
                row["calls"] += 1
                row["total_ms"] += info.real_time.total_seconds() * 1e3

    def end_profiling(self) -> list[dict]:
        """Per-node rows (same keys as the ort backend's), sorted by total time, descending."""
        with self._lock:
            rows, self._rows = list(self._rows.values()), {}
        return finish_rows(rows)


def _config(manifest: dict, threads: int, profile: bool) -> dict:
    opts = manifest.get("backend_options") or {}
    precision = str(opts.get("precision", "fp32")).lower()
    if precision not in _PRECISIONS:
        raise ArtifactError(f"unknown openvino precision {precision!r} in manifest", f"use one of {sorted(_PRECISIONS)}")
    hint = str(opts.get("performance_hint", "LATENCY")).upper()
    if hint not in _HINTS:
        raise ArtifactError(f"unknown openvino performance_hint {hint!r} in manifest", f"use one of {list(_HINTS)}")
    infer = _PRECISIONS[precision]
    if precision == "int8" and opts.get("float_precision") == "bf16":  # the int8 model's float parts
        infer = "bf16"
    return {"INFERENCE_PRECISION_HINT": infer, "PERFORMANCE_HINT": hint,
            "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": bool(profile)}


def open(artifact_dir: Path, manifest: dict, threads: int | None, profile: bool = False) -> OpenVinoHandle:
    ov = _import_openvino()
    try:
        payload = manifest["payload"]
        xml, weights = Path(artifact_dir) / payload["model"], Path(artifact_dir) / payload["weights"]
    except (KeyError, TypeError):
        raise ArtifactError("manifest has no payload.model/payload.weights entries for the openvino backend",
                            "recompile with edgeattn compile --target openvino") from None
    for f in (xml, weights):
        if not f.is_file():
            raise ArtifactError(f"payload {f} is missing", "recompile with edgeattn compile --target openvino")
    opts = manifest.get("backend_options") or {}
    threads = int(threads or opts.get("num_threads") or default_threads())
    config = _config(manifest, threads, profile)
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(xml), str(weights)), "CPU", config)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ArtifactError(f"openvino could not load {xml}: {msg[0] if msg else type(e).__name__}",
                            "recompile with edgeattn compile --target openvino") from None
    names = [o["name"] for o in manifest.get("outputs") or []]
    if not names:
        names = [port.get_any_name() for port in compiled.outputs]
    return OpenVinoHandle(compiled, names, threads, profile)
