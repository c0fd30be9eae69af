"""window: blocked window attention on the patch grid equals masked full attention."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes.window_attention import WindowAttention

from .conftest import ort_run

P, G = 2, 4  # tiny DeiT: class + distillation tokens, 4×4 patches


def _x():
    return {"pixel_values": np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)}


def _masked_attention(q, k, v, heads, window):
    """Full attention where patch (y, x) sees the prefix tokens and its own window only."""
    b, n, c = q.shape
    d = c // heads
    cell = [-1] * P + [(t // G) // window * G + (t % G) // window for t in range(G * G)]
    allowed = np.ones((n, n), bool)
    for i in range(P, n):
        allowed[i] = [j < P or cell[j] == cell[i] for j in range(n)]
    split = lambda t: t.reshape(b, n, heads, d).transpose(0, 2, 1, 3)
    s = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(d)
    s = np.where(allowed, s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return (a @ split(v)).transpose(0, 2, 1, 3).reshape(b, n, c)


def test_window_covering_the_grid_is_exact(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    want = ort_run(model, _x())[0]
    p = WindowAttention(window=G)
    p(model)
    assert p.sites_changed == 3
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-5)


def test_small_windows_match_masked_attention(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    att = find_blocks(model)[0][0].attention
    q, k, v = att.inputs[:3]
    consumer = next(iter(att.outputs[0].uses())).node
    p = WindowAttention(window=2, layers=[0])
    p(model)
    assert p.details["changed"][0]["keys_per_patch_query"] == P + 4
    model.graph.outputs.extend([q, k, v, consumer.inputs[0]])
    _, qv, kv, vv, got = ort_run(model, _x())
    np.testing.assert_allclose(got, _masked_attention(qv, kv, vv, heads=2, window=2), atol=1e-5)


def test_window_must_divide_the_grid(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    p = WindowAttention(window=3)
    p(model)
    assert p.sites_changed == 0 and "does not divide" in p.details["skipped"][0]["reason"]
