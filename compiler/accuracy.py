"""Accuracy of an artifact against its reference: max abs error, cosine, and top-1 on labelled data."""

from __future__ import annotations

from typing import Callable

import numpy as np


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} outputs, candidate {len(candidate)}")
    max_abs, cos = 0.0, 1.0
    for r, c in zip(reference, candidate):
        r64, c64 = np.asarray(r, np.float64).ravel(), np.asarray(c, np.float64).ravel()
        if r64.shape != c64.shape:
            raise ValueError(f"output shapes differ: {np.shape(r)} vs {np.shape(c)}")
        max_abs = max(max_abs, float(np.max(np.abs(r64 - c64))) if r64.size else 0.0)
        denom = np.linalg.norm(r64) * np.linalg.norm(c64)
        cos = min(cos, float(r64 @ c64 / denom) if denom > 0 else float(np.allclose(r64, c64)))
    return {"max_abs_error": max_abs, "cosine": cos}


def torch_runner(module, input_names: list[str]) -> Callable[[dict], list[np.ndarray]]:
    import torch

    def run(feeds: dict) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[n]) for n in input_names))
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().numpy() for o in outs]

    return run


def onnx_reference_runner(model_bytes: bytes) -> Callable[[dict], list[np.ndarray]]:
    """The unrewritten graph on ORT with graph optimizations OFF: measures our rewrites, not ORT's."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)
