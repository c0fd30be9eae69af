"""HiLo attention (LITv2, Pan et al., NeurIPS 2022), training-free form on a pretrained ViT.

A site's heads are split: the first (1 − alpha)·H "Hi-Fi" heads attend within w×w windows of
the patch grid (see `window`), the other alpha·H "Lo-Fi" heads attend to keys/values average-
pooled over s×s cells. Pooling commutes with the K/V projections (they act per token), so the
Lo-Fi heads are the original heads reading pooled K, V. Class/distillation tokens stay unpooled
and visible to every head; their own queries keep full attention in the Hi-Fi heads. The head
outputs are concatenated back in their original order, so W_o is untouched. Exact when the
window covers the grid and alpha = 0.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from edgeattn.passes._tokens import Emitter, attention_sites, per_layer, site_blocks
from edgeattn.passes.window_attention import replace_site, windowed


class HiLoAttention(ir.passes.InPlacePass):
    """Settings: window (Hi-Fi window side: an int or one per chosen layer), pool (Lo-Fi pooling
    cell side; default = the window), alpha (fraction of heads that are Lo-Fi; default 0.5),
    layers, protect."""

    SETTINGS = {"window": "ints", "pool": "int", "alpha": "number", "layers": "layers", "protect": "int"}

    def __init__(self, window=4, pool: int | None = None, alpha: float = 0.5,
                 layers: list[int] | None = None, protect: int | None = None) -> None:
        super().__init__()
        if not 0 <= float(alpha) <= 1:
            raise ValueError(f"hilo needs 0 ≤ alpha ≤ 1, got {alpha}")
        self.window, self.pool = window, None if pool is None else int(pool)
        self.alpha, self.layers, self.protect = float(alpha), layers, protect
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        windows = per_layer(self.window, self.layers, attention_sites(model), "hilo", "window")
        sites, skipped = site_blocks(model, self.layers, self.protect)
        changed = []
        for block, p in sites:
            g = math.isqrt(block.tokens - p)
            lo = round(self.alpha * block.heads)
            w = windows[block.index]
            pool = self.pool or w
            if g * g != block.tokens - p or g % w or g % pool:
                skipped.append({"layer": block.index,
                                "reason": f"window {w} / pool {pool} do not tile the patch grid "
                                          f"({block.tokens - p} patches)"})
                continue
            _rewrite(model, block, p, g, w, pool, lo)
            changed.append({"layer": block.index, "hifi_heads": block.heads - lo, "lofi_heads": lo,
                            "lofi_keys": p + (g // pool) ** 2, "hifi_keys": p + w ** 2})
        if changed:  # shapes of the new values (FLOP counts and later passes read them)
            ir.passes.common.ShapeInferencePass()(model)
        self.sites_changed = len(changed)
        self.details = {"changed": changed, "skipped": skipped, "window": self.window, "pool": self.pool,
                        "alpha": self.alpha}
        return ir.passes.PassResult(model, modified=bool(changed))


def _rewrite(model: ir.Model, block, p: int, g: int, w: int, s: int, lo: int) -> None:
    node = block.attention
    q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
    c, h = q.shape[2], block.heads
    d = c // h
    split = (h - lo) * d  # channels of the Hi-Fi heads come first
    attrs = {name: a.value for name, a in node.attributes.items()}
    e = Emitter(model, f"{node.name or 'attn'}_hilo")
    parts = []
    if lo < h:
        hi = {**attrs, "q_num_heads": h - lo, "kv_num_heads": h - lo}
        parts.append(windowed(e, *(e.slice(x, 0, split, 2) for x in (q, k, v)), p, g, w, split, hi))
    if lo:
        lo_attrs = {**attrs, "q_num_heads": lo, "kv_num_heads": lo}
        q_lo, k_lo, v_lo = (e.slice(x, split, c, 2) for x in (q, k, v))
        parts.append(e.op("Attention", q_lo, _pooled(e, k_lo, p, g, s, c - split),
                          _pooled(e, v_lo, p, g, s, c - split), **lo_attrs))
    out = parts[0] if len(parts) == 1 else e.op("Concat", *parts, axis=2)
    replace_site(e, model, node, out)


def _pooled(e: Emitter, x: ir.Value, p: int, g: int, s: int, c: int) -> ir.Value:
    """(B, p + g², c) → (B, p + (g/s)², c): patch tokens average-pooled over s×s cells."""
    grid = e.op("Transpose", e.op("Reshape", e.slice(x, p, p + g * g, 1), e.ints(0, g, g, c)), perm=[0, 3, 1, 2])
    pooled = e.op("AveragePool", grid, kernel_shape=[s, s], strides=[s, s])  # (B, c, g/s, g/s)
    tokens = e.op("Reshape", e.op("Transpose", pooled, perm=[0, 2, 3, 1]), e.ints(0, -1, c))
    return e.op("Concat", e.slice(x, 0, p, 1), tokens, axis=1) if p else tokens
