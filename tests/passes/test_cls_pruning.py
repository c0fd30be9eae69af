"""cls-prune: keep the patch tokens the class token attends to most; optional fused token."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes.cls_pruning import ClassTokenPruning
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads

from .conftest import attention_tokens as _tokens
from .conftest import canonical_tiny_deit, ort_run
from .conftest import deit_feed as _x


@pytest.fixture(scope="module")
def deit_proto():
    return ir.to_proto(canonical_tiny_deit())


def test_keep_all_is_exact(deit_proto):
    model = ir.from_proto(deit_proto)
    want = ort_run(model, _x())[0]
    p = ClassTokenPruning(keep=1.0, layers=[0, 1])
    p(model)
    assert p.sites_changed == 0 and _tokens(model) == [18, 18, 18]
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-5)


@pytest.mark.parametrize("fuse", [True, False])
def test_counts(deit_proto, fuse):
    model = ir.from_proto(deit_proto)
    p = ClassTokenPruning(keep=0.5, layers=[0, 1], fuse=fuse)
    p(model)
    # 16 patches → 8 kept (+1 fused) after layer 0; then 8 (+1) → 4 or 5 (+1) after layer 1
    first = 2 + 8 + fuse
    second = 2 + int(np.ceil((first - 2) * 0.5)) + fuse
    assert _tokens(model) == [18, first, second]
    out = ort_run(model, _x())[0]
    assert out.shape == (2, 10) and np.isfinite(out).all()


def _reference(x, q, k, heads, keep, p):
    """The top-`keep` patches by mean-over-heads class attention, then the fused remainder."""
    b, n, c = x.shape
    d = c // heads
    qh = q[:, 0].reshape(b, heads, d)
    kh = k.reshape(b, n, heads, d)
    s = np.einsum("bhd,bnhd->bhn", qh, kh) / np.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = (a / a.sum(-1, keepdims=True)).mean(1)[:, p:]
    out = []
    for i in range(b):
        order = np.argsort(-a[i], kind="stable")
        kept, drop = order[:keep], order[keep:]
        w = a[i, drop]
        fused = (w[:, None] * x[i, p:][drop]).sum(0) / w.sum()
        out.append(np.concatenate([x[i, :p], x[i, p:][kept], fused[None]]))
    return np.stack(out)


def test_selection_matches_a_numpy_reference(deit_proto):
    model = ir.from_proto(deit_proto)
    FoldAttentionHeads()(model)
    block = find_blocks(model)[0][0]
    att = block.attention
    ln = next(u.node for u in block.stream.uses() if u.node.op_type == "LayerNormalization")
    ClassTokenPruning(keep=0.5, layers=[0])(model)
    model.graph.outputs.extend([block.stream, att.inputs[0], att.inputs[1], ln.inputs[0]])
    _, x, q, k, got = ort_run(model, _x())
    np.testing.assert_allclose(got, _reference(x, q, k, heads=2, keep=8, p=2), atol=1e-5)


def test_keep_per_layer(deit_proto):
    model = ir.from_proto(deit_proto)
    p = ClassTokenPruning(keep="0.5,0.25", layers=[0, 1])
    p(model)
    # 16 patches → 8 (+1 fused) after layer 0; 9 → ceil(9/4) = 3 (+1) after layer 1
    assert _tokens(model) == [18, 11, 6] and [s["kept"] for s in p.details["pruned"]] == [8, 3]
    with pytest.raises(ValueError, match="2 keep values for 1 layers"):
        ClassTokenPruning(keep=[0.5, 0.25], layers=[0])(ir.from_proto(deit_proto))
