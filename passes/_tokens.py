"""Shared graph plumbing for the token-reducing rewrites (token merging, class-token pruning).

They work on the canonical 3-D `Attention` (after `fold-attention-heads`), where no head-split
Reshape carries the token count: a block's token count can then shrink between layers and every
later op follows, with static shapes. A *block* is one Attention site plus the residual `Add`
that closes its attention branch (Attention → MatMul → Add(bias) → Add(residual)); reductions
are inserted after that Add, so the MLP and every later layer run on fewer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common  # noqa: F401 - reinfer_shapes uses it; not imported by `onnx_ir` itself
from onnx_ir import tape


@dataclass
class Block:
    index: int
    attention: ir.Node
    residual: ir.Node  # the Add closing the attention branch; its output is the residual stream
    heads: int
    tokens: int
    channels: int

    @property
    def stream(self) -> ir.Value:
        return self.residual.outputs[0]

    @property
    def key(self) -> ir.Value:
        return self.attention.inputs[1]

    @property
    def skip(self) -> ir.Value:
        """The residual stream entering the block (the Add's input that bypasses attention)."""
        return next(v for v in self.residual.inputs if v is not self.branch)

    branch: ir.Value | None = None  # the Add's input coming from the attention branch


def attr(node: ir.Node, name: str, default=None):
    """An attribute's value, or `default` where the node does not set it."""
    a = node.attributes.get(name)
    return default if a is None else a.value


def _residual_add(attention: ir.Node) -> tuple[ir.Node, ir.Value] | None:
    """Follow Attention's output through single-consumer MatMul/Add nodes to the residual Add;
    returns it and its input from the attention branch."""
    v = attention.outputs[0]
    for _ in range(4):
        users = {u.node for u in v.uses()}
        if len(users) != 1:
            return None
        node = users.pop()
        if node.op_type == "Add" and all(i is not None and i.const_value is None for i in node.inputs):
            return node, v
        if node.op_type not in ("MatMul", "Add"):
            return None
        v = node.outputs[0]
    return None


def block_reason(node: ir.Node, allowed_mask: ir.Value | None = None, head_shared_masks: bool = False) -> str | None:
    """Why a token-reducing rewrite cannot use this Attention site (None if it can);
    `allowed_mask`: a mask the rewrite knows how to carry (a verified key-padding mask);
    `head_shared_masks`: any mask that every head shares is fine (rewrites of heads, not tokens)."""
    if attr(node, "is_causal", 0):
        return "causal attention"
    if not attr(node, "q_num_heads"):
        return "not the 3-D (folded) form"
    if len(node.inputs) > 4 and any(v is not None for v in node.inputs[4:]):
        return "has a KV cache"
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    if mask is not None and mask is not allowed_mask:
        if not head_shared_masks:
            return "has a mask that is not a plain key-padding mask"
        if mask.shape is None or (len(mask.shape) == 4 and mask.shape[1] != 1):
            return "has a mask that is not shared by every head"
    q, k = node.inputs[0], node.inputs[1]
    if q.shape is None or k.shape is None or len(q.shape) != 3 or not isinstance(q.shape[1], int):
        return "needs a static token count"
    if q.shape[1] != k.shape[1]:
        return "not self-attention (query and key token counts differ)"
    return None


def find_blocks(model: ir.Model, allowed_mask: ir.Value | None = None,
                head_shared_masks: bool = False) -> tuple[list[Block], list[dict]]:
    """The usable blocks in graph order, and the sites skipped with their reason (block_reason)."""
    blocks, skipped = [], []
    sites = [n for n in model.graph if n.op_type == "Attention"]
    for index, node in enumerate(sites):
        reason = block_reason(node, allowed_mask, head_shared_masks)
        found = None if reason else _residual_add(node)
        if reason is None and found is None:
            reason = "no residual Add after the attention branch"
        if reason:
            skipped.append({"layer": index, "node": node.name or "<Attention>", "reason": reason})
            continue
        residual, branch = found
        q = node.inputs[0]
        blocks.append(Block(index, node, residual, int(attr(node, "q_num_heads")), int(q.shape[1]),
                            int(residual.outputs[0].shape[2]) if residual.outputs[0].shape else 0, branch))
    return blocks, skipped


def prefix_tokens(model: ir.Model, tokens: int) -> int:
    """Special tokens (class, distillation) placed before the patch tokens: the leading inputs of
    the embedding Concat(axis=1) that builds the `tokens`-long sequence; 0 if there is none."""
    for node in model.graph:
        if node.op_type != "Concat" or attr(node, "axis") not in (1, -2):
            continue
        out = node.outputs[0]
        if out.shape is None or len(out.shape) != 3 or out.shape[1] != tokens:
            continue
        lead = [v.shape[1] if v is not None and v.shape is not None else None for v in node.inputs[:-1]]
        if all(isinstance(d, int) for d in lead):
            return int(sum(lead))
    return 0


def outputs_have_tokens(model: ir.Model, tokens: int) -> bool:
    """True when a graph output keeps a per-token axis (then its shape would change)."""
    return any(o.shape is not None and len(o.shape) >= 2 and o.shape[1] == tokens for o in model.graph.outputs)


class Emitter:
    """A tape whose constants become graph initializers; nodes are inserted in one go."""

    def __init__(self, model: ir.Model, prefix: str) -> None:
        self.model, self.prefix, self.tape, self._n = model, prefix, tape.Tape(), 0

    def const(self, array) -> ir.Value:
        self._n += 1
        t = ir.tensor(np.asarray(array))  # shape and type set now: later passes (FLOPs, narrowing) read them
        value = ir.Value(name=f"{self.prefix}_c{self._n}", shape=ir.Shape(t.shape), type=ir.TensorType(t.dtype), const_value=t)
        self.model.graph.register_initializer(value)
        return value

    def ints(self, *values: int) -> ir.Value:
        return self.const(np.array(values, np.int64))

    def op(self, op_type: str, *inputs, **attrs) -> ir.Value:
        return self.tape.op(op_type, list(inputs), attrs or None)

    def op_multi(self, op_type: str, *inputs, num_outputs: int, **attrs) -> list[ir.Value]:
        return list(self.tape.op_multi_out(op_type, list(inputs), attrs or None, num_outputs=num_outputs))

    def take_rows(self, data: ir.Value, idx: ir.Value) -> ir.Value:
        """Rows `idx` (B, k) of `data` (B, m, c) per batch entry → (B, k, c)."""
        return self.op("GatherND", data, self.op("Unsqueeze", idx, self.ints(-1)), batch_dims=1)

    def slice(self, x: ir.Value, start: int, end: int, axis: int, step: int = 1) -> ir.Value:
        return self.op("Slice", x, self.ints(start), self.ints(end), self.ints(axis), self.ints(step))

    def insert_after(self, anchor: ir.Node) -> None:
        self.model.graph.insert_after(anchor, list(self.tape.nodes))
        self.tape = tape.Tape()

    def insert_before(self, anchor: ir.Node) -> None:
        self.model.graph.insert_before(anchor, list(self.tape.nodes))
        self.tape = tape.Tape()


def redirect_uses(old: ir.Value, new: ir.Value, keep: set[ir.Node]) -> None:
    """Point every consumer of `old` except the nodes in `keep` (the new subgraph) at `new`."""
    for use in list(old.uses()):
        if use.node not in keep:
            use.node.replace_input_with(use.idx, new)


def with_shape(value: ir.Value, batch, tokens: int, channels: int, dtype: ir.DataType) -> ir.Value:
    value.shape = ir.Shape([batch, tokens, channels])
    value.dtype = dtype
    return value


def reinfer_shapes(model: ir.Model) -> None:
    """Token counts changed: drop the stale intermediate shapes and infer them again."""
    keep = set(model.graph.inputs) | set(model.graph.outputs)
    for node in model.graph:
        for v in node.outputs:
            if v not in keep:
                v.shape = None
    ir.passes.common.ShapeInferencePass()(model)


def site_blocks(model: ir.Model, layers: list[int] | None, protect: int | None) -> tuple[list[tuple[Block, int]], list[dict]]:
    """For passes that rewrite single sites: fold to the 3-D form, then the usable blocks among
    `layers` (None = all) with their protected prefix count, and the sites skipped with why."""
    from edgeattn.passes.fold_attention_heads import FoldAttentionHeads  # noqa: PLC0415 - fold does not import this module

    FoldAttentionHeads()(model)
    blocks, skipped = find_blocks(model)
    chosen = [b for b in blocks if layers is None or b.index in layers]
    return [(b, protect if protect is not None else prefix_tokens(model, b.tokens)) for b in chosen], skipped


def attention_sites(model: ir.Model) -> int:
    """How many Attention sites the top-level graph has (site indices run 0 … n−1)."""
    return sum(1 for n in model.graph if n.op_type == "Attention")


def per_layer(value, layers: list[int] | None, sites: int, rewrite: str, setting: str) -> dict[int, int]:
    """A setting given as one int for every chosen layer, or as one value per chosen layer (a
    list, or a comma-separated string) → {layer index: value}; `layers` None = all `sites`."""
    chosen = list(range(sites)) if layers is None else list(layers)
    if isinstance(value, str):
        value = [int(x) for x in value.split(",")]
    if isinstance(value, (list, tuple)):
        if len(value) != len(chosen):
            raise ValueError(f"{rewrite} got {len(value)} {setting} values for {len(chosen)} layers")
        return {layer: int(v) for layer, v in zip(chosen, value)}
    return {layer: int(value) for layer in chosen}
