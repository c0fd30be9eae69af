"""SmoothQuant scale migration (Xiao et al., ICML 2023), an exact transform run before INT8.

Activation outliers sit in a few channels; per-tensor activation scales then waste the int8 range
on them. For a LayerNorm whose output feeds constant-weight MatMuls (the Q/K/V projections,
the MLP's first layer), channel j is divided by s_j = max|X_j|^α / max|W_j|^(1−α) (W_j: row j
of every consuming weight) by dividing the LayerNorm's scale and bias, and every consuming
weight row j is multiplied by s_j: X·W = (X/s)·(sW) exactly. Other consumers (the residual Add
of a post-LN encoder such as BERT) read the output through a Mul by s, which restores it
exactly (one elementwise op per site; pre-LN models need none). With `vo` the same migration runs
from the attention output into the output projection, through the value projection (attention
is linear in V per channel). max|X_j| is measured on calibration data.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common  # noqa: F401 - ir.passes.common

from edgeattn.passes._linear import channel_absmax, const, input_projection, output_projection, replace_const
from edgeattn.passes._tokens import Emitter
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads


def _layernorm_sites(model: ir.Model) -> list[tuple[ir.Node, list[ir.Node], list]]:
    """LayerNorms with constant affine parameters feeding ≥ 1 constant-weight MatMul; returns
    (LayerNorm, those MatMuls, the other uses: e.g. a post-LN encoder's residual Add)."""
    sites = []
    for node in model.graph.all_nodes():
        if node.op_type != "LayerNormalization" or const(node.inputs[1]) is None:
            continue
        if len(node.inputs) > 2 and node.inputs[2] is not None and const(node.inputs[2]) is None:
            continue
        if node.outputs[0].is_graph_output():
            continue
        users = list(node.outputs[0].uses())
        mms = [u.node for u in users if u.node.op_type == "MatMul" and u.idx == 0
               and const(u.node.inputs[1]) is not None and const(u.node.inputs[1]).ndim == 2]
        if mms:
            sites.append((node, mms, [u for u in users if u.node not in mms]))
    return sites


def _vo_sites(model: ir.Model) -> list[tuple[ir.Node, object, object]]:
    sites = []
    for node in model.graph.all_nodes():
        if node.op_type != "Attention" or len(node.inputs) < 3:
            continue
        v, o = input_projection(node.inputs[2]), output_projection(node.outputs[0])
        if v is None or o is None or len(node.inputs[2].uses()) != 1 or node.outputs[0].is_graph_output():
            continue
        if v.add is not None and len(v.matmul.outputs[0].uses()) != 1:
            continue
        sites.append((node, v, o))
    return sites


def _mul_back(model: ir.Model, ln: ir.Node, s: np.ndarray) -> ir.Value:
    em = Emitter(model, f"{ln.name}_unsmooth")
    back = em.op("Mul", ln.outputs[0], em.const(s.astype(np.float32)))
    em.insert_after(ln)
    return back


def smoothing_scales(x_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float) -> np.ndarray:
    s = np.power(np.maximum(x_absmax, 1e-8), alpha) / np.power(np.maximum(w_absmax, 1e-8), 1 - alpha)
    s = np.where((x_absmax > 0) & (w_absmax > 0), s, 1.0)
    return np.clip(s, 1e-4, 1e4)


class SmoothQuant(ir.passes.InPlacePass):
    """Settings: alpha (migration strength, 0.5 as the paper's default), vo (also migrate into
    the output projection), calibration (list of feed dicts; given by the compiler)."""

    NEEDS_CALIBRATION = True

    def __init__(self, alpha: float = 0.5, vo: bool = True, calibration: list[dict] | None = None) -> None:
        super().__init__()
        if not 0 <= float(alpha) <= 1:
            raise ValueError(f"smooth-quant needs 0 ≤ alpha ≤ 1, got {alpha}")
        self.alpha, self.vo, self.calibration = float(alpha), bool(vo), calibration
        self.sites_changed, self.details = 0, {}

    @staticmethod
    def _restore(model: ir.Model, ln: ir.Node, uses: list, s: np.ndarray) -> None:
        back = _mul_back(model, ln, s)
        for u in uses:
            u.node.replace_input_with(u.idx, back)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.vo:
            FoldAttentionHeads()(model)  # the V → O channel map is the identity only in the 3-D form
        ln_sites = _layernorm_sites(model)
        vo_sites = _vo_sites(model) if self.vo else []
        if not (ln_sites or vo_sites):
            self.details = {"layernorm": 0, "value_output": 0, "alpha": self.alpha}
            return ir.passes.PassResult(model, modified=False)
        if not self.calibration:
            raise ValueError("smooth-quant needs calibration data")
        values = [n.outputs[0] for n, _, _ in ln_sites] + [n.outputs[0] for n, _, _ in vo_sites]
        absmax = channel_absmax(model, values, self.calibration)
        ratios = []
        for (ln, users, others), xmax in zip(ln_sites, absmax):
            weights = [const(u.inputs[1]) for u in users]
            s = smoothing_scales(xmax, np.max([np.abs(w).max(1) for w in weights], axis=0), self.alpha)
            for idx in (1, 2):
                if len(ln.inputs) > idx and ln.inputs[idx] is not None:
                    arr = const(ln.inputs[idx])
                    replace_const(model, ln, idx, (arr / s).astype(arr.dtype))
            for u, w in zip(users, weights):
                replace_const(model, u, 1, (w * s[:, None]).astype(w.dtype))
            if others:  # e.g. the residual of a post-LN block gets the unscaled values back
                self._restore(model, ln, others, s)
            ratios.append(float(xmax.max() / max(np.median(xmax), 1e-12)))
        for (node, _, _), xmax in zip(vo_sites, absmax[len(ln_sites):]):
            # re-read: the LayerNorm migration above has just rescaled the V weight's rows
            v, o = input_projection(node.inputs[2]), output_projection(node.outputs[0])
            s = smoothing_scales(xmax, np.abs(o.weight).max(1), self.alpha)
            v.set_weight(model, (v.weight / s[None, :]).astype(v.weight.dtype))
            if v.bias is not None:
                v.set_bias(model, (v.bias / s).astype(v.bias.dtype))
            o.set_weight(model, (o.weight * s[:, None]).astype(o.weight.dtype))
        ir.passes.common.RemoveUnusedNodesPass()(model)  # the replaced float weights
        self.sites_changed = len(ln_sites) + len(vo_sites)
        self.details = {"layernorm": len(ln_sites), "value_output": len(vo_sites), "alpha": self.alpha,
                        "restored_uses": sum(len(o) for _, _, o in ln_sites),
                        "max_outlier_ratio": round(max(ratios), 2) if ratios else None}
        return ir.passes.PassResult(model, modified=True)
