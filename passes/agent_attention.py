"""Agent attention (Han et al., ECCV 2024), training-free form, as two ONNX Attention ops.

n agent tokens A are average-pooled queries (the class/distillation tokens' queries stay agents
of their own; patch queries are pooled on their 2-D grid when it is square, else along the
sequence). Then
    V_A = softmax(A·Kᵀ·s)·V            (agents gather from all tokens: Attention(A, K, V))
    O   = softmax(Q·Aᵀ·s')·V_A + c·V   (queries read the agents:      Attention(Q, A, V_A))
with s = d^-1/2 (the site's own scale), s' = s^power (AgentSD's training-free temperature,
power 0.3) and c the small V shortcut (AgentSD: 0.075). Cost per site: 4·N·n·H·d instead of
4·N²·H·d. Every target runs it (standard ops; the pooling is one constant MatMul).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import Emitter, attention_sites, per_layer, site_blocks


def _bins(n: int, k: int) -> list[tuple[int, int]]:
    """Adaptive average pooling bins (torch's rule): [floor(i·n/k), ceil((i+1)·n/k))."""
    return [(i * n // k, -(-(i + 1) * n // k)) for i in range(k)]


def pooling_matrix(tokens: int, prefix: int, agents: int) -> np.ndarray:
    """(n_agents, tokens): prefix tokens stay their own agents; the patch tokens are pooled into
    the rest, on a square grid when both counts are squares, else along the sequence."""
    body, want = tokens - prefix, agents - prefix
    rows = [np.eye(tokens)[i] for i in range(prefix)]
    g, a = math.isqrt(body), math.isqrt(want)
    if g * g == body and a * a == want and a <= g:
        for y0, y1 in _bins(g, a):
            for x0, x1 in _bins(g, a):
                cell = np.zeros((g, g))
                cell[y0:y1, x0:x1] = 1.0 / ((y1 - y0) * (x1 - x0))
                rows.append(np.concatenate([np.zeros(prefix), cell.ravel()]))
    else:
        for s0, s1 in _bins(body, want):
            row = np.zeros(tokens)
            row[prefix + s0:prefix + s1] = 1.0 / (s1 - s0)
            rows.append(row)
    return np.stack(rows)


class AgentAttention(ir.passes.InPlacePass):
    """Settings: agents (total agent tokens incl. the prefix ones, an int or one per chosen layer;
    default 49 + prefix), layers
    (Attention site indices; default all), power (s' = s^power; default 0.3), shortcut (c;
    default 0.075), protect (prefix tokens; default found)."""

    SETTINGS = {"agents": "ints", "layers": "layers", "power": "number", "shortcut": "number", "protect": "int"}

    def __init__(self, agents: int | None = None, layers: list[int] | None = None, power: float = 0.3,
                 shortcut: float = 0.075, protect: int | None = None) -> None:
        super().__init__()
        self.agents, self.layers, self.power, self.shortcut, self.protect = agents, layers, float(power), float(shortcut), protect
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        counts = ({} if self.agents is None
                  else per_layer(self.agents, self.layers, attention_sites(model), "agent", "agents"))
        sites, skipped = site_blocks(model, self.layers, self.protect)
        changed = []
        for block, p in sites:
            n = block.tokens
            agents = counts.get(block.index, p + 49)
            if not p < agents < n:
                skipped.append({"layer": block.index, "reason": f"{agents} agents for {n} tokens: nothing to save"})
                continue
            _rewrite(model, block, pooling_matrix(n, p, agents), self.power, self.shortcut)
            changed.append({"layer": block.index, "tokens": n, "agents": agents})
        if changed:  # shapes of the new values (FLOP counts and later passes read them)
            ir.passes.common.ShapeInferencePass()(model)
        self.sites_changed = len(changed)
        self.details = {"changed": changed, "skipped": skipped, "power": self.power, "shortcut": self.shortcut}
        return ir.passes.PassResult(model, modified=bool(changed))


def _rewrite(model: ir.Model, block, pool: np.ndarray, power: float, shortcut: float) -> None:
    node = block.attention
    q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
    d = q.shape[2] // block.heads
    scale_attr = node.attributes.get("scale")
    s = scale_attr.value if scale_attr is not None else 1.0 / math.sqrt(d)
    e = Emitter(model, f"{node.name or 'attn'}_agent")
    dtype = q.dtype.numpy()
    heads = {"q_num_heads": block.heads, "kv_num_heads": block.heads}
    agents = e.op("MatMul", e.const(pool.astype(dtype)), q)  # (B, n, H·d)
    v_agents = e.op("Attention", agents, k, v, scale=float(s), **heads)
    out = e.op("Attention", q, agents, v_agents, scale=float(s ** power), **heads)
    if shortcut:
        out = e.op("Add", out, e.op("Mul", v, e.const(np.array(shortcut, dtype))))
    e.insert_before(node)
    node.outputs[0].replace_all_uses_with(out)
    out.shape, out.dtype = node.outputs[0].shape, node.outputs[0].dtype
    model.graph.remove(node, safe=True)
