"""Blocked window attention for high resolution (Generalized Neighborhood Attention with stride =
window, i.e. tile-aligned), training-free.

Patch tokens on a g×g grid attend only within their w×w window, plus the special leading tokens
(class/distillation), which every window sees; the special tokens' own queries keep full
attention. Windows are cut by Reshape/Transpose (no gather, no mask), so the work saved is real:
a patch query scores p + w² keys instead of N. Exact when one window covers the grid (w = g).
"""

from __future__ import annotations

import math

import onnx_ir as ir

from edgeattn.passes._tokens import Emitter, site_blocks


class WindowAttention(ir.passes.InPlacePass):
    """Settings: window (side w of the square windows, in patches; must divide the grid side),
    layers (Attention site indices; default all), protect (prefix tokens; default found)."""

    def __init__(self, window: int = 8, layers: list[int] | None = None, protect: int | None = None) -> None:
        super().__init__()
        if int(window) < 1:
            raise ValueError(f"window needs window ≥ 1, got {window}")
        self.window, self.layers, self.protect = int(window), layers, protect
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        sites, skipped = site_blocks(model, self.layers, self.protect)
        changed = []
        for block, p in sites:
            g = math.isqrt(block.tokens - p)
            w = self.window
            if g * g != block.tokens - p:
                skipped.append({"layer": block.index, "reason": f"{block.tokens - p} patch tokens are not a square grid"})
                continue
            if g % w:
                skipped.append({"layer": block.index, "reason": f"window {w} does not divide the {g}×{g} grid"})
                continue
            _rewrite(model, block, p, g, w)
            changed.append({"layer": block.index, "grid": g, "window": w, "keys_per_patch_query": p + w * w,
                            "keys_before": block.tokens})
        self.sites_changed = len(changed)
        self.details = {"changed": changed, "skipped": skipped, "window": self.window}
        return ir.passes.PassResult(model, modified=bool(changed))


def windowed(e: Emitter, q: ir.Value, k: ir.Value, v: ir.Value, p: int, g: int, w: int, c: int, attrs: dict) -> ir.Value:
    """Blocked window attention of (B, p + g², c) q/k/v: patch queries see their w×w tile and
    the p prefix tokens; prefix queries see everything. Returns (B, p + g², c)."""
    n = g // w  # windows per side

    def windows(x: ir.Value) -> ir.Value:  # (B, p + g², c) → (B·n², w², c)
        grid = e.op("Reshape", e.slice(x, p, p + g * g, 1), e.ints(0, n, w, n, w, c))
        return e.op("Reshape", e.op("Transpose", grid, perm=[0, 1, 3, 2, 4, 5]), e.ints(-1, w * w, c))

    def with_prefix(x: ir.Value, win: ir.Value) -> ir.Value:  # every window also sees the prefix tokens
        if not p:
            return win
        head = e.op("Unsqueeze", e.slice(x, 0, p, 1), e.ints(1))  # (B, 1, p, c)
        tiled = e.op("Reshape", e.op("Expand", head, e.ints(1, n * n, 1, 1)), e.ints(-1, p, c))
        return e.op("Concat", tiled, win, axis=1)

    out_w = e.op("Attention", windows(q), with_prefix(k, windows(k)), with_prefix(v, windows(v)), **attrs)
    grid = e.op("Reshape", out_w, e.ints(-1, n, n, w, w, c))
    patches = e.op("Reshape", e.op("Transpose", grid, perm=[0, 1, 3, 2, 4, 5]), e.ints(-1, g * g, c))
    if not p:
        return patches
    head = e.op("Attention", e.slice(q, 0, p, 1), k, v, **attrs)  # special tokens: full attention
    return e.op("Concat", head, patches, axis=1)


def replace_site(e: Emitter, model: ir.Model, node: ir.Node, out: ir.Value) -> None:
    """Insert the emitted nodes before `node`, move its users to `out`, remove it."""
    e.insert_before(node)
    node.outputs[0].replace_all_uses_with(out)
    out.shape, out.dtype = node.outputs[0].shape, node.outputs[0].dtype
    model.graph.remove(node, safe=True)


def _rewrite(model: ir.Model, block, p: int, g: int, w: int) -> None:
    node = block.attention
    q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
    attrs = {name: a.value for name, a in node.attributes.items()}
    e = Emitter(model, f"{node.name or 'attn'}_window")
    replace_site(e, model, node, windowed(e, q, k, v, p, g, w, q.shape[2], attrs))
