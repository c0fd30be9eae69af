"""fold-attention-heads: head split/merge folded into a 3-D Attention, exact; negatives kept 4-D."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeattn.passes.canonicalize_attention import CanonicalizeAttention
from edgeattn.passes.cleanup import Cleanup
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads

from ..tiny_models import H, S, tiny_attention_onnx
from .conftest import op_counts, ort_run


def _canonical(tmp_path, mask: bool) -> tuple[ir.Model, ir.Model]:
    path = tiny_attention_onnx(tmp_path / "t.onnx", mask=mask)
    original = ir.load(path)
    model = ir.load(path)
    Cleanup()(model)  # shape inference first: the canonicalization checks shapes
    CanonicalizeAttention()(model)
    Cleanup()(model)
    return original, model


def _feeds(mask: bool):
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, S, 8)).astype(np.float32)}
    if mask:
        m = np.ones((2, 1, 1, S), bool)
        m[1, ..., -2:] = False
        feeds["mask"] = m
    return feeds


@pytest.mark.parametrize("mask", [False, True])
def test_fold_is_exact_and_removes_layout_ops(tmp_path, mask):
    original, model = _canonical(tmp_path, mask)
    before = op_counts(model)
    p = FoldAttentionHeads()
    assert p(model).modified and p.sites_changed == 1
    Cleanup()(model)
    after = op_counts(model)
    att = next(n for n in model.graph if n.op_type == "Attention")
    assert att.attributes["q_num_heads"].value == H and att.attributes["kv_num_heads"].value == H
    assert all(len(v.shape) == 3 for v in att.inputs[:3])
    assert after.get("Transpose", 0) == before["Transpose"] - 4
    assert after.get("Reshape", 0) == before["Reshape"] - 4
    feeds = _feeds(mask)
    np.testing.assert_allclose(ort_run(model, feeds)[0], ort_run(original, feeds)[0], atol=1e-5, rtol=1e-5)


def test_layout_op_with_another_consumer_is_kept(tmp_path):
    """The transposed query is also a graph output: folding would drop it."""
    _, model = _canonical(tmp_path, False)
    att = next(n for n in model.graph if n.op_type == "Attention")
    model.graph.outputs.append(att.inputs[0])
    p = FoldAttentionHeads()
    p(model)
    assert p.sites_changed == 0 and p.details["kept_4d"]
    assert "other uses" in p.details["kept_4d"][0]["reason"]


def test_softcap_attention_is_kept(tmp_path):
    _, model = _canonical(tmp_path, False)
    att = next(n for n in model.graph if n.op_type == "Attention")
    att.attributes["softcap"] = ir.AttrFloat32("softcap", 30.0)
    p = FoldAttentionHeads()
    p(model)
    assert p.sites_changed == 0 and "softcap" in p.details["kept_4d"][0]["reason"]
    onnx.checker.check_model(ir.to_proto(model))
