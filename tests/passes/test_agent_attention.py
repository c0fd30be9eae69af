"""agent: two Attention ops around pooled-query agents, checked against the formula in numpy."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes.agent_attention import AgentAttention, pooling_matrix
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads

from .conftest import canonical_tiny_deit, ort_run


@pytest.fixture(scope="module")
def deit_proto():
    return ir.to_proto(canonical_tiny_deit())


def _x():
    return {"pixel_values": np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)}


def test_pooling_matrix_grid_and_sequence():
    grid = pooling_matrix(tokens=18, prefix=2, agents=6)  # 4×4 patches → 2×2 agents
    assert grid.shape == (6, 18) and np.allclose(grid.sum(1), 1.0)
    assert grid[0, 0] == 1 and grid[1, 1] == 1  # prefix tokens are their own agents
    # the first pooled agent averages the top-left 2×2 patches (grid indices 0, 1, 4, 5)
    assert np.flatnonzero(grid[2]).tolist() == [2 + i for i in (0, 1, 4, 5)]
    seq = pooling_matrix(tokens=11, prefix=1, agents=4)  # 10 tokens, not square → 1-D bins
    assert np.allclose(seq.sum(1), 1.0) and np.flatnonzero(seq[1]).tolist() == [1, 2, 3, 4]


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _agent_reference(q, k, v, heads, pool, power, shortcut):
    b, n, c = q.shape
    d = c // heads
    split = lambda t: t.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    qh, kh, vh = split(q), split(k), split(v)
    ah = split(np.einsum("an,bnc->bac", pool, q))
    s = d ** -0.5
    va = _softmax(ah @ kh.transpose(0, 1, 3, 2) * s) @ vh
    o = _softmax(qh @ ah.transpose(0, 1, 3, 2) * s ** power) @ va
    return o.transpose(0, 2, 1, 3).reshape(b, n, c) + shortcut * v


def test_matches_the_formula(deit_proto):
    model = ir.from_proto(deit_proto)
    FoldAttentionHeads()(model)
    att = find_blocks(model)[0][0].attention
    q, k, v, y = att.inputs[0], att.inputs[1], att.inputs[2], att.outputs[0]
    consumer = next(iter(y.uses())).node
    p = AgentAttention(agents=6, layers=[0])
    p(model)
    assert p.sites_changed == 1 and p.details["changed"][0]["agents"] == 6
    assert sum(1 for n in model.graph if n.op_type == "Attention") == 4  # one site became two
    model.graph.outputs.extend([q, k, v, consumer.inputs[0]])
    _, qv, kv, vv, got = ort_run(model, _x())
    want = _agent_reference(qv, kv, vv, 2, pooling_matrix(18, 2, 6), 0.3, 0.075)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_agents_covering_all_tokens_leave_the_site_alone(deit_proto):
    model = ir.from_proto(deit_proto)
    want = ort_run(model, _x())[0]
    p = AgentAttention(agents=18)
    p(model)
    assert p.sites_changed == 0 and "nothing to save" in p.details["skipped"][0]["reason"]
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-5)
