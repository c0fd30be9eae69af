"""Session API: load a verified artifact and run, sample inputs for, or benchmark it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .artifact import verify_artifact
from .checks import check_count, check_path, check_threads
from .backends import get_backend
from .errors import ArtifactError, InputError, backend_failure
from .spec import TensorSpec, check_index_bounds, validate_feeds


def _specs(manifest: dict, key: str) -> list[TensorSpec]:
    try:
        return [TensorSpec.from_dict(d) for d in manifest.get(key) or []]
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"manifest {key!r} entry is malformed ({e})",
                            "recompile with edgeattn compile") from None


class Session:
    """A loaded artifact. `run` may be called from several threads at once: the
    wrapper holds no mutable per-call state and the backend's run is thread-safe."""

    def __init__(self, path: Path, manifest: dict, threads: int | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.inputs = _specs(manifest, "inputs")
        self.outputs = _specs(manifest, "outputs")
        self._index_bounds = manifest.get("index_bounds") or {}
        if not self.inputs:
            raise ArtifactError(f"manifest of {self.path} declares no inputs", "recompile with edgeattn compile")
        self._requested_threads = threads
        self._backend = get_backend(str(manifest.get("backend") or manifest.get("target") or ""))
        self._handle = self._open(profile=False)
        self.threads = self._handle.threads
        self.output_names = list(self._handle.output_names)

    def _open(self, profile: bool):
        return self._backend.open(self.path, self.manifest, self._requested_threads, profile=profile)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        handle = self._handle
        if handle is None:
            raise InputError("session is closed", "load the artifact again with edgeattn.runtime.load")
        arrays = validate_feeds(self.inputs, feeds)
        check_index_bounds(self._index_bounds, arrays)
        try:
            outs = handle.run(arrays)
        except Exception as e:  # onnxruntime/openvino/tvm errors: one line, the original as __cause__
            raise backend_failure(self.manifest, self.path, e)
        return dict(zip(self.output_names, outs))

    def example_feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs matching the specs; symbolic dims from manifest['example_dims'] (default 1)."""
        rng = np.random.default_rng(check_count("seed", seed, 0))
        dims = self.manifest.get("example_dims") or {}
        ranges = self.manifest.get("input_ranges") or {}
        feeds = {}
        for spec in self.inputs:
            shape = tuple(d if isinstance(d, int) and d >= 0 else int(dims.get(d, 1)) for d in spec.shape)
            dt = np.dtype(spec.dtype)
            if dt.kind == "f":
                arr = rng.standard_normal(shape).astype(dt)
            elif dt.kind in "iub":
                if spec.name in ranges:
                    lo, hi = (int(v) for v in ranges[spec.name])
                    arr = rng.integers(lo, max(hi, lo + 1), size=shape).astype(dt)  # high exclusive
                elif "mask" in spec.name.lower() or dt.kind == "b":
                    arr = np.ones(shape, dt)
                else:
                    arr = np.zeros(shape, dt)
            else:
                raise InputError(f"cannot generate example data for input {spec.name!r} of dtype {dt}",
                                 "pass feeds= explicitly")
            feeds[spec.name] = arr
        return feeds

    def benchmark(self, runs: int = 50, warmup: int = 5, feeds: Mapping[str, Any] | None = None,
                  per_op: bool = False, progress: Callable[[int, int], None] | None = None) -> dict:
        from .profile import benchmark
        return benchmark(self, runs=runs, warmup=warmup, feeds=feeds, per_op=per_op, progress=progress)

    def close(self) -> None:
        self._handle = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Session({str(self.path)!r}, model={self.manifest.get('model')!r}, "
                f"backend={self.manifest.get('backend')!r}, threads={self.threads})")


def load(path: str | Path, threads: int | None = None) -> Session:
    """Verify the artifact's SHA-256 table (tampered artifacts are refused) and open it."""
    path = check_path(path)
    threads = check_threads(threads)
    manifest = verify_artifact(path)
    return Session(path, manifest, threads=threads)
