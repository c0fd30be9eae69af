"""window: blocked, strided and sliding window attention on the patch grid equal masked full
attention with the neighborhood-attention rule written out here."""

from __future__ import annotations

import numpy as np
import pytest
import onnx_ir as ir

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes.window_attention import WindowAttention

from .conftest import ort_run

P, G = 2, 4  # tiny DeiT: class + distillation tokens, 4×4 patches


def _x():
    return {"pixel_values": np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)}


def _span(pos, window, stride):
    """Key rows (or columns) a query at `pos` sees: its stride tile's window, centred, kept inside."""
    start = min(max(pos // stride * stride - (window - stride) // 2, 0), G - window)
    return range(start, start + window)


def _masked_attention(q, k, v, heads, window, stride=None):
    """Full attention where patch (y, x) sees the prefix tokens and its tile's window only."""
    b, n, c = q.shape
    d = c // heads
    stride = stride or window
    allowed = np.ones((n, n), bool)
    for i in range(P, n):
        y, x = divmod(i - P, G)
        rows, cols = _span(y, window, stride), _span(x, window, stride)
        allowed[i] = [j < P or ((j - P) // G in rows and (j - P) % G in cols) for j in range(n)]
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


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 1), (3, 2), (2, 1)])
def test_small_windows_match_masked_attention(folded_deit_proto, window, stride):
    model = ir.from_proto(folded_deit_proto)
    att = find_blocks(model)[0][0].attention
    q, k, v = att.inputs[:3]
    consumer = next(iter(att.outputs[0].uses())).node
    gathers = lambda: sum(n.op_type == "Gather" for n in model.graph)
    before = gathers()
    p = WindowAttention(window=window, stride=stride, layers=[0])
    p(model)
    assert p.details["changed"][0]["keys_per_patch_query"] == P + window * window
    assert (gathers() > before) == (stride < window)  # blocked windows are cut without a gather
    model.graph.outputs.extend([q, k, v, consumer.inputs[0]])
    _, qv, kv, vv, got = ort_run(model, _x())
    np.testing.assert_allclose(got, _masked_attention(qv, kv, vv, heads=2, window=window, stride=stride), atol=1e-5)


def test_sliding_window_covering_the_grid_is_exact(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    want = ort_run(model, _x())[0]
    p = WindowAttention(window=G, stride=1)
    p(model)
    assert p.sites_changed == 3
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-5)


def test_window_must_divide_the_grid(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    p = WindowAttention(window=3)
    p(model)
    assert p.sites_changed == 0 and "window 3 does not divide" in p.details["skipped"][0]["reason"]
    p = WindowAttention(window=4, stride=3)
    p(ir.from_proto(folded_deit_proto))
    assert p.sites_changed == 0 and "stride 3 does not divide" in p.details["skipped"][0]["reason"]


def test_stride_must_fit_the_window(folded_deit_proto):
    with pytest.raises(ValueError, match="stride=3 at layer 0"):
        WindowAttention(window=2, stride=3)(ir.from_proto(folded_deit_proto))


def test_window_per_layer(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    p = WindowAttention(window=[4, 2], layers=[0, 2])
    p(model)
    assert [(c["layer"], c["window"], c["stride"]) for c in p.details["changed"]] == [(0, 4, 4), (2, 2, 2)]


def test_flop_count_sees_the_windows(folded_deit_proto):
    """The windowed Attention's batch is a -1 folded over the windows: the count still follows
    the keys each query scores (here w² + P of P + G² at every site)."""
    from edgeattn.compiler.flops import graph_flops, node_flops  # noqa: PLC0415

    exact = ir.from_proto(folded_deit_proto)
    attention = lambda m: sum(node_flops(n, {"batch": 1}) or 0 for n in m.graph if n.op_type == "Attention")
    counted = {}
    for window in (G, 2):
        model = ir.from_proto(folded_deit_proto)
        WindowAttention(window=window)(model)
        counted[window] = attention(model)
        assert graph_flops(model) - counted[window] == graph_flops(exact) - attention(exact)
    n, c = P + G * G, 2 * 16  # tokens; 2 heads × 16 channels per head (hidden 32)
    per_site = lambda keys_patch, keys_prefix: 2 * (G * G * keys_patch + P * keys_prefix) * 2 * c
    assert attention(exact) == 3 * per_site(n, n) == counted[G]
    assert counted[2] == 3 * per_site(P + 4, n)
