"""Token pooling on the patch grid (a fixed-assignment ToMe: Bolya et al. 2023 compare merging with
pooling; PiT and Marin et al.'s Token Pooling reduce tokens the same way), training-free.

After a chosen block's attention (where ToMe merges), each k×k square of patch tokens becomes one
token, their size-weighted average; the class/distillation tokens stay. The assignment depends
only on positions, so the whole reduction is one MatMul with a constant (tokens_after × tokens)
matrix, and with `prop_attn` each later attention adds the constant log(size) of every key to its
scores (ToMe's proportional attention) through its mask input. On small models where ToMe's ~30
ops a site cost more than they save, this is the cheap form. Layer −1 pools the embeddings, before
the first block (as ToMe's `embed_r`). Exact when no layer is chosen; with k = 1 the matrix is the
identity.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import (Emitter, find_blocks, outputs_have_tokens, prefix_tokens, redirect_uses,
                                     reinfer_shapes, with_shape)
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads


def _squares(g: int, k: int, p: int) -> list[list[int]]:
    """Token indices of each k×k square of a g×g patch grid after p prefix tokens, row-major."""
    h = g // k
    return [[p + (r * k + i) * g + (c * k + j) for i in range(k) for j in range(k)] for r in range(h) for c in range(h)]


def pooling_matrix(sizes: np.ndarray, p: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, new sizes): M maps p prefix tokens + a g×g patch grid to p + (g/k)² tokens, each the
    size-weighted mean of a k×k square (rows sum to 1)."""
    squares = _squares(math.isqrt(len(sizes) - p), k, p)
    m = np.zeros((p + len(squares), len(sizes)))
    m[np.arange(p), np.arange(p)] = 1.0
    for row, cells in enumerate(squares, start=p):
        m[row, cells] = sizes[cells] / sizes[cells].sum()
    return m, np.concatenate([sizes[:p], [sizes[cells].sum() for cells in squares]])


class TokenPooling(ir.passes.InPlacePass):
    """Settings: layers (Attention site indices after which to pool, −1 = on the embeddings before
    the first block; default [0]), k (square
    side, 2), prop_attn (size-weighted attention afterwards), protect (leading tokens; default found)."""

    SETTINGS = {"layers": "layers+embed", "k": "int", "prop_attn": "bool", "protect": "int"}

    def __init__(self, layers: list[int] | None = None, k: int = 2, prop_attn: bool | int = True,
                 protect: int | None = None) -> None:
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"pool needs k ≥ 1, got {k}")
        self.layers = [0] if layers is None else [int(v) for v in layers]
        self.k, self.prop_attn, self.protect = int(k), bool(prop_attn), protect
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        FoldAttentionHeads()(model)
        blocks, skipped = find_blocks(model)
        sites = [n for n in model.graph if n.op_type == "Attention"]
        # (layer, block): a pool after `block`'s attention, or (−1, first block) before it
        chosen = ([(-1, blocks[0])] if -1 in self.layers and blocks and blocks[0].index == 0 else []) + [
            (b.index, b) for b in blocks if b.index in self.layers]
        pooled = []
        if chosen and self.k > 1:
            why = self._blocker(model, chosen, sites)
            if why:
                skipped.append({"reason": why})
            else:
                p = self.protect if self.protect is not None else prefix_tokens(model, chosen[0][1].tokens)
                sizes, after = np.ones(chosen[0][1].tokens), {}
                for layer, block in chosen:
                    g = math.isqrt(len(sizes) - p)
                    if g * g != len(sizes) - p or g % self.k:
                        skipped.append({"layer": layer, "reason": f"{len(sizes) - p} patch tokens are no "
                                        f"square grid divisible by k={self.k}"})
                        continue
                    m, sizes = pooling_matrix(sizes, p, self.k)
                    _pool(model, block, m, before=layer < 0)
                    pooled.append({"layer": layer, "tokens_before": m.shape[1], "tokens_after": m.shape[0]})
                    after[layer] = sizes
                if pooled and self.prop_attn:
                    self._size_bias(model, sites, after)
        if pooled:
            reinfer_shapes(model)
        self.sites_changed = len(pooled)
        self.details = {"sites": len(sites), "merged": pooled, "skipped": skipped, "k": self.k, "prop_attn": self.prop_attn}
        return ir.passes.PassResult(model, modified=bool(pooled))

    @staticmethod
    def _blocker(model: ir.Model, chosen, sites) -> str | None:
        first = min(layer for layer, _ in chosen)
        masked = [i for i, n in enumerate(sites) if i > first and len(n.inputs) > 3 and n.inputs[3] is not None]
        if outputs_have_tokens(model, chosen[0][1].tokens):
            return "the model outputs per-token values"
        if masked:
            return f"later attention sites {masked} carry masks sized to the token count"
        return None

    @staticmethod
    def _size_bias(model: ir.Model, sites: list[ir.Node], after: dict[int, np.ndarray]) -> None:
        """log(size) of each key on the scores of every site after the first pool: a constant
        (1, 1, N, N) mask (the sizes depend on positions only). `after`: layer → sizes after its pool."""
        sizes = None
        for i, node in enumerate(sites):
            sizes = after.get(i - 1, sizes)
            if sizes is None:
                continue
            n = len(sizes)
            dtype = node.inputs[0].dtype.numpy() if node.inputs[0].dtype is not None else np.float32
            bias = np.broadcast_to(np.log(sizes)[None, None, None, :], (1, 1, n, n)).astype(dtype)
            node.resize_inputs(4)
            node.replace_input_with(3, Emitter(model, f"{node.name or 'attn'}_pool_bias").const(np.ascontiguousarray(bias)))


def _pool(model: ir.Model, block, m: np.ndarray, before: bool = False) -> None:
    """stream (B, N, C) → M @ stream (B, N', C), right after the block's attention residual Add
    (`before`: on the stream entering the block instead)."""
    x = block.skip if before else block.stream
    e = Emitter(model, f"{block.attention.name or 'attn'}_{'embed_' if before else ''}pool")
    out = e.op("MatMul", e.const(m.astype(x.dtype.numpy())), x)
    with_shape(out, x.shape[0] if x.shape is not None else None, m.shape[0], block.channels, x.dtype)
    new_nodes = set(e.tape.nodes)
    e.insert_after(x.producer() if before else block.residual)
    redirect_uses(x, out, new_nodes)
