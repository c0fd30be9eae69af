"""Activation ranges on calibration data, through ONNX Runtime's calibrators (min-max,
percentile, entropy: the same statistics its own quantizer uses)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgeattn.passes._linear import quiet_ort_logs

METHODS = ("minmax", "percentile", "entropy")


def activation_ranges(model: ir.Model, names: list[str], feeds: list[dict], method: str = "minmax",
                      op_types: tuple[str, ...] = ("MatMul",)) -> dict[str, tuple[float, float]]:
    """(low, high) of each named tensor (inputs/outputs of `op_types` nodes) over `feeds`."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    if method not in METHODS:
        raise ValueError(f"unknown calibration method '{method}' — use one of {', '.join(METHODS)}")
    if not feeds:
        raise ValueError("the calibration set is empty — give at least one input")
    kind = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]
    extra = {"percentile": 99.999} if method == "percentile" else {}

    # ORT's histogram calibrators stack per-run outputs and need equal shapes: feeds of unequal
    # batches (a last, smaller one) run one sample at a time.
    samples = feeds
    if len({tuple(v.shape for v in f.values()) for f in feeds}) > 1:
        samples = [{k: v[i:i + 1] for k, v in f.items()} for f in feeds for i in range(len(next(iter(f.values()))))]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="edgeattn-calib-") as tmp, quiet_ort_logs():
        path = Path(tmp) / "model.onnx"
        ir.save(model, path)
        cal = create_calibrator(path, list(op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=kind, extra_options=extra)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
            cal.collect_data(_Reader())
            data = cal.compute_data()
    out = {}
    for name in names:
        if name in data:
            low, high = data[name].range_value
            out[name] = (float(np.min(low)), float(np.max(high)))
    return out
