"""Key-padding masks: find the (batch, seq) input an attention mask is built from, and prove
numerically that the mask is nothing but that input broadcast over the queries (so a rewrite
may rebuild it, e.g. from token sizes, after the token count changes)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes.causal_masks import evaluate_cone


def upstream(value: ir.Value) -> tuple[set[str], list[ir.Value]]:
    """Names of every value `value` is computed from, and the graph inputs among them."""
    seen: dict[int, ir.Value] = {}
    stack = [value]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen[id(v)] = v
        node = v.producer()
        if node is not None:
            stack.extend(i for i in node.inputs if i is not None)
    values = list(seen.values())
    return {v.name for v in values}, [v for v in values if v.producer() is None and v.const_value is None]


def key_padding_input(model: ir.Model, mask: ir.Value, tokens: int) -> ir.Value | None:
    """The (B, tokens) graph input `mask` is a pure key-padding mask of, or None."""
    names, inputs = upstream(mask)
    graph_inputs = {id(v) for v in model.graph.inputs}
    rank2 = [v for v in inputs if id(v) in graph_inputs and v.shape is not None and len(v.shape) == 2
             and v.shape[1] == tokens and "mask" in v.name]
    if len(rank2) != 1:
        return None
    source = rank2[0]
    pattern = np.ones((2, tokens), np.int64)
    pattern[0, tokens // 2:] = 0
    pattern[1, 1::3] = 0
    (got,) = evaluate_cone(model, [mask.name], names | {source.name}, 2,
                           {source.name: pattern.astype(source.dtype.numpy())})
    keep = pattern.astype(bool)[:, None, None, :]
    if got.ndim != 4 or got.shape[0] != 2 or got.shape[-1] != tokens:
        return None
    if got.dtype == np.bool_:
        ok = np.all(got == keep)
    else:
        ok = np.all(np.where(keep, np.isclose(got, 0.0), got <= -1e4))
    return source if ok else None
