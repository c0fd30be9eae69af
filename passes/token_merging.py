"""Token merging (ToMe, Bolya et al., ICLR 2023), training-free, with static token counts.

After a block's attention (residual Add), `r` tokens are merged away by bipartite soft
matching: the keys averaged over heads are the similarity metric; tokens alternate into sets
A and B; each A token's most similar B token is its edge; the r strongest edges merge their
A token into the B token by a size-weighted average. Special leading tokens (class,
distillation) are protected. Each token carries its size s (how many input patches it
stands for); with `prop_attn` the later attention adds log(s) to its scores, so a merged token
weighs as much as the tokens it replaced. Merging exact duplicates is then exact.

Written in standard ONNX ops (Slice, MatMul, TopK, ArgMax, GatherND, ScatterElements with
reduction=add), so every backend runs it; r is static per layer, so every shape stays static.
The pass first folds the head split into the 3-D Attention form (exact), where no Reshape
carries the token count.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import (Block, Emitter, attention_sites, find_blocks, outputs_have_tokens, per_layer,
                                     prefix_tokens, redirect_uses, reinfer_shapes, with_shape)
from edgeattn.passes._padding import key_padding_input, upstream
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads


class TokenMerging(ir.passes.InPlacePass):
    """Settings: r (tokens merged per layer: an int, or a list with one value per chosen layer),
    layers (Attention site indices; default all), protect (leading tokens never merged; default:
    the class/distillation tokens found in the embedding), prop_attn (size-weighted attention),
    embed_r (tokens merged before the first block, matched on the embeddings themselves: saves
    the first attention too; not in the ToMe paper)."""

    SETTINGS = {"r": "ints", "layers": "layers", "protect": "int", "prop_attn": "bool", "embed_r": "int"}

    def __init__(self, r=8, layers: list[int] | None = None, protect: int | None = None,
                 prop_attn: bool | int = True, embed_r: int = 0) -> None:
        super().__init__()
        self.r, self.layers, self.protect, self.prop_attn = r, layers, protect, bool(prop_attn)
        self.embed_r = int(embed_r)
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        FoldAttentionHeads()(model)
        padding = _padding_source(model)
        blocks, skipped = find_blocks(model, allowed_mask=padding.mask if padding else None)
        sites = attention_sites(model)
        plan = per_layer(self.r, self.layers, sites, "tome", "r")
        if any(v < 0 for v in plan.values()):
            raise ValueError("tome needs r ≥ 0")
        protect = None
        state = _State(None, None, padding)
        tokens_per_layer, merged = [], []
        if len(blocks) != sites:  # a site we cannot follow would see the wrong token count
            blocks = []
        first = blocks[0] if blocks and blocks[0].index == 0 else None
        if self.embed_r and first is not None and first.skip.producer() is not None \
                and not outputs_have_tokens(model, first.tokens):
            protect = self.protect if self.protect is not None else prefix_tokens(model, first.tokens)
            r = min(int(self.embed_r), (first.tokens - protect) // 2)
            if r > 0:
                state = _merge(model, first, first.tokens, r, protect, state, embed=True)
                merged.append({"layer": "embed", "r": r, "tokens_after": state.tokens})
        for block in blocks:
            if state.sizes is not None:  # token count changed upstream: attention sees sizes
                if self.prop_attn or padding:
                    _add_size_bias(model, block, state.sizes, log_sizes=self.prop_attn)
            tokens = state.tokens or block.tokens
            tokens_per_layer.append({"layer": block.index, "tokens": tokens})
            r = plan.get(block.index, 0)
            if r == 0:
                continue
            if protect is None:
                protect = self.protect if self.protect is not None else prefix_tokens(model, block.tokens)
                if outputs_have_tokens(model, block.tokens):
                    skipped.append({"layer": block.index, "reason": "the model outputs per-token values"})
                    break
            r = min(r, (tokens - protect) // 2)
            if r <= 0:
                continue
            state = _merge(model, block, tokens, r, protect, state)
            merged.append({"layer": block.index, "r": r, "tokens_after": state.tokens})
        if merged and padding:
            padding.pool_with(model, state.sizes)
        if merged:
            reinfer_shapes(model)
        self.sites_changed = len(merged)
        self.details = {"sites": sites, "merged": merged, "tokens_in": tokens_per_layer, "skipped": skipped,
                        "protect": protect, "prop_attn": self.prop_attn,
                        "padding_mask": padding.source.name if padding else None}
        return ir.passes.PassResult(model, modified=bool(merged))


class _Padding:
    """A key-padding mask shared by every site: padded tokens get size 0, so log(size) = -inf
    masks them after a merge, merging them costs nothing, and a mean pooling that weighted
    tokens by the mask weighs them by size instead."""

    def __init__(self, mask: ir.Value, source: ir.Value) -> None:
        self.mask, self.source = mask, source

    def sizes(self, e: Emitter, dtype: ir.DataType) -> ir.Value:
        return e.op("Cast", e.op("Unsqueeze", self.source, e.ints(-1)), to=dtype)

    def pool_with(self, model: ir.Model, sizes: ir.Value) -> None:
        """Point the (B, S, 1) float copies of the padding input outside the attention mask at
        the final sizes (a mask-weighted mean pooling becomes size-weighted)."""
        in_mask, _ = upstream(self.mask)
        for v in _float_columns(self.source):
            if v.name in in_mask:
                continue
            for use in list(v.uses()):
                use.node.replace_input_with(use.idx, sizes)


def _float_columns(source: ir.Value) -> list[ir.Value]:
    """(B, S, 1) values computed from `source` by Unsqueeze/Cast chains."""
    found, stack = [], [source]
    while stack:
        v = stack.pop()
        for use in v.uses():
            node = use.node
            if node.op_type in ("Unsqueeze", "Cast"):
                out = node.outputs[0]
                if out.shape is not None and len(out.shape) == 3 and out.shape[2] == 1 and out.dtype in (
                        ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16):
                    found.append(out)
                else:
                    stack.append(out)
    return found


def _padding_source(model: ir.Model) -> _Padding | None:
    """The key-padding mask all Attention sites share, if that is what their masks are."""
    sites = [n for n in model.graph if n.op_type == "Attention"]
    masks = {id(n.inputs[3]): n.inputs[3] for n in sites if len(n.inputs) > 3 and n.inputs[3] is not None}
    if len(masks) != 1 or any(len(n.inputs) > 4 and any(v is not None for v in n.inputs[4:]) for n in sites):
        return None
    mask = next(iter(masks.values()))
    q = sites[0].inputs[0]
    if q.shape is None or not isinstance(q.shape[1], int):
        return None
    source = key_padding_input(model, mask, q.shape[1])
    return _Padding(mask, source) if source is not None else None


class _State:
    """The residual stream's token count after the last merge, its sizes (B, N, 1), and the
    padding mask the sizes start from (if any)."""

    def __init__(self, tokens: int | None, sizes: ir.Value | None, padding: _Padding | None) -> None:
        self.tokens, self.sizes, self.padding = tokens, sizes, padding


def _add_size_bias(model: ir.Model, block: Block, sizes: ir.Value, log_sizes: bool = True) -> None:
    """Attention mask input = log(size) of each key, broadcast over queries: (B, 1, N, N).
    Without log_sizes only the padding part: log(min(size, 1)) = 0 or -inf."""
    e = Emitter(model, f"{block.attention.name or 'attn'}_tome_bias")
    n = block.tokens if sizes.shape is None else sizes.shape[1]
    weight = sizes if log_sizes else e.op("Min", sizes, e.const(np.array(1, sizes.dtype.numpy())))
    row = e.op("Reshape", e.op("Log", weight), e.ints(0, 1, 1, n))  # (B, 1, 1, N)
    # ORT's CPU Attention wants the mask's query axis spelled out, not broadcast.
    bias = e.op("Expand", row, e.ints(1, 1, n, n))
    e.insert_before(block.attention)
    node = block.attention
    node.resize_inputs(4)
    node.replace_input_with(3, bias)


def _merge(model: ir.Model, block: Block, n: int, r: int, p: int, state: _State, embed: bool = False) -> _State:
    """Insert one bipartite-soft-matching merge after `block`'s residual Add (or, with `embed`,
    on the stream entering the block, matched on the token embeddings): n → n − r tokens."""
    x = block.skip if embed else block.stream
    anchor = x.producer() if embed else block.residual
    c = block.channels
    e = Emitter(model, f"{block.attention.name or 'attn'}_tome{'_embed' if embed else ''}")
    # Token features and sizes travel together: aug = [x·s, s]  (B, n, c+1).
    sizes_in = state.sizes
    if sizes_in is None and state.padding is not None:
        sizes_in = state.padding.sizes(e, x.dtype)
    if sizes_in is None:
        aug = e.op("Pad", x, e.ints(0, 0, 0, 0, 0, 1), e.const(np.array(1, x.dtype.numpy())))
    else:
        aug = e.op("Concat", e.op("Mul", x, sizes_in), sizes_in, axis=-1)
    # Similarity metric: keys averaged over heads (the embeddings themselves before a block), L2-normalised.
    k = x if embed else e.op("ReduceMean", e.op("Reshape", block.key, e.ints(0, 0, block.heads, -1)), e.ints(2), keepdims=0)
    k = e.slice(k, p, n, 1)
    m = e.op("Div", k, e.op("ReduceL2", k, e.ints(-1), keepdims=1))
    na = (n - p + 1) // 2
    a, b = e.slice(m, 0, n - p, 1, 2), e.slice(m, 1, n - p, 1, 2)
    scores = e.op("MatMul", a, e.op("Transpose", b, perm=[0, 2, 1]))  # (B, na, nb)
    best = e.op("ReduceMax", scores, e.ints(-1), keepdims=0)
    xa, xb = e.slice(aug, p, n, 1, 2), e.slice(aug, p + 1, n, 1, 2)
    if state.padding is not None:  # padded A tokens (size 0) merge first: it costs nothing
        size_a = e.op("Squeeze", e.slice(xa, c, c + 1, 2), e.ints(-1))
        pad_a = e.op("Cast", e.op("Equal", size_a, e.const(np.array(0, x.dtype.numpy()))), to=x.dtype)
        best = e.op("Add", best, e.op("Mul", pad_a, e.const(np.array(4, x.dtype.numpy()))))
    best_b = e.op("ArgMax", scores, axis=-1, keepdims=0)
    _, order = e.op_multi("TopK", best, e.ints(na), num_outputs=2, axis=-1, largest=1, sorted=1)
    src_idx = e.slice(order, 0, r, 1)
    unm_idx = e.slice(order, r, na, 1) if r < na else None
    dst_idx = e.op("GatherElements", best_b, src_idx, axis=1)

    src = e.take_rows(xa, src_idx)
    # ScatterElements wants the index as wide as the rows: Expand broadcasts (B, r, 1) → (B, r, c+1).
    dst_rows = e.op("Expand", e.op("Unsqueeze", dst_idx, e.ints(-1)), e.ints(1, 1, c + 1))
    dst = e.op("ScatterElements", xb, dst_rows, src, axis=1, reduction="add")
    # No zero-sized tensors: some backends (TVM's gather) reject them.
    unm = [e.take_rows(xa, unm_idx)] if r < na else []
    head = [e.slice(aug, 0, p, 1)] if p else []
    out = e.op("Concat", *head, *unm, dst, axis=1)  # (B, n − r, c+1)
    sizes = e.slice(out, c, c + 1, 2)
    # Padded tokens keep size 0 (their features become 0; they are masked and never pooled).
    divisor = sizes if state.padding is None else e.op("Max", sizes, e.const(np.array(1e-6, x.dtype.numpy())))
    merged = e.op("Div", e.slice(out, 0, c, 2), divisor)
    batch = x.shape[0] if x.shape is not None else None
    with_shape(merged, batch, n - r, c, x.dtype)
    with_shape(sizes, batch, n - r, 1, x.dtype)
    new_nodes = set(e.tape.nodes)
    e.insert_after(anchor)
    redirect_uses(x, merged, new_nodes)
    return _State(n - r, sizes, state.padding)
