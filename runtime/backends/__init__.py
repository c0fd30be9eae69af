"""Backend registry: name -> module path, imported on first use.

A user of one backend never needs the others installed. Backend modules must not
import this registry back (no import cycles).

Each backend module exposes
    open(artifact_dir: Path, manifest: dict, threads: int | None, profile: bool = False)
returning a handle with `run(feeds) -> list[np.ndarray]` (manifest output order),
`output_names`, `threads`, and optionally `end_profiling() -> list[dict]` per-op rows.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ArtifactError

BACKENDS: dict[str, str] = {"ort": "edgeattn.runtime.backends.ort",
                            "openvino": "edgeattn.runtime.backends.openvino",
                            "tvm": "edgeattn.runtime.backends.tvm",
                            "tvm-cuda": "edgeattn.runtime.backends.tvm_cuda"}


def get_backend(name: str) -> ModuleType:
    path = BACKENDS.get(name)
    if path is None:
        raise ArtifactError(f"artifact needs backend {name!r}, which this runtime does not know",
                            f"known backends: {sorted(BACKENDS)}; recompile for one of them")
    return importlib.import_module(path)
