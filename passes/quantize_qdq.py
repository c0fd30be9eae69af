"""INT8 Q/DQ placement: one generator, with per-backend placement rules given as data.

Every MatMul with a constant 2-D weight (the Q/K/V/output projections and the MLP) gets
  activation: QuantizeLinear → DequantizeLinear, per tensor, asymmetric uint8 with the range
              measured on calibration data (one pair per tensor, shared by its consumers), or
              with `symmetric` zero point 0 (int8, or uint8 for a range that is ≥ 0);
  weight:     stored as int8, symmetric, one scale per output channel, → DequantizeLinear(axis=1).
Softmax, LayerNorm, GELU, the residual adds and the attention itself stay in float (the
quantization-sensitive parts of a transformer); the backend fuses DQ → MatMul into its integer
GEMM. `act_levels` < 256 narrows the activation grid (127 on x86 without VNNI, where the u8×s8
instruction saturates int16 pairs at full range); `exclude` names MatMuls kept in float (the
accuracy fallback). Exact in the sense that matters for tests: equal to float MatMul on fake-
quantized inputs and weights (see quantize_activation / quantize_weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common  # noqa: F401 - ir.passes.common

from edgeattn.passes._linear import const
from edgeattn.passes._tokens import Emitter
from edgeattn.passes.outlier_split import KEEP_FLOAT


@dataclass(frozen=True)
class QDQRule:
    """How one backend wants its Q/DQ: which ops, and the activation grid."""

    op_types: tuple[str, ...] = ("MatMul",)
    act_levels: int = 256  # uint8 levels used by activations (≤ 256)
    weight_max: int = 127  # largest |int8| weight (63 = 7-bit weights)
    symmetric: bool = False  # activations with zero point 0 (what TensorRT requires)
    note: str = ""

    def activation(self, low: float, high: float) -> tuple[np.float32, np.uint8 | np.int8]:
        return activation_params(low, high, self.act_levels, self.symmetric)


def quantizable(model: ir.Model, rule: QDQRule = QDQRule()) -> list[ir.Node]:
    """MatMuls (in graph order) with a non-constant input and a constant 2-D weight."""
    out = []
    for n in model.graph.all_nodes():
        if n.op_type not in rule.op_types or len(n.inputs) != 2 or n.inputs[0] is None:
            continue
        w = const(n.inputs[1])
        if n.metadata_props.get(KEEP_FLOAT):  # e.g. the outlier part of a split MatMul
            continue
        if const(n.inputs[0]) is None and w is not None and w.ndim == 2 and w.dtype == np.float32:
            out.append(n)
    return out


def activation_params(low: float, high: float, levels: int = 256,
                      symmetric: bool = False) -> tuple[np.float32, np.uint8 | np.int8]:
    """Scale and zero point for [low, high] (the range always contains 0): asymmetric uint8, or
    symmetric (zero point 0: uint8 when low ≥ 0, else int8 over ±max|x|)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if symmetric:
        if low == 0.0:
            return np.float32(high / (levels - 1) if high > 0 else 1.0), np.uint8(0)
        half = levels // 2 - 1  # 127 of 256 levels
        return np.float32(max(-low, high) / half), np.int8(0)
    scale = (high - low) / (levels - 1) if high > low else 1.0
    zp = int(np.clip(np.round(-low / scale), 0, levels - 1))
    return np.float32(scale), np.uint8(zp)


def quantize_weight(w: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (columns of a MatMul's [K, N] weight)."""
    scale = np.abs(w).max(0) / float(qmax)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale


def fake_quant_activation(x: np.ndarray, scale: np.float32, zp: np.uint8 | np.int8) -> np.ndarray:
    info = np.iinfo(np.asarray(zp).dtype)  # QuantizeLinear saturates to the zero point's type
    return ((np.clip(np.round(x / scale) + int(zp), info.min, info.max) - int(zp)) * scale).astype(np.float32)


class QuantizeMatMuls(ir.passes.InPlacePass):
    """Settings: ranges ({tensor name: (low, high)}, from calibration), rule (QDQRule),
    exclude (MatMul node names kept in float)."""

    def __init__(self, ranges: dict[str, tuple[float, float]], rule: QDQRule = QDQRule(),
                 exclude: set[str] | frozenset = frozenset()) -> None:
        super().__init__()
        self.ranges, self.rule, self.exclude = ranges, rule, set(exclude)
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        shared: dict[str, ir.Value] = {}
        done, missing = [], []
        for mm in quantizable(model, self.rule):
            if mm.name in self.exclude:
                continue
            x = mm.inputs[0]
            if x.name not in self.ranges:
                missing.append(mm.name)
                continue
            if x.name not in shared:
                shared[x.name] = self._fake_quant(model, x)
            wq, ws = quantize_weight(const(mm.inputs[1]), self.rule.weight_max)
            em = Emitter(model, f"{mm.name}_w")
            dq_w = em.op("DequantizeLinear", em.const(wq), em.const(ws), em.const(np.zeros_like(ws, dtype=np.int8)), axis=1)
            em.insert_before(mm)
            mm.replace_input_with(0, shared[x.name])
            mm.replace_input_with(1, dq_w)
            done.append(mm.name)
        ir.passes.common.RemoveUnusedNodesPass()(model)  # the replaced float weights
        self.sites_changed = len(done)
        self.details = {"quantized": len(done), "kept_float": sorted(self.exclude), "no_range": missing,
                        "act_levels": self.rule.act_levels, "weight_max": self.rule.weight_max,
                        "symmetric": self.rule.symmetric}
        return ir.passes.PassResult(model, modified=bool(done))

    def _fake_quant(self, model: ir.Model, x: ir.Value) -> ir.Value:
        """x → QuantizeLinear → DequantizeLinear, right after x's producer (first, for a graph input)."""
        scale, zp = self.rule.activation(*self.ranges[x.name])
        em = Emitter(model, f"{x.name}_q")
        s, z = em.const(scale), em.const(zp)
        out = em.op("DequantizeLinear", em.op("QuantizeLinear", x, s, z), s, z)
        if x.producer() is None:
            em.insert_before(next(iter(model.graph)))
        else:
            em.insert_after(x.producer())
        return out
