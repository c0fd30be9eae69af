"""Head pruning with bias compensation (FLAP, An et al., AAAI 2024), training-free.

On calibration data, each input channel j of an attention block's output projection W_o gets
the fluctuation score S_j = Var(y_j) · ‖W_o[j, :]‖² (y = the attention output feeding W_o);
scores are z-scored per layer and averaged over a head's channels; the lowest `ratio` of all
heads (a global threshold, so layers lose different counts; every layer keeps ≥ 1) are removed:
their q/k/v projection columns and W_o rows go, and W_o · mean(y_pruned) is added to the output
bias — the pruned heads are replaced by their average contribution. Exact when nothing is
pruned; the Attention site's head count shrinks, so every backend runs smaller GEMMs.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import Block, find_blocks, reinfer_shapes
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads


def _const(v: ir.Value | None) -> np.ndarray | None:
    return None if v is None or v.const_value is None else v.const_value.numpy()


class _Projection:
    """x → MatMul(W) [→ Add(b)] feeding (or fed by) an attention site; W, b constant."""

    def __init__(self, matmul: ir.Node, add: ir.Node | None) -> None:
        self.matmul, self.add = matmul, add
        self.weight = _const(matmul.inputs[1])
        self.bias = None if add is None else next((_const(i) for i in add.inputs if _const(i) is not None), None)

    def set_weight(self, model: ir.Model, w: np.ndarray) -> None:
        _replace_const(model, self.matmul, 1, w)

    def set_bias(self, model: ir.Model, b: np.ndarray) -> None:
        idx = next(i for i, v in enumerate(self.add.inputs) if _const(v) is not None)
        _replace_const(model, self.add, idx, b)


def _replace_const(model: ir.Model, node: ir.Node, idx: int, array: np.ndarray) -> None:
    """A fresh initializer (the old one may be shared)."""
    old = node.inputs[idx]
    value = ir.Value(name=f"{old.name}_pruned_{id(node)}", const_value=ir.tensor(np.ascontiguousarray(array)))
    model.graph.register_initializer(value)
    node.replace_input_with(idx, value)


def _input_projection(v: ir.Value) -> _Projection | None:
    node = v.producer()
    add = None
    if node is not None and node.op_type == "Add":
        add = node
        node = next((i.producer() for i in node.inputs if i is not None and _const(i) is None), None)
    if node is None or node.op_type != "MatMul" or _const(node.inputs[1]) is None:
        return None
    return _Projection(node, add)


def _output_projection(v: ir.Value) -> _Projection | None:
    users = [u.node for u in v.uses()]
    if len(users) != 1 or users[0].op_type != "MatMul" or _const(users[0].inputs[1]) is None:
        return None
    mm = users[0]
    nxt = [u.node for u in mm.outputs[0].uses()]
    add = nxt[0] if len(nxt) == 1 and nxt[0].op_type == "Add" and any(_const(i) is not None for i in nxt[0].inputs) else None
    return _Projection(mm, add)


class HeadPruning(ir.passes.InPlacePass):
    """Settings: ratio (fraction of all heads removed), layers (Attention sites considered;
    default all), calibration (list of feed dicts; given by the compiler)."""

    NEEDS_CALIBRATION = True

    def __init__(self, ratio: float = 0.2, layers: list[int] | None = None, calibration: list[dict] | None = None) -> None:
        super().__init__()
        if not 0 <= float(ratio) < 1:
            raise ValueError(f"head-prune needs 0 ≤ ratio < 1, got {ratio}")
        self.ratio, self.layers, self.calibration = float(ratio), layers, calibration
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        FoldAttentionHeads()(model)
        blocks, skipped = find_blocks(model)
        sites = []
        for b in blocks:
            if self.layers is not None and b.index not in self.layers:
                continue
            proj = [_input_projection(v) for v in b.attention.inputs[:3]] + [_output_projection(b.attention.outputs[0])]
            if any(p is None for p in proj) or proj[3].add is None:
                skipped.append({"layer": b.index, "reason": "q/k/v/output projections are not constant MatMul(+Add)"})
                continue
            sites.append((b, proj))
        pruned = []
        if sites and self.ratio > 0:
            if not self.calibration:
                raise ValueError("head-prune needs calibration data")
            stats = _channel_stats(model, [b.attention.outputs[0] for b, _ in sites], self.calibration)
            drop = _choose(sites, stats, self.ratio)
            for (block, proj), (mean, _), heads in zip(sites, stats, drop):
                if heads:
                    _surgery(model, block, proj, heads, mean)
                    pruned.append({"layer": block.index, "heads": sorted(heads), "kept": block.heads - len(heads)})
            if pruned:
                reinfer_shapes(model)
        self.sites_changed = len(pruned)
        total = sum(b.heads for b, _ in sites)
        self.details = {"pruned": pruned, "skipped": skipped, "ratio": self.ratio,
                        "heads_removed": sum(len(p["heads"]) for p in pruned), "heads_considered": total}
        return ir.passes.PassResult(model, modified=bool(pruned))


def _channel_stats(model: ir.Model, values: list[ir.Value], calibration: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance of each value over all calibration tokens (ORT, opt off)."""
    import onnxruntime as ort

    proto = ir.to_proto(model)
    known = {o.name for o in proto.graph.output}
    for v in values:
        if v.name not in known:
            proto.graph.output.add().name = v.name
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [v.name for v in values]
    rows: list[list[np.ndarray]] = [[] for _ in values]
    for feeds in calibration:
        for i, out in enumerate(sess.run(names, feeds)):
            rows[i].append(out.reshape(-1, out.shape[-1]).astype(np.float64))
    return [(np.concatenate(r).mean(0), np.concatenate(r).var(0)) for r in rows]


def _choose(sites, stats, ratio: float) -> list[set[int]]:
    """Heads to drop per site: the globally lowest z-scored fluctuation, ≥ 1 head kept per site."""
    scored = []
    for i, ((block, proj), (_, var)) in enumerate(zip(sites, stats)):
        s = var * (proj[3].weight.astype(np.float64) ** 2).sum(1)
        z = (s - s.mean()) / (s.std() + 1e-12)
        d = len(z) // block.heads
        scored += [(float(z[h * d:(h + 1) * d].mean()), i, h) for h in range(block.heads)]
    budget = int(ratio * len(scored))
    drop: list[set[int]] = [set() for _ in sites]
    for _, i, h in sorted(scored):
        if budget == 0:
            break
        if len(drop[i]) + 1 < sites[i][0].heads:
            drop[i].add(h)
            budget -= 1
    return drop


def _surgery(model: ir.Model, block: Block, proj: list[_Projection], heads: set[int], mean: np.ndarray) -> None:
    d = proj[0].weight.shape[1] // block.heads
    keep = [h for h in range(block.heads) if h not in heads]
    cols = np.concatenate([np.arange(h * d, (h + 1) * d) for h in keep])
    gone = np.concatenate([np.arange(h * d, (h + 1) * d) for h in sorted(heads)])
    for p in proj[:3]:
        p.set_weight(model, p.weight[:, cols])
        if p.bias is not None:
            p.set_bias(model, p.bias[cols])
    out = proj[3]
    dtype = out.weight.dtype
    out.set_bias(model, (out.bias.astype(np.float64) + mean[gone] @ out.weight[gone].astype(np.float64)).astype(dtype))
    out.set_weight(model, out.weight[cols])
    node = block.attention
    node.attributes["q_num_heads"] = ir.AttrInt64("q_num_heads", len(keep))
    node.attributes["kv_num_heads"] = ir.AttrInt64("kv_num_heads", len(keep))
