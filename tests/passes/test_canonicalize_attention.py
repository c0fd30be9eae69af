"""canonicalize-attention on tiny graphs: fusion counts, resulting op, numerics vs ORT (opts off), negatives."""

from __future__ import annotations


import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn.passes.canonicalize_attention import CanonicalizeAttention
from edgeattn.passes.cleanup import Cleanup

from .conftest import export, op_counts, ort_run, tiny_gpt2

B, H, S, D = 1, 2, 6, 4


def _graph(nodes, inputs, outputs, inits=(), opset=18) -> ir.Model:
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return ir.from_proto(m)


def _qkv_inputs(k_layout="BHSd"):
    kshape = [B, H, S, D] if k_layout == "BHSd" else [B, S, H, D]
    return [helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, H, S, D]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, kshape),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [B, H, S, D])]


def _scalar(name, value):
    return numpy_helper.from_array(np.array(value, np.float32), name)


def _feeds(rng, k_layout="BHSd", extra=None):
    k = rng.standard_normal((B, H, S, D) if k_layout == "BHSd" else (B, S, H, D)).astype(np.float32)
    feeds = {"q": rng.standard_normal((B, H, S, D)).astype(np.float32), "k": k,
             "v": rng.standard_normal((B, H, S, D)).astype(np.float32)}
    feeds.update(extra or {})
    return feeds


def _canonicalize_and_check(model: ir.Model, feeds: dict, expect: int, atol=1e-5):
    before = ort_run(model, feeds)
    reference = ir.from_proto(ir.to_proto(model))
    p = CanonicalizeAttention()
    result = p(model)
    Cleanup()(model)
    assert p.sites_changed == expect
    assert result.modified == (expect > 0)
    after = ort_run(model, feeds)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)
    np.testing.assert_allclose(ort_run(reference, feeds)[0], after[0], atol=atol)
    return p, model


def _sdpa_nodes(scores_nodes, probs_src="s"):
    return scores_nodes + [helper.make_node("Softmax", [probs_src], ["p"], axis=-1),
                           helper.make_node("MatMul", ["p", "v"], ["y"])]


Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, H, S, D])


def test_transpose_mul_scales(rng):
    nodes = _sdpa_nodes([
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("Mul", ["q", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["kts"]),
        helper.make_node("MatMul", ["qs", "kts"], ["s"])])
    m = _graph(nodes, _qkv_inputs(), [Y], [_scalar("c", D ** -0.25)])
    p, m = _canonicalize_and_check(m, _feeds(rng), expect=1)
    assert op_counts(m).get("Attention") == 1 and "Softmax" not in op_counts(m)
    att = next(n for n in m.graph if n.op_type == "Attention")
    assert att.attributes["scale"].value == pytest.approx(D ** -0.5, rel=1e-6)
    assert p.report.sites == 1 and p.report.unmatched == []


def test_div_scale_with_float_bias(rng):
    """Legacy/HF eager spelling: (q·kᵀ)/√d + additive bias (e.g. a relative-position bias)."""
    nodes = _sdpa_nodes([
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Div", ["s0", "c"], ["s1"]),
        helper.make_node("Add", ["s1", "bias"], ["s"])])
    bias = numpy_helper.from_array(rng.standard_normal((1, H, S, S)).astype(np.float32), "bias")
    m = _graph(nodes, _qkv_inputs(), [Y], [_scalar("c", D ** 0.5), bias])
    _, m = _canonicalize_and_check(m, _feeds(rng), expect=1)
    att = next(n for n in m.graph if n.op_type == "Attention")
    assert len(att.inputs) == 4 and att.inputs[3].dtype == ir.DataType.FLOAT


def test_bool_padding_mask_through_where(rng):
    """SDPA's decomposition: Where(mask, 0, -inf) added to scores, NaN guard after Softmax."""
    inputs = _qkv_inputs() + [helper.make_tensor_value_info("mask", TensorProto.BOOL, [B, 1, 1, S])]
    nodes = [helper.make_node("Where", ["mask", "zero", "ninf"], ["addmask"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "c"], ["s1"]),
             helper.make_node("Add", ["s1", "addmask"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p0"], axis=-1), helper.make_node("IsNaN", ["p0"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p0"], ["p"]), helper.make_node("MatMul", ["p", "v"], ["y"])]
    inits = [_scalar("c", D ** -0.5), _scalar("zero", 0.0), _scalar("ninf", -np.inf)]
    m = _graph(nodes, inputs, [Y], inits)
    mask = np.ones((B, 1, 1, S), bool)
    mask[..., -2:] = False
    _, m = _canonicalize_and_check(m, _feeds(rng, extra={"mask": mask}), expect=1)
    att = next(n for n in m.graph if n.op_type == "Attention")
    mask_in = att.inputs[3]
    assert mask_in.dtype == ir.DataType.BOOL
    # broadcast (B,1,1,S) → (B,1,S,S) for ORT's kernel, straight from the bool graph input
    assert mask_in.producer().op_type == "Expand" and mask_in.producer().inputs[0].name == "mask"
    assert "IsNaN" not in op_counts(m)


def test_constant_causal_mask_becomes_is_causal(rng):
    causal = np.where(np.tril(np.ones((S, S), bool)), 0.0, -np.inf).astype(np.float32)[None, None]
    nodes = _sdpa_nodes([
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "c"], ["s1"]),
        helper.make_node("Add", ["s1", "causal"], ["s"])])
    m = _graph(nodes, _qkv_inputs(), [Y], [_scalar("c", D ** -0.5), numpy_helper.from_array(causal, "causal")])
    _, m = _canonicalize_and_check(m, _feeds(rng), expect=1)
    att = next(n for n in m.graph if n.op_type == "Attention")
    assert att.attributes["is_causal"].value == 1 and len(att.inputs) == 3


def test_bshd_key_and_3d_round_trip(rng):
    """Key transposed together with the head split (BSHd→BHdS), as the legacy exporter writes it."""
    nodes = _sdpa_nodes([helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
                         helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "c"], ["s"])])
    m = _graph(nodes, _qkv_inputs("BSHd"), [Y], [_scalar("c", D ** -0.5)])
    _canonicalize_and_check(m, _feeds(rng, "BSHd"), expect=1)


def test_second_consumer_is_not_fused(rng):
    """The attention probabilities are also a graph output: fusing would lose them."""
    nodes = _sdpa_nodes([helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
                         helper.make_node("MatMul", ["q", "kt"], ["s"])])
    probs = helper.make_tensor_value_info("p", TensorProto.FLOAT, [B, H, S, S])
    m = _graph(nodes, _qkv_inputs(), [Y, probs])
    p, m = _canonicalize_and_check(m, _feeds(rng), expect=0)
    assert "Attention" not in op_counts(m) and op_counts(m)["Softmax"] == 1
    assert p.report.sites == 1 and len(p.report.unmatched) == 1
    assert "other uses" in p.report.unmatched[0]["reason"]


def test_non_constant_scale_is_reported(rng):
    inputs = _qkv_inputs() + [helper.make_tensor_value_info("c", TensorProto.FLOAT, [])]
    nodes = _sdpa_nodes([helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
                         helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "c"], ["s"])])
    m = _graph(nodes, inputs, [Y])
    p, _ = _canonicalize_and_check(m, _feeds(rng, extra={"c": np.array(0.5, np.float32)}), expect=0)
    assert "scale is not a constant" in p.report.unmatched[0]["reason"]


def test_softmax_on_wrong_axis_is_left_alone(rng):
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=2),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    m = _graph(nodes, _qkv_inputs(), [Y])
    p, _ = _canonicalize_and_check(m, _feeds(rng), expect=0)
    assert p.report.unmatched


def test_existing_attention_is_counted_not_rewritten(rng):
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"])]
    m = _graph(nodes, _qkv_inputs(), [Y], opset=23)
    p, _ = _canonicalize_and_check(m, _feeds(rng), expect=0)
    assert p.report.sites == 1 and p.report.already_canonical == 1


# --- real exporters on tiny transformer blocks ---------------------------------------------------

def _tiny_bert(attn: str):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     vocab_size=100, attn_implementation=attn)
    bert = BertModel(cfg).eval()

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):
            return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state

    return Hidden().eval()


def _bert_feeds():
    ids = np.arange(1, 9, dtype=np.int64)[None] % 100
    mask = np.ones((1, 8), np.int64)
    mask[0, -3:] = 0  # padding
    return {"ids": ids, "mask": mask}


@pytest.mark.parametrize("attn,dynamo,opset", [("sdpa", True, 18), ("sdpa", True, 20), ("eager", True, 20),
                                                ("eager", False, 17), ("sdpa", False, 17)])
def test_hf_bert_with_padding_mask(attn, dynamo, opset):
    import torch

    feeds = _bert_feeds()
    m = export(_tiny_bert(attn), tuple(torch.from_numpy(v) for v in feeds.values()), dynamo=dynamo, opset=opset,
               input_names=list(feeds))
    Cleanup()(m)
    _canonicalize_and_check(m, feeds, expect=2, atol=1e-4)


def test_gpt2_causal_mask_becomes_is_causal():
    import torch

    feeds = {"ids": (np.arange(10, dtype=np.int64)[None] * 7) % 100}
    m = export(tiny_gpt2(), (torch.from_numpy(feeds["ids"]),), dynamo=True, opset=20, input_names=["ids"])
    Cleanup()(m)
    _, m = _canonicalize_and_check(m, feeds, expect=2, atol=1e-4)
    atts = [n for n in m.graph if n.op_type == "Attention"]
    assert all(n.attributes["is_causal"].value == 1 for n in atts)


def test_relative_position_bias_block():
    """A block with a learned additive (H, S, S) relative-position bias, as in Swin/T5-style attention."""
    import torch

    class RelPos(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.qkv = torch.nn.Linear(16, 48)
            self.bias = torch.nn.Parameter(torch.randn(4, 9, 9))

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(1, 9, 3, 4, 4).permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-2, -1)) * 0.5 + self.bias
            return (a.softmax(-1) @ v).transpose(1, 2).reshape(1, 9, 16)

    x = np.random.default_rng(1).standard_normal((1, 9, 16)).astype(np.float32)
    for dynamo, opset in ((True, 20), (False, 17)):
        m = export(RelPos().eval(), (torch.from_numpy(x),), dynamo=dynamo, opset=opset, input_names=["x"])
        Cleanup()(m)
        _, m = _canonicalize_and_check(m, {"x": x}, expect=1)
        att = next(n for n in m.graph if n.op_type == "Attention")
        assert len(att.inputs) == 4  # the bias is carried as the additive mask


def test_constant_mask_behind_expand_is_dropped(rng):
    """With a symbolic batch, exporters Expand a constant all-true mask at run time: drop it."""
    inputs = _qkv_inputs() + [helper.make_tensor_value_info("shape", TensorProto.INT64, [4])]
    nodes = [helper.make_node("Expand", ["keep", "shape"], ["keep_b"]),
             helper.make_node("Where", ["keep_b", "zero", "ninf"], ["addmask"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Add", ["s0", "addmask"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    keep = numpy_helper.from_array(np.ones((1, 1, S, S), bool), "keep")
    m = _graph(nodes, inputs, [Y], [keep, _scalar("zero", 0.0), _scalar("ninf", -np.inf)])
    _, m = _canonicalize_and_check(m, _feeds(rng, extra={"shape": np.array([B, 1, S, S], np.int64)}), expect=1)
    att = next(n for n in m.graph if n.op_type == "Attention")
    assert len(att.inputs) == 3 and att.attributes["is_causal"].value == 0
