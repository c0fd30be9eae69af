"""Mobile (ARM64 Android/Linux) target, ONNX Runtime Mobile variant: the canonical graph in ORT
format (`model.ort`, optimized for ARM with the fixed optimization style), the reduced-operator
config a minimal ORT build needs (`required_operators.config`, for ORT's build.py
`--include_ops_by_config`), and the report of which nodes NNAPI and CoreML would take
(ORT's mobile usability checker), for apps that already ship ONNX Runtime.

The artifact loads on the host through the `ort` runtime backend (full ORT reads ORT format), which
is how it is verified here; host timings are not device timings. The TVM aarch64 variant of the
issue (cross-compiled library + runtime) is not built yet.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import onnx_ir as ir

NAME = "mobile"
DESCRIPTION = "ARM64 Android/Linux: ONNX Runtime Mobile (.ort + reduced-operator config + NNAPI/CoreML report)"
RUNTIME_BACKEND = "ort"
PAYLOAD, OPERATORS, USABILITY = "model.ort", "required_operators.config", "mobile-usability.json"
PRECISIONS = ("fp32",)


def available() -> tuple[bool, str]:
    try:
        import onnxruntime
        from onnxruntime.tools import convert_onnx_models_to_ort  # noqa: F401 - the converter ships with ORT
    except ImportError as e:
        return False, f"onnxruntime with its tools is needed — pip install onnxruntime ({e})"
    return True, f"onnxruntime {onnxruntime.__version__} (ORT-format converter)"


def legalize(model: ir.Model) -> dict:
    """ORT Mobile runs the same kernels as ORT: the same legalization (3-D Attention)."""
    from edgeattn.targets import ort

    return ort.legalize(model)


def _usability(onnx_path: Path) -> dict:
    """Per execution provider: how many nodes it would take, in how many partitions, and what not."""
    import onnx
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    model = onnx.load(str(onnx_path))
    # Counted as if the app fixed the input shapes (both providers need that; our artifacts keep
    # a symbolic batch, which onnxruntime.tools.make_dynamic_shape_fixed pins).
    checks = {"NNAPI": lambda m: uc.check_nnapi_partitions(m, require_fixed_input_sizes=False),
              "CoreML (ML Program)": lambda m: uc.check_coreml_partitions(m, False, "coreml_supported_mlprogram_ops.md")}
    out = {}
    for ep, check in checks.items():
        info = check(model)
        out[ep] = {"nodes": info.num_nodes, "supported_nodes": info.num_supported_nodes,
                   "partitions": info.num_partitions, "unsupported_ops": sorted(info.unsupported_ops),
                   "suitability": info.suitability().name, "needs_fixed_input_shapes": True}
    return out


def build(model: ir.Model, workdir: Path, options: dict) -> dict:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    workdir = Path(workdir)
    with tempfile.TemporaryDirectory(prefix="edgeattn-mobile-") as tmp:
        src = Path(tmp) / "model.onnx"
        ir.save(model, src)
        out = Path(tmp) / "ort"
        logging.getLogger("convert_onnx_models_to_ort").setLevel(logging.WARNING)
        convert_onnx_models_to_ort(src, output_dir=out, optimization_styles=[OptimizationStyle.Fixed],
                                   target_platform="arm")
        (out / "model.ort").replace(workdir / PAYLOAD)
        next(out.glob("*.config")).replace(workdir / OPERATORS)
        report = _usability(src)
    (workdir / USABILITY).write_text(json.dumps(report, indent=1))
    return {"backend": RUNTIME_BACKEND, "payload": {"model": PAYLOAD, "operators": OPERATORS, "usability": USABILITY},
            "backend_options": {"graph_optimization_level": "all"}, "mobile": {"usability": report, "device": "arm64",
            "verified_on": "host ORT (full build reads ORT format); timings here are not device timings"}}


def tune(model: ir.Model, options: dict) -> dict:
    return {"tuned": False, "reason": "ONNX Runtime Mobile selects its kernels at load; nothing to tune"}
