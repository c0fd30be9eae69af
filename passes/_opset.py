"""Opset helpers shared by passes."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript import version_converter


def onnx_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def ensure_opset(model: ir.Model, version: int) -> None:
    """Upgrade the default-domain opset to at least `version` (in place), through the
    onnxscript version converter, which adapts ops whose signatures changed."""
    if onnx_opset(model) >= version:
        return
    version_converter.convert_version(model, version, fallback=True)
    model.opset_imports[""] = max(onnx_opset(model), version)
