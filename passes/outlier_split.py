"""Outlier-channel split before INT8 (the mixed-precision decomposition of LLM.int8(), Dettmers
et al. 2022, applied to a static graph), an exact transform.

In BERT-style encoders the input of the MLP's second projection (the GELU output) has one or two
channels whose range is 3–4× every other channel's (minilm-l6's layers 0–3: max 24 against < 6.1),
so one per-tensor int8 scale spends its grid on them (fc2 output SNR 22–27 dB in int8; 31–36 dB
with those channels apart). SmoothQuant cannot move them: GELU sits between the two weights.

For a MatMul X·W whose input comes from a constant-weight MatMul through a bias Add and
elementwise unary ops (x → MatMul(W1) → Add(b1) → Gelu → X), the channels whose calibrated max |x|
exceeds `ratio` × the (max_channels + 1)-th largest channel's (so at most `max_channels`) are moved
last by permuting W1's columns, b1 and W's rows (exact: the ops between are per element); then
X splits into [others | outliers] and X·W = X_o·W_o + X_x·W_x. The outlier MatMul (k ≤
`max_channels` rows: no real work) is marked to stay in float; the other one quantizes with a
range that no longer holds the outliers.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common  # noqa: F401 - ir.passes.common

from edgeattn.passes._linear import channel_absmax, const, input_projection, replace_const
from edgeattn.passes._tokens import Emitter, redirect_uses

KEEP_FLOAT = "edgeattn.keep_float"  # node metadata: the int8 placement leaves this MatMul in float
PART = "edgeattn.part"  # node metadata: which part of a split MatMul (for the per-layer report)
UNARY = {"Gelu", "Relu", "Sigmoid", "Tanh", "Erf", "LeakyRelu", "HardSigmoid", "Softplus", "Elu", "Selu", "HardSwish"}


def _source(x: ir.Value):
    """The constant projection that X comes from through single-use unary ops, or None."""
    v = x
    while len(v.uses()) == 1 and v.producer() is not None and v.producer().op_type in UNARY:
        v = v.producer().inputs[0]
    if len(v.uses()) != 1 or v.is_graph_output():
        return None
    proj = input_projection(v)
    if proj is None or proj.weight.ndim != 2 or len(proj.matmul.outputs[0].uses()) != 1:
        return None
    if proj.add is not None and (proj.bias is None or proj.bias.shape != (proj.weight.shape[1],)):
        return None
    return proj


def sites(model: ir.Model) -> list[tuple[ir.Node, object]]:
    """(MatMul with a constant 2-D weight, the projection its input permutes through)."""
    out = []
    for n in model.graph.all_nodes():
        w = const(n.inputs[1]) if n.op_type == "MatMul" and len(n.inputs) == 2 else None
        if w is None or w.ndim != 2 or n.inputs[0] is None or const(n.inputs[0]) is not None:
            continue
        if n.metadata_props.get(KEEP_FLOAT) or len(n.inputs[0].uses()) != 1:
            continue
        proj = _source(n.inputs[0])
        if proj is not None and proj.weight.shape[1] == w.shape[0]:
            out.append((n, proj))
    return out


def reference_level(absmax: np.ndarray, max_channels: int) -> float:
    """The largest max |x| that may not be split off: the (max_channels + 1)-th largest."""
    return float(np.sort(absmax)[::-1][max_channels]) if len(absmax) > max_channels else float("inf")


def outlier_channels(absmax: np.ndarray, ratio: float, max_channels: int) -> np.ndarray:
    """Channels whose max |x| exceeds ratio × reference_level, largest first (at most max_channels)."""
    top = np.argsort(-absmax)[:max_channels]
    return top[absmax[top] > ratio * reference_level(absmax, max_channels)]


class OutlierSplit(ir.passes.InPlacePass):
    """Settings: ratio (threshold over the (max_channels + 1)-th largest channel; 2), max_channels (8),
    calibration (list of feed dicts; given by the compiler)."""

    NEEDS_CALIBRATION = True

    def __init__(self, ratio: float = 2.0, max_channels: int = 8, calibration: list[dict] | None = None) -> None:
        super().__init__()
        if float(ratio) <= 1 or int(max_channels) < 1:
            raise ValueError(f"outlier-split needs ratio > 1 and max_channels ≥ 1, got {ratio}, {max_channels}")
        self.ratio, self.max_channels, self.calibration = float(ratio), int(max_channels), calibration
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        found = sites(model)
        if found and not self.calibration:
            raise ValueError("outlier-split needs calibration data")
        absmax = channel_absmax(model, [n.inputs[0] for n, _ in found], self.calibration) if found else []
        split = []
        for (mm, proj), xmax in zip(found, absmax):
            out = outlier_channels(xmax, self.ratio, self.max_channels)
            if len(out):
                self._split(model, mm, proj, out)
                split.append({"node": mm.name, "channels": [int(c) for c in out],
                              "ratio": round(float(xmax[out].min() / reference_level(xmax, self.max_channels)), 2)})
        ir.passes.common.RemoveUnusedNodesPass()(model)  # the replaced weights and MatMuls
        self.sites_changed = len(split)
        self.details = {"candidates": len(found), "split": split, "ratio": self.ratio, "max_channels": self.max_channels}
        return ir.passes.PassResult(model, modified=bool(split))

    @staticmethod
    def _split(model: ir.Model, mm: ir.Node, proj, out: np.ndarray) -> None:
        w = const(mm.inputs[1])
        k = len(out)
        perm = np.concatenate([np.setdiff1d(np.arange(w.shape[0]), out), out])
        proj.set_weight(model, proj.weight[:, perm])
        if proj.add is not None:
            proj.set_bias(model, proj.bias[perm])
        em = Emitter(model, f"{mm.name}_split")
        rest, outl = em.op_multi("Split", mm.inputs[0], em.ints(w.shape[0] - k, k), num_outputs=2, axis=-1)
        parts = (em.op("MatMul", rest, em.const(np.ascontiguousarray(w[perm[:-k]]))),
                 em.op("MatMul", outl, em.const(np.ascontiguousarray(w[out]))))
        for v, part in zip(parts, ("other channels", f"{k} outlier channel{'s' * (k > 1)}")):
            node = v.producer()
            node.name = f"{mm.name}_{'outliers' if part[0].isdigit() else 'others'}"
            node.metadata_props.update(mm.metadata_props)
            node.metadata_props[PART] = part
        parts[1].producer().metadata_props[KEEP_FLOAT] = "1"
        em.insert_before(mm)
        # the bias Add stays on the big MatMul (a backend fuses it there); the outlier sum comes after it
        users = list(mm.outputs[0].uses())
        bias = users[0].node if (len(users) == 1 and users[0].node.op_type == "Add" and not mm.outputs[0].is_graph_output()
                                 and const(users[0].node.inputs[1 - users[0].idx]) is not None) else None
        if bias is not None:
            bias.replace_input_with(users[0].idx, parts[0])
            tail = bias.outputs[0]
            em2 = Emitter(model, f"{mm.name}_split_sum")
            y = em2.op("Add", tail, parts[1])
            em2.insert_after(bias)
            _move_uses(model, tail, y, keep=y.producer())
        else:
            em2 = Emitter(model, f"{mm.name}_split_sum")
            y = em2.op("Add", *parts)
            em2.insert_before(mm)
            _move_uses(model, mm.outputs[0], y, keep=None)
        model.graph.remove(mm, safe=True)


def _move_uses(model: ir.Model, old: ir.Value, new: ir.Value, keep: ir.Node | None) -> None:
    """Every consumer of `old` (but `keep`) reads `new`; a graph output moves to `new` by name."""
    redirect_uses(old, new, {keep} if keep is not None else set())
    if old.is_graph_output():
        idx = list(model.graph.outputs).index(old)
        name = old.name
        old.name = f"{name}_unsplit"
        new.name = name
        model.graph.outputs[idx] = new
