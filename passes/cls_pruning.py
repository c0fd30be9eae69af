"""Class-token attention pruning (EViT-style, Liang et al. 2022), training-free, static counts.

After a chosen block's attention, the patch tokens are ranked by the attention the class token
pays them (softmax(q_cls · kᵀ · scale), averaged over heads, recomputed from the block's own
q and k: one query row, cheap); the top `keep` fraction stays. With `fuse`, the dropped tokens
are not lost but folded into one extra token, their attention-weighted average (EViT's
"inattentive token fusion"). Leading special tokens (class, distillation) always stay.
Exact when keep = 1. Standard ONNX ops only; shapes stay static.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import (Block, Emitter, find_blocks, outputs_have_tokens, prefix_tokens, redirect_uses,
                                     reinfer_shapes, with_shape)
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads


class ClassTokenPruning(ir.passes.InPlacePass):
    """Settings: keep (fraction of the patch tokens reaching a chosen layer that it keeps,
    0 < keep ≤ 1: one value, or one per chosen layer), layers (Attention site indices after which
    to prune; default EViT's: after 1/4, 1/2, 3/4 of the depth), fuse (fold the dropped tokens
    into one), protect (leading tokens; default found)."""

    SETTINGS = {"keep": "numbers", "layers": "layers", "fuse": "bool", "protect": "int"}

    def __init__(self, keep: float | list[float] | str = 0.7, layers: list[int] | None = None,
                 fuse: bool | int = True, protect: int | None = None) -> None:
        super().__init__()
        keeps = [float(v) for v in keep.split(",")] if isinstance(keep, str) else (
            [float(v) for v in keep] if isinstance(keep, (list, tuple)) else [float(keep)])
        if not keeps or not all(0 < v <= 1 for v in keeps):
            raise ValueError(f"cls-prune needs 0 < keep ≤ 1, got {keep}")
        self.keep = keeps[0] if len(keeps) == 1 else keeps
        self.layers, self.fuse, self.protect = layers, bool(fuse), protect
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        FoldAttentionHeads()(model)
        blocks, skipped = find_blocks(model)
        sites = [n for n in model.graph if n.op_type == "Attention"]
        layers = self.layers if self.layers is not None else sorted({len(sites) * f // 4 for f in (1, 2, 3)})
        keep_at = _keep_per_layer(self.keep, layers)
        pruned = []
        chosen = [b for b in blocks if b.index in layers]
        if chosen:
            p = self.protect if self.protect is not None else prefix_tokens(model, chosen[0].tokens)
            first = min(b.index for b in chosen)
            masked_later = [i for i, n in enumerate(sites) if i > first and len(n.inputs) > 3 and n.inputs[3] is not None]
            if outputs_have_tokens(model, chosen[0].tokens):
                skipped.append({"reason": "the model outputs per-token values"})
            elif masked_later:
                skipped.append({"reason": f"later attention sites {masked_later} carry masks sized to the token count"})
            else:
                tokens = chosen[0].tokens
                for block in chosen:
                    body = tokens - p
                    keep = max(1, math.ceil(body * keep_at[block.index]))
                    if keep >= body:
                        continue
                    after = _prune(model, block, tokens, p, keep, self.fuse)
                    pruned.append({"layer": block.index, "tokens_before": tokens, "kept": keep, "tokens_after": after})
                    tokens = after
        if pruned:
            reinfer_shapes(model)
        self.sites_changed = len(pruned)
        self.details = {"sites": len(sites), "pruned": pruned, "skipped": skipped, "keep": self.keep, "fuse": self.fuse}
        return ir.passes.PassResult(model, modified=bool(pruned))


def _keep_per_layer(keep: float | list[float], layers: list[int]) -> dict[int, float]:
    if not isinstance(keep, list):
        return {layer: keep for layer in layers}
    if len(keep) != len(layers):
        raise ValueError(f"cls-prune got {len(keep)} keep values for {len(layers)} layers")
    return dict(zip(layers, keep))


def _prune(model: ir.Model, block: Block, n: int, p: int, keep: int, fuse: bool) -> int:
    """Insert the pruning after `block`'s residual Add: n → p + keep (+1 fused) tokens."""
    node, x, c, h = block.attention, block.stream, block.channels, block.heads
    q, k = node.inputs[0], node.inputs[1]
    d = (q.shape[2] if q.shape is not None and isinstance(q.shape[2], int) else c) // h
    scale_attr = node.attributes.get("scale")
    scale = scale_attr.value if scale_attr is not None else 1.0 / math.sqrt(d)
    e = Emitter(model, f"{node.name or 'attn'}_clsprune")
    q_cls = e.op("Reshape", e.slice(q, 0, 1, 1), e.ints(0, h, 1, d))  # (B, H, 1, d)
    k_t = e.op("Transpose", e.op("Reshape", k, e.ints(0, 0, h, d)), perm=[0, 2, 3, 1])  # (B, H, d, n)
    scores = e.op("Mul", e.op("MatMul", q_cls, k_t), e.const(_scalar(scale, x)))
    attn = e.op("Reshape", e.op("ReduceMean", e.op("Softmax", scores, axis=-1), e.ints(1), keepdims=0), e.ints(0, -1))
    patch_attn = e.slice(attn, p, n, 1)  # (B, n − p)
    _, order = e.op_multi("TopK", patch_attn, e.ints(n - p), num_outputs=2, axis=-1, largest=1, sorted=1)
    body = e.slice(x, p, n, 1)

    kept = e.take_rows(body, e.slice(order, 0, keep, 1))
    parts = ([e.slice(x, 0, p, 1)] if p else []) + [kept]
    if fuse:
        drop = e.slice(order, keep, n - p, 1)
        w = e.op("GatherElements", patch_attn, drop, axis=1)  # (B, dropped)
        dropped = e.take_rows(body, drop)
        total = e.op("MatMul", e.op("Unsqueeze", w, e.ints(1)), dropped)  # (B, 1, c)
        weight = e.op("Unsqueeze", e.op("ReduceSum", w, e.ints(-1), keepdims=1), e.ints(-1))  # (B, 1, 1)
        parts.append(e.op("Div", total, weight))
    out = e.op("Concat", *parts, axis=1)
    after = p + keep + int(fuse)
    with_shape(out, x.shape[0] if x.shape is not None else None, after, c, x.dtype)
    new_nodes = set(e.tape.nodes)
    e.insert_after(block.residual)
    redirect_uses(x, out, new_nodes)
    return after


def _scalar(value: float, like: ir.Value) -> np.ndarray:
    return np.array(value, like.dtype.numpy())
