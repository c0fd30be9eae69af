"""Mobile (ARM64 Android/Linux) target, ONNX Runtime Mobile variant: the canonical graph in ORT
format (`model.ort`, optimized for ARM with the fixed optimization style), the reduced-operator
config a minimal ORT build needs (`required_operators.config`, for ORT's build.py
`--include_ops_by_config`), and the report of which nodes NNAPI and CoreML would take
(ORT's mobile usability checker), for apps that already ship ONNX Runtime.

The artifact loads on the host through the `ort` runtime backend (full ORT reads ORT format), which
is how it is verified here; host timings are not device timings. Where the cross toolchain is
installed, the artifact also carries the TVM aarch64 bundle (targets/mobile_tvm.py), checked
under qemu-aarch64 against ORT on the same graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgeattn.passes._linear import ort_unoptimized, quiet_ort_logs

NAME = "mobile"
DESCRIPTION = "ARM64 Android/Linux: ONNX Runtime Mobile (.ort + reduced-operator config + NNAPI/CoreML report)"
RUNTIME_BACKEND = "ort"
PAYLOAD, OPERATORS, USABILITY = "model.ort", "required_operators.config", "mobile-usability.json"
PRECISIONS = ("fp32", "int8")
# int8 candidates are measured in the device's arithmetic, not on the host's kernels: ARM64's int8
# dot products (sdot/udot, i8mm smmla) accumulate u8/s8 products exactly in int32, which is what
# the Q/DQ graph computes under ORT with optimizations off. (An x86 host without VNNI would
# saturate them: measuring there would judge the device by the host.)
INT8_EXACT_ARITHMETIC = True


def qdq_rule():
    """The device's rule, not the host's: full 8-bit weights (no saturation on ARM64)."""
    from edgeattn.passes.quantize_qdq import QDQRule

    return QDQRule(note="ARM64 device rule: 8-bit weights (int8 dot products accumulate exactly)")


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
        for name in ("convert_onnx_models_to_ort", "ort_format_model.utils"):
            logging.getLogger(name).setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()), quiet_ort_logs():  # the converter prints its progress
            convert_onnx_models_to_ort(src, output_dir=out, optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform="arm")
        (out / "model.ort").replace(workdir / PAYLOAD)
        next(out.glob("*.config")).replace(workdir / OPERATORS)
        report = _usability(src)
    (workdir / USABILITY).write_text(json.dumps(report, indent=1))
    payload = {"model": PAYLOAD, "operators": OPERATORS, "usability": USABILITY}
    info = {"usability": report, "device": "arm64",
            "verified_on": "host ORT (full build reads ORT format); timings here are not device timings"}
    if options.get("precision") == "int8":  # the TVM bundle would run the Q/DQ graph in float: no gain
        info["tvm"], extra = {"built": False, "reason": "int8: the TVM aarch64 bundle is fp32 only; model.ort carries the int8 graph"}, {}
    else:
        info["tvm"], extra = _tvm_variant(model, workdir, options.get("device") or "generic-arm64")
    payload.update(extra)
    return {"backend": RUNTIME_BACKEND, "payload": payload, "backend_options": {"graph_optimization_level": "all"},
            "mobile": info}


MAX_ABS_ERROR = 1e-4


def _tvm_variant(model: ir.Model, workdir: Path, device: str) -> tuple[dict, dict]:
    """The TVM aarch64 bundle where the cross toolchain is here, checked under qemu against ORT."""
    from edgeattn.targets import mobile_tvm

    ok, reason = mobile_tvm.available()
    if not ok:
        return {"built": False, "reason": reason}, {}
    built = mobile_tvm.build(model, workdir, device)
    info = {"built": True, **built["info"]}
    if shutil.which(mobile_tvm.QEMU) is None:
        info["verified"] = f"not run: {mobile_tvm.QEMU} not found (apt-get install qemu-user)"
        return info, built["payload"]
    feeds = mobile_tvm.example_feeds(model)
    want = ort_unoptimized(model).run(None, feeds)
    got = mobile_tvm.run_emulated(Path(workdir) / mobile_tvm.SUBDIR, feeds)
    err = max(float(np.abs(w.astype(np.float32) - g.reshape(w.shape)).max()) for w, g in zip(want, got))
    if err > MAX_ABS_ERROR:
        raise ValueError(f"the TVM aarch64 build differs from ORT by {err:.2e} under qemu (limit {MAX_ABS_ERROR:g}) — "
                         "report this model; the ORT Mobile variant alone is: compile with the tools uninstalled")
    info["verified"] = {"max_abs_error": err, "against": "ORT (optimizations off) on the same graph, batch 1",
                        "under": "qemu-aarch64 user-mode emulation (correctness only: not device timings)"}
    return info, built["payload"]
