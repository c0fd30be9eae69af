"""hilo: Hi-Fi heads in windows, Lo-Fi heads on pooled K/V; checked against numpy."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes.hilo_attention import HiLoAttention

from .conftest import ort_run
from .test_window_attention import G, P, _masked_attention


def _x():
    return {"pixel_values": np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)}


@pytest.mark.parametrize("settings", [{"window": G, "alpha": 0.0}, {"window": 2, "pool": 1, "alpha": 1.0}])
def test_exact_settings(folded_deit_proto, settings):
    """A window covering the grid (all Hi-Fi), or pooling cells of one patch (all Lo-Fi)."""
    model = ir.from_proto(folded_deit_proto)
    want = ort_run(model, _x())[0]
    p = HiLoAttention(**settings)
    p(model)
    assert p.sites_changed == 3
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-5)


def _pooled_attention(q, k, v, heads, cell):
    b, n, c = q.shape
    d = c // heads

    def pool(t):
        grid = t[:, P:].reshape(b, G // cell, cell, G // cell, cell, c).mean((2, 4)).reshape(b, -1, c)
        return np.concatenate([t[:, :P], grid], axis=1)

    split = lambda t: t.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    s = split(q) @ split(pool(k)).transpose(0, 1, 3, 2) / np.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return (a @ split(pool(v))).transpose(0, 2, 1, 3).reshape(b, n, c)


def test_half_and_half_matches_numpy(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    att = find_blocks(model)[0][0].attention
    q, k, v = att.inputs[:3]
    consumer = next(iter(att.outputs[0].uses())).node
    p = HiLoAttention(window=2, pool=2, alpha=0.5, layers=[0])
    p(model)
    assert p.details["changed"][0]["lofi_keys"] == P + 4
    model.graph.outputs.extend([q, k, v, consumer.inputs[0]])
    _, qv, kv, vv, got = ort_run(model, _x())
    half = qv.shape[2] // 2  # 2 heads: head 0 Hi-Fi, head 1 Lo-Fi
    hi = _masked_attention(qv[..., :half], kv[..., :half], vv[..., :half], heads=1, window=2)
    lo = _pooled_attention(qv[..., half:], kv[..., half:], vv[..., half:], heads=1, cell=2)
    np.testing.assert_allclose(got, np.concatenate([hi, lo], axis=2), atol=1e-5)
