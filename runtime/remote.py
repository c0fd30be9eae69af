"""Profiling an artifact on a remote device through TVM's RPC (a tracker and its servers, or one
server): the engine device farms already run. The artifact's TVM library is uploaded, loaded into
a Relax VM on the device, checked against this machine's run of the same artifact where it can
run here, and timed by TVM's time evaluator on the device (its clock, not the network's). The
report has the keys of local profiling (runtime/profile.py), plus `remote`.

Which payload goes: `tvm` artifacts their model.so (compiled for the host CPU: the device must be
the same kind of CPU), `mobile` artifacts their aarch64 TVM bundle (tvm-aarch64/model.so, for an
ARM64 board running `python -m tvm.exec.rpc_server`). Others (ORT, OpenVINO, tvm-cuda) have no
RPC path: the error says so. On the device: apache-tvm (runtime only is enough) and its RPC server.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .artifact import verify_artifact
from .check import compare, recipe_feeds
from .errors import BackendUnavailable, InputError
from .profile import latency_stats

_RPC_PAYLOAD = {"tvm": "model", "mobile": "tvm_model_so"}


def parse_address(spec: str) -> tuple[str, int]:
    host, sep, port = str(spec).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"remote address {spec!r} is not HOST:PORT", "pass e.g. --remote 127.0.0.1:9190")
    return host, int(port)


def _import_rpc():
    try:
        import tvm
        from tvm import rpc
        from tvm.runtime.vm import VirtualMachine
    except ImportError:
        raise BackendUnavailable("remote profiling needs apache-tvm's RPC client", "pip install 'edgeattn[tvm]'") from None
    return tvm, rpc, VirtualMachine


def connect(address: str, key: str | None = None, timeout_s: int = 600):
    """An RPC session: through the tracker at `address` when `key` names a device kind, else straight
    to the server at `address` (one started without a tracker and key)."""
    _, rpc, _ = _import_rpc()
    host, port = parse_address(address)
    try:
        if key:
            return rpc.connect_tracker(host, port).request(key, priority=1, session_timeout=timeout_s)
        return rpc.connect(host, port, session_timeout=timeout_s)
    except Exception as e:  # socket errors, the tracker's "no such key", a refused handshake
        msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        kind = f"tracker {host}:{port} (key {key!r})" if key else f"RPC server {host}:{port}"
        raise BackendUnavailable(f"cannot reach the {kind}: {msg}",
                                 "start it (python -m tvm.exec.rpc_tracker / rpc_server) or check the address and key") from None


def _payload(manifest: dict) -> str:
    target = str(manifest.get("target"))
    rel = (manifest.get("payload") or {}).get(_RPC_PAYLOAD.get(target, ""))
    if rel is None:
        why = ("its TVM aarch64 bundle was not built (see the manifest's mobile.tvm.reason)" if target == "mobile"
               else f"target {target} has no TVM library to upload")
        raise InputError(f"this artifact cannot be profiled over RPC: {why}",
                         "compile for --target tvm (same CPU kind as the device) or --target mobile")
    return rel


def _local_outputs(artifact: Path, feeds: dict) -> list[np.ndarray] | None:
    """This machine's run of the same artifact (ORT's .ort for mobile), where it loads here."""
    from .session import load

    try:
        sess = load(artifact)
    except Exception:  # a library built for another CPU, a backend missing here
        return None
    return list(sess.run(feeds).values())


class RemoteArtifact:
    """An artifact's TVM library uploaded, loaded into a Relax VM on the device and run once
    (its outputs compared with this machine's run); `time(n)` then samples its latency there.
    Several can share one session (bench --remote interleaves them)."""

    def __init__(self, artifact: str | Path, sess, upload_name: str = "model.so") -> None:
        tvm, _, VirtualMachine = _import_rpc()
        self.path = Path(artifact)
        self.manifest = m = verify_artifact(self.path)
        self.library = _payload(m)
        t0 = time.perf_counter()
        sess.upload(str(self.path / self.library), target=upload_name)  # into this session's own temp folder
        self.upload_s = time.perf_counter() - t0
        self._dev = sess.cpu()
        self._vm = VirtualMachine(sess.load_module(upload_name), self._dev)
        self._entry = str((m.get("backend_options") or {}).get("entry", "main"))
        opts, mobile_tvm = m.get("backend_options") or {}, (m.get("mobile") or {}).get("tvm") or {}
        static = opts.get("static_dims") or mobile_tvm.get("static_dims") or {}
        feeds = recipe_feeds(m["inputs"], static, m.get("input_ranges") or {}, seed=0)
        self._args = [tvm.runtime.tensor(np.ascontiguousarray(v), self._dev) for v in feeds.values()]
        result = self._vm[self._entry](*self._args)
        outs = [o.numpy() for o in (list(result) if not hasattr(result, "numpy") else [result])]
        local = _local_outputs(self.path, feeds)
        self.check = ({**compare(local, outs), "against": "this machine's run of the same artifact"} if local is not None
                      else "not compared: the artifact does not run on this machine")

    def warm(self, n: int) -> None:
        for _ in range(n):
            self._vm[self._entry](*self._args)

    def time(self, n: int) -> np.ndarray:
        """n latency samples in ms, each one call timed on the device's clock."""
        timer = self._vm.time_evaluator(self._entry, self._dev, number=1, repeat=n, min_repeat_ms=0)
        return np.asarray(timer(*self._args).results, dtype=np.float64) * 1e3


def profile_remote(artifact: str | Path, address: str, key: str | None = None, runs: int = 50, warmup: int = 5,
                   session=None) -> dict:
    """Upload, check and time the artifact's TVM library on the device (threads: the device's default)."""
    if runs < 1 or warmup < 0:
        raise InputError(f"runs={runs}, warmup={warmup} is not a valid benchmark", "use runs >= 1 and warmup >= 0")
    _payload(verify_artifact(Path(artifact)))  # refuse before connecting
    sess = session or connect(address, key)
    ra = RemoteArtifact(artifact, sess)
    ra.warm(warmup)
    lat = latency_stats((ra.time(runs) * 1e6).astype(np.int64))
    remote = {"address": address, "key": key, "upload_s": round(ra.upload_s, 3), "library": ra.library,
              "timer": "TVM time_evaluator on the device (number=1 per sample)", "check": ra.check}
    m = ra.manifest
    return {"model": m.get("model"), "target": m.get("target"), "backend": "tvm (remote)",
            "runs": runs, "warmup": warmup, "threads": int(sess.get_function("runtime.NumThreads")()),
            "batch": 1, "latency": lat, "throughput_per_s": 1.0 / (lat["mean_ms"] / 1e3),
            "peak_rss_mb": None, "ops": [], "remote": remote}
