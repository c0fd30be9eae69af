"""pool: k×k squares of patch tokens → one token each through one constant MatMul; later sites get
the constant log(size) mask; exact when nothing is pooled."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes._linear import const
from edgeattn.passes.token_pooling import TokenPooling, pooling_matrix

from .conftest import attention_tokens as _tokens
from .conftest import canonical_tiny_deit, ort_run
from .conftest import deit_feed as _x


@pytest.fixture(scope="module")
def deit_proto():
    return ir.to_proto(canonical_tiny_deit())


def test_pooling_matrix_weights_by_size():
    # 1 prefix token + a 4×4 grid, k=2 → 1 + 4 tokens; the second pooling (2×2 → 1) weights by size
    m, sizes = pooling_matrix(np.ones(17), p=1, k=2)
    assert m.shape == (5, 17) and np.allclose(m.sum(1), 1) and list(sizes) == [1, 4, 4, 4, 4]
    assert m[0, 0] == 1 and np.allclose(m[1, [1, 2, 5, 6]], 0.25) and m[1, 3] == 0
    m2, sizes2 = pooling_matrix(np.array([1.0, 4, 4, 4, 12]), p=1, k=2)
    assert list(sizes2) == [1, 24] and np.allclose(m2[1, 1:], [4 / 24, 4 / 24, 4 / 24, 12 / 24])


def test_nothing_pooled_is_exact(deit_proto):
    model = ir.from_proto(deit_proto)
    want = ort_run(model, _x())[0]
    p = TokenPooling(layers=[0], k=1)
    assert not p(model).modified and _tokens(model) == [18, 18, 18]
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-6)


def test_counts_and_size_masks(deit_proto):
    model = ir.from_proto(deit_proto)
    p = TokenPooling(layers=[0], k=2)
    p(model)
    # 2 prefix tokens (class, distillation) + 4×4 patches → 2 + 2×2 after layer 0's attention
    assert p.sites_changed == 1 and _tokens(model) == [18, 6, 6]
    masks = [const(n.inputs[3]) for n in model.graph if n.op_type == "Attention" and len(n.inputs) > 3]
    assert len(masks) == 2 and all(m.shape == (1, 1, 6, 6) for m in masks)
    assert np.allclose(masks[0][0, 0, 0], [0, 0] + [np.log(4)] * 4)
    out = ort_run(model, _x())[0]
    assert out.shape == (2, 10) and np.isfinite(out).all()


def test_grid_that_does_not_divide_is_skipped(deit_proto):
    model = ir.from_proto(deit_proto)
    p = TokenPooling(layers=[0], k=3)
    assert not p(model).modified and "no square grid" in p.details["skipped"][-1]["reason"]


def _square_invariant(model: ir.Model) -> dict:
    """Make every 2×2 square of patch tokens identical on entry: the position embedding shared
    within each square, and an image whose 2×2 squares of 8×8 patches repeat one patch."""
    from edgeattn.passes._linear import replace_const

    for init in list(model.graph.initializers.values()):
        arr = const(init)
        if arr is not None and arr.shape[:2] == (1, 18) and arr.ndim == 3:
            pos = arr.copy()
            for cells in [[2 + (r * 2 + i) * 4 + (c * 2 + j) for i in range(2) for j in range(2)] for r in range(2) for c in range(2)]:
                pos[0, cells] = pos[0, cells[0]]
            for use in list(init.uses()):
                replace_const(model, use.node, use.idx, pos)
    tile = np.random.default_rng(3).standard_normal((1, 3, 2, 2, 8, 8)).astype(np.float32)
    img = np.repeat(np.repeat(tile, 2, axis=2), 2, axis=3)  # (1, 3, 4 rows, 4 cols, 8, 8)
    return {"pixel_values": np.ascontiguousarray(img.transpose(0, 1, 2, 4, 3, 5).reshape(1, 3, 32, 32))}


def test_embedding_pool_before_the_first_block(deit_proto):
    model = ir.from_proto(deit_proto)
    p = TokenPooling(layers=[-1], k=2)
    p(model)
    assert p.sites_changed == 1 and p.details["merged"][0]["layer"] == -1 and _tokens(model) == [6, 6, 6]
    masks = [const(n.inputs[3]) for n in model.graph if n.op_type == "Attention" and len(n.inputs) > 3]
    assert len(masks) == 3 and all(m.shape == (1, 1, 6, 6) for m in masks)
    both = ir.from_proto(deit_proto)
    TokenPooling(layers=[-1, 0], k=2)(both)
    assert _tokens(both) == [6, 3, 3]


@pytest.mark.parametrize("layers", [[0], [-1]])
def test_duplicate_tokens_make_pooling_exact(deit_proto, layers):
    """Where the tokens of every square are equal, pooling loses nothing, and with prop_attn
    (log(size) on the keys) every later attention computes what the full one did."""
    model = ir.from_proto(deit_proto)
    feed = _square_invariant(model)
    want = ort_run(model, feed)[0]
    TokenPooling(layers=layers, k=2)(model)
    np.testing.assert_allclose(ort_run(model, feed)[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    without = ir.from_proto(deit_proto)
    _square_invariant(without)
    TokenPooling(layers=layers, k=2, prop_attn=False)(without)
    assert np.abs(ort_run(without, feed)[0] - want).max() > 1e-3  # the size masks are what makes it exact
