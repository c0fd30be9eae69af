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

from edgeattn.passes._linear import Projection, channel_stats, input_projection, output_projection
from edgeattn.passes._padding import key_padding_input
from edgeattn.passes._tokens import Block, find_blocks, reinfer_shapes
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads


class HeadPruning(ir.passes.InPlacePass):
    """Settings: ratio (fraction of all heads removed) or heads (how many, across layers; wins
    over ratio), layers (Attention sites considered; default all), calibration (list of feed
    dicts; given by the compiler)."""

    NEEDS_CALIBRATION = True

    SETTINGS = {"ratio": "number", "layers": "layers", "heads": "int"}  # calibration: given by the compiler

    def __init__(self, ratio: float = 0.2, layers: list[int] | None = None, calibration: list[dict] | None = None,
                 heads: int | None = None) -> None:
        super().__init__()
        if not 0 <= float(ratio) < 1:
            raise ValueError(f"head-prune needs 0 ≤ ratio < 1, got {ratio}")
        if heads is not None and int(heads) < 0:
            raise ValueError(f"head-prune needs heads ≥ 0, got {heads}")
        self.ratio, self.layers, self.calibration = float(ratio), layers, calibration
        self.heads = None if heads is None else int(heads)
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        FoldAttentionHeads()(model)
        blocks, skipped = find_blocks(model, head_shared_masks=True)  # a mask every head shares stays valid
        sites = []
        for b in blocks:
            if self.layers is not None and b.index not in self.layers:
                continue
            proj = [input_projection(v) for v in b.attention.inputs[:3]] + [output_projection(b.attention.outputs[0])]
            if any(p is None for p in proj) or proj[3].add is None:
                skipped.append({"layer": b.index, "reason": "q/k/v/output projections are not constant MatMul(+Add)"})
                continue
            sites.append((b, proj))
        pruned = []
        total = sum(b.heads for b, _ in sites)
        if sites and (self.ratio > 0 if self.heads is None else self.heads > 0):
            if not self.calibration:
                raise ValueError("head-prune needs calibration data")
            stats = channel_stats(model, [b.attention.outputs[0] for b, _ in sites], self.calibration,
                                  _real_tokens(model, sites[0][0]))
            drop = _choose(sites, stats, self.heads if self.heads is not None else int(self.ratio * total))
            for (block, proj), (mean, _), heads in zip(sites, stats, drop):
                if heads:
                    _surgery(model, block, proj, heads, mean)
                    pruned.append({"layer": block.index, "heads": sorted(heads), "kept": block.heads - len(heads)})
            if pruned:
                reinfer_shapes(model)
        self.sites_changed = len(pruned)
        self.details = {"pruned": pruned, "skipped": skipped, "ratio": self.ratio,
                        "heads_removed": sum(len(p["heads"]) for p in pruned), "heads_considered": total}
        return ir.passes.PassResult(model, modified=bool(pruned))


def _real_tokens(model: ir.Model, block: Block):
    """With a key-padding mask, the statistics count the real tokens only: a padded position's
    attention output is computed but never used, and would pull the means (the compensation)
    and the fluctuation scores toward garbage."""
    mask = block.attention.inputs[3] if len(block.attention.inputs) > 3 else None
    source = key_padding_input(model, mask, block.tokens) if mask is not None else None
    if source is None:
        return None
    return lambda feeds: np.asarray(feeds[source.name]).reshape(-1) != 0


def _choose(sites, stats, budget: int) -> list[set[int]]:
    """Heads to drop per site: the globally lowest z-scored fluctuation, ≥ 1 head kept per site."""
    scored = []
    for i, ((block, proj), (_, var)) in enumerate(zip(sites, stats)):
        s = var * (proj[3].weight.astype(np.float64) ** 2).sum(1)
        z = (s - s.mean()) / (s.std() + 1e-12)
        d = len(z) // block.heads
        scored += [(float(z[h * d:(h + 1) * d].mean()), i, h) for h in range(block.heads)]
    drop: list[set[int]] = [set() for _ in sites]
    for _, i, h in sorted(scored):
        if budget == 0:
            break
        if len(drop[i]) + 1 < sites[i][0].heads:
            drop[i].add(h)
            budget -= 1
    return drop


def _surgery(model: ir.Model, block: Block, proj: list[Projection], heads: set[int], mean: np.ndarray) -> None:
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
