"""ONNX Runtime backend (CPU). onnxruntime is imported lazily so the registry stays cheap."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..checks import cores
from ..errors import ArtifactError, BackendUnavailable
from ..oprows import finish_rows

_OPT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed", "pip install onnxruntime") from None
    return onnxruntime


default_threads = cores  # all the cores this process may use


class OrtHandle:
    def __init__(self, sess, output_names: list[str], threads: int, profile_dir: str | None):
        self._sess = sess
        self.output_names = output_names
        # None fetches every output in graph order, skipping ORT's name lookup when orders agree.
        graph_order = [o.name for o in sess.get_outputs()]
        self._fetch = None if output_names == graph_order else output_names
        self.threads = threads
        self._profile_dir = profile_dir

    def run(self, feeds):
        # Straight through: InferenceSession.run is thread-safe and we add no copies.
        return self._sess.run(self._fetch, feeds)

    def end_profiling(self) -> list[dict]:
        if self._profile_dir is None:
            return []
        trace = Path(self._sess.end_profiling())
        try:
            events = json.loads(trace.read_text())
        finally:
            trace.unlink(missing_ok=True)
            try:
                os.rmdir(self._profile_dir)
            except OSError:
                pass
            self._profile_dir = None
        return parse_trace(events)


def parse_trace(events: list[dict]) -> list[dict]:
    """ORT trace events -> per-node rows sorted by total time, descending."""
    per_node: dict[str, dict] = {}
    for ev in events:
        name = ev.get("name", "")
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        row = per_node.setdefault(node, {"op_type": ev.get("args", {}).get("op_name", "?"),
                                         "name": node, "calls": 0, "total_ms": 0.0})
        row["calls"] += 1
        row["total_ms"] += float(ev.get("dur", 0)) / 1000.0  # trace durations are in µs
    return finish_rows(list(per_node.values()))


def open(artifact_dir: Path, manifest: dict, threads: int | None, profile: bool = False) -> OrtHandle:
    ort = _import_ort()
    try:
        model = Path(artifact_dir) / manifest["payload"]["model"]
    except (KeyError, TypeError):
        raise ArtifactError("manifest has no payload.model entry for the ort backend",
                            "recompile with edgeattn compile --target ort") from None
    if not model.is_file():
        raise ArtifactError(f"payload {model} is missing", "recompile with edgeattn compile")
    opts = manifest.get("backend_options") or {}
    level = str(opts.get("graph_optimization_level", "all")).lower()
    if level not in _OPT_LEVELS:
        raise ArtifactError(f"unknown graph_optimization_level {level!r} in manifest",
                            f"use one of {sorted(_OPT_LEVELS)}")
    threads = int(threads) if threads else default_threads()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: ORT's graph-cleanup warnings are noise for artifact users
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
    profile_dir = None
    if profile:
        profile_dir = tempfile.mkdtemp(prefix="edgeattn-prof-")  # keep traces out of the cwd
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort")
    try:
        sess = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        if profile_dir:
            os.rmdir(profile_dir)
        raise ArtifactError(f"onnxruntime could not load {model}: {str(e).splitlines()[0]}",
                            "recompile with edgeattn compile") from None
    names = [o["name"] for o in manifest.get("outputs") or []] or [o.name for o in sess.get_outputs()]
    return OrtHandle(sess, names, threads, profile_dir)
