"""edgeattn.targets: one module per backend behind one protocol, imported lazily.

A target module provides:
  NAME, DESCRIPTION, RUNTIME_BACKEND (the runtime backend that loads its payload)
  available() -> (bool, reason)
  legalize(model: onnx_ir.Model) -> dict      # lower the canonical graph; counts native/fallback
  build(model, workdir: Path, options: dict) -> dict   # writes payload files; returns manifest fields
  tune(model, options: dict) -> dict
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeattn.runtime.errors import EdgeAttnError

TARGETS: dict[str, str] = {
    "ort": "edgeattn.targets.ort",
    "openvino": "edgeattn.targets.openvino",
    "tvm": "edgeattn.targets.tvm",
    "mobile": "edgeattn.targets.mobile",
    "tvm-cuda": "edgeattn.targets.tvm_cuda",
}


class UnknownTargetError(EdgeAttnError, KeyError):
    """One line naming the target and the known ones; a KeyError too, for callers that caught that before."""


def get(name: str) -> ModuleType:
    if name not in TARGETS:
        raise UnknownTargetError(f"unknown target '{name}'", f"known targets: {', '.join(sorted(TARGETS))} (see `edgeattn targets`)")
    return importlib.import_module(TARGETS[name])


def describe_all() -> list[dict]:
    rows = []
    for name in TARGETS:
        try:
            mod = get(name)
            ok, reason = mod.available()
            desc, precisions = mod.DESCRIPTION, list(getattr(mod, "PRECISIONS", ("fp32",)))
        except ImportError as e:  # the module itself could not import (a missing extra)
            ok, reason, desc, precisions = False, f"import failed: {e}", "", []
        rows.append({"name": name, "available": ok, "reason": reason, "precisions": precisions, "description": desc})
    return rows
