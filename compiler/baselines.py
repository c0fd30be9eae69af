"""What a user would run instead of edgeattn, built as artifacts so `bench` times them alike:
ORT's transformers optimizer, and OpenVINO's own INT8 path (NNCF)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from edgeattn.compiler.frontend import Source

Build = Callable[..., object]  # bench._artifact


def ort_transformers_optimizer(src: Source, out: Path, threads: int, build: Build):
    """onnxruntime.transformers.optimizer on the plain export, as an ORT user does by hand."""
    import onnx_ir as ir
    from onnxruntime.transformers.optimizer import optimize_model

    plain = out.parent / "plain-export.onnx"
    ir.save(src.model, plain)
    model_type = "vit" if src.model.graph.inputs[0].name == "pixel_values" else "bert"
    # num_heads=0, hidden_size=0: the optimizer detects them, after warning that we did not give them
    log = logging.getLogger("onnxruntime.transformers.optimizer")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        opt = optimize_model(str(plain), model_type=model_type, num_heads=0, hidden_size=0, opt_level=1)
    finally:
        log.setLevel(level)
    opt_path = out.parent / "ort-optimized.onnx"
    opt.save_model_to_file(str(opt_path))
    optimized = Source(src.name, ir.load(opt_path), "onnx", src.zoo_model, dict(src.example_dims), dict(src.meta))
    return build(optimized, "ort", out, "none", {}, "ORT + transformers optimizer", "baseline", threads)


def openvino_nncf_int8(src: Source, out: Path, threads: int, build: Build, calibration: list[dict]):
    """nncf.quantize(model_type=TRANSFORMER) on OpenVINO's conversion of the plain export, on the
    same calibration set edgeattn's int8 uses."""
    return build(src, "openvino", out, "none", {"precision": "fp32", "nncf_calibration": calibration},
                 "OpenVINO + NNCF int8", "baseline", threads)
