"""Local attention for high resolution: Generalized Neighborhood Attention (Hassani et al., 2025)
with window w and stride s, training-free.

Patch tokens on a g×g grid are cut into s×s query tiles; each tile attends to one w×w window of
keys, the one centred on the tile and shifted inside the grid at the borders, plus the special
leading tokens (class/distillation), which every window sees; the special tokens' own queries
keep full attention. s = w is blocked (tile-aligned) window attention, cut by Reshape/Transpose
alone; s = 1 is sliding-window neighborhood attention; between, strided. Keys are gathered per
tile (no mask), so the work saved is real: a patch query scores p + w² keys instead of N, at the
price of copying (w/s)² × the keys. Exact when one window covers the grid (w = g).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import Emitter, attention_sites, per_layer, site_blocks


class WindowAttention(ir.passes.InPlacePass):
    """Settings: window (side w of the square key windows, in patches: one int, or one per
    chosen layer), stride (side s of the query tiles sharing a window: None = w, i.e. blocked;
    an int or one per chosen layer; must divide the grid side, 1 ≤ s ≤ w), layers (Attention
    site indices; default all), protect (prefix tokens; default found)."""

    SETTINGS = {"window": "ints", "stride": "ints", "layers": "layers", "protect": "int"}

    def __init__(self, window=8, stride=None, layers: list[int] | None = None, protect: int | None = None) -> None:
        super().__init__()
        self.window, self.stride, self.layers, self.protect = window, stride, layers, protect
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        n_sites = attention_sites(model)
        windows = per_layer(self.window, self.layers, n_sites, "window", "window")
        strides = windows if self.stride is None else per_layer(self.stride, self.layers, n_sites, "window", "stride")
        for layer, w in windows.items():
            if w < 1 or not 1 <= strides[layer] <= w:
                raise ValueError(f"window needs window ≥ 1 and 1 ≤ stride ≤ window, got window={w}, "
                                 f"stride={strides[layer]} at layer {layer}")
        sites, skipped = site_blocks(model, self.layers, self.protect)
        changed = []
        for block, p in sites:
            g = math.isqrt(block.tokens - p)
            w, st = min(windows[block.index], g), min(strides[block.index], g)
            if g * g != block.tokens - p:
                skipped.append({"layer": block.index, "reason": f"{block.tokens - p} patch tokens are not a square grid"})
                continue
            if g % st:
                what = "window" if st == w else "stride"
                skipped.append({"layer": block.index, "reason": f"{what} {st} does not divide the {g}×{g} grid"})
                continue
            _rewrite(model, block, p, g, w, st)
            changed.append({"layer": block.index, "grid": g, "window": w, "stride": st,
                            "keys_per_patch_query": p + w * w, "keys_before": block.tokens})
        if changed:  # shapes of the new values (FLOP counts and later passes read them)
            ir.passes.common.ShapeInferencePass()(model)
        self.sites_changed = len(changed)
        self.details = {"changed": changed, "skipped": skipped, "window": self.window, "stride": self.stride}
        return ir.passes.PassResult(model, modified=bool(changed))


def window_starts(g: int, w: int, s: int) -> list[int]:
    """First row (or column) of each s-tile's w-wide key window: centred on the tile, shifted
    inside the grid at the borders (neighborhood attention's rule)."""
    return [min(max(t * s - (w - s) // 2, 0), g - w) for t in range(g // s)]


def windowed(e: Emitter, q: ir.Value, k: ir.Value, v: ir.Value, p: int, g: int, w: int, c: int, attrs: dict,
             s: int | None = None) -> ir.Value:
    """Neighborhood attention of (B, p + g², c) q/k/v: patch queries, in s×s tiles, see their
    tile's w×w window and the p prefix tokens; prefix queries see everything. s = w (default):
    blocked. Returns (B, p + g², c)."""
    s = w if s is None else s
    n = g // s  # query tiles per side

    def tiles(x: ir.Value, t: int) -> ir.Value:  # (B, p + g², c) → (B·(g/t)², t², c), tile-aligned
        m = g // t
        grid = e.op("Reshape", e.slice(x, p, p + g * g, 1), e.ints(0, m, t, m, t, c))
        return e.op("Reshape", e.op("Transpose", grid, perm=[0, 1, 3, 2, 4, 5]), e.ints(-1, t * t, c))

    def windows(x: ir.Value) -> ir.Value:  # (B, p + g², c) → (B·n², w², c): each tile's key window
        if s == w:
            return tiles(x, w)
        starts = window_starts(g, w, s)
        idx = np.array([[(y0 + dy) * g + x0 + dx for dy in range(w) for dx in range(w)]
                        for y0 in starts for x0 in starts], np.int64)
        rows = e.op("Gather", e.slice(x, p, p + g * g, 1), e.const(idx.reshape(-1)), axis=1)
        return e.op("Reshape", rows, e.ints(-1, w * w, c))

    def with_prefix(x: ir.Value, win: ir.Value) -> ir.Value:  # every window also sees the prefix tokens
        if not p:
            return win
        head = e.op("Unsqueeze", e.slice(x, 0, p, 1), e.ints(1))  # (B, 1, p, c)
        tiled = e.op("Reshape", e.op("Expand", head, e.ints(1, n * n, 1, 1)), e.ints(-1, p, c))
        return e.op("Concat", tiled, win, axis=1)

    out_w = e.op("Attention", tiles(q, s), with_prefix(k, windows(k)), with_prefix(v, windows(v)), **attrs)
    grid = e.op("Reshape", out_w, e.ints(-1, n, n, s, s, c))
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


def _rewrite(model: ir.Model, block, p: int, g: int, w: int, s: int) -> None:
    node = block.attention
    q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
    attrs = {name: a.value for name, a in node.attributes.items()}
    e = Emitter(model, f"{node.name or 'attn'}_window")
    replace_site(e, model, node, windowed(e, q, k, v, p, g, w, q.shape[2], attrs, s))
