"""decompose-attention on tiny graphs: counts, resulting ops, numerics vs Attention on ORT (opts off), negatives."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from edgeattn import passes
from edgeattn.passes.decompose_attention import DecomposeAttention

from .conftest import op_counts, ort_run

B, H, S, D = 2, 2, 6, 4


def _attention_model(mask: str | None = None, causal: int = 0, scale: float | None = 0.3,
                     q_len: int | str = S, kv_len: int | str = S, mask_shape=None) -> ir.Model:
    ins = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, H, q_len, D]),
           helper.make_tensor_value_info("k", TensorProto.FLOAT, [B, H, kv_len, D]),
           helper.make_tensor_value_info("v", TensorProto.FLOAT, [B, H, kv_len, D])]
    names = ["q", "k", "v"]
    if mask is not None:
        dtype = TensorProto.BOOL if mask == "bool" else TensorProto.FLOAT
        ins.append(helper.make_tensor_value_info("mask", dtype, mask_shape or [B, 1, q_len, kv_len]))
        names.append("mask")
    attrs = {"is_causal": causal} | ({"scale": scale} if scale is not None else {})
    node = helper.make_node("Attention", names, ["y"], name="att", **attrs)
    g = helper.make_graph([node], "t", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, H, q_len, D])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return ir.from_proto(m)


def _feeds(rng, mask=None, q_len=S, kv_len=S, mask_shape=None):
    f = {"q": rng.standard_normal((B, H, q_len, D)).astype(np.float32),
         "k": rng.standard_normal((B, H, kv_len, D)).astype(np.float32),
         "v": rng.standard_normal((B, H, kv_len, D)).astype(np.float32)}
    shape = mask_shape or (B, 1, q_len, kv_len)
    if mask == "bool":
        m = rng.random(shape) > 0.4
        m[..., 0] = True
        m[0, ..., -1, :] = False  # a fully masked query row: Attention defines its output as 0
        f["mask"] = m
    elif mask == "float":
        f["mask"] = rng.standard_normal(shape).astype(np.float32)
    return f


def _decompose_and_check(model: ir.Model, feeds: dict, expect: int = 1):
    reference = ort_run(model, feeds)[0]
    p = DecomposeAttention()
    result = p(model)
    assert p.sites_changed == expect and result.modified == (expect > 0)
    assert p.details["sites"] == 1 and p.details["decomposed"] == expect
    out = ort_run(model, feeds)[0]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference, atol=1e-5, rtol=1e-5)
    return op_counts(model)


def test_no_mask(rng):
    counts = _decompose_and_check(_attention_model(), _feeds(rng))
    assert counts == {"Constant": 1, "Mul": 1, "Transpose": 1, "MatMul": 2, "Softmax": 1}


def test_default_scale_is_inverse_sqrt_head_dim(rng):
    m = _attention_model(scale=None)
    _decompose_and_check(m, _feeds(rng))
    mul = next(n for n in m.graph if n.op_type == "Mul")
    assert float(mul.inputs[1].const_value.numpy()) == pytest.approx(D ** -0.5)


def test_bool_mask_with_fully_masked_row(rng):
    counts = _decompose_and_check(_attention_model("bool"), _feeds(rng, "bool"))
    assert counts["Where"] == 2 and counts["IsNaN"] == 1 and counts["Add"] == 1 and counts["Softmax"] == 1
    assert "Attention" not in counts


def test_bool_padding_mask_broadcast(rng):
    """A (B,1,1,S) padding mask broadcasts over query rows; ORT's kernel wants (…, q, kv), so the
    reference runs the same Attention with the mask expanded."""
    shape = (B, 1, 1, S)
    feeds = _feeds(rng, "bool", mask_shape=shape)
    full = dict(feeds, mask=np.broadcast_to(feeds["mask"], (B, 1, S, S)).copy())
    reference = ort_run(_attention_model("bool"), full)[0]
    m = _attention_model("bool", mask_shape=list(shape))
    p = DecomposeAttention()
    assert p(m).modified and p.sites_changed == 1
    np.testing.assert_allclose(ort_run(m, feeds)[0], reference, atol=1e-5, rtol=1e-5)


def test_float_mask(rng):
    counts = _decompose_and_check(_attention_model("float"), _feeds(rng, "float"))
    # a runtime float mask may hold a row of -inf, so the NaN guard is kept
    assert counts["Add"] == 1 and counts["IsNaN"] == 1 and counts["Where"] == 1


def test_causal_static_is_constant_bias(rng):
    m = _attention_model(causal=1)
    counts = _decompose_and_check(m, _feeds(rng))
    assert "Trilu" not in counts and "IsNaN" not in counts and counts["Add"] == 1
    add = next(n for n in m.graph if n.op_type == "Add")
    bias = add.inputs[1].const_value.numpy()
    assert bias.shape == (S, S) and np.isneginf(bias[0, 1]) and bias[1, 0] == 0 and bias[1, 1] == 0


def test_causal_rectangular(rng):
    """q shorter than kv: top-left aligned, as ONNX Attention-23 without a KV cache."""
    _decompose_and_check(_attention_model(causal=1, q_len=3, kv_len=S), _feeds(rng, q_len=3, kv_len=S))


def test_causal_dynamic_lengths_use_trilu(rng):
    m = _attention_model(causal=1, q_len="s", kv_len="s")
    counts = _decompose_and_check(m, _feeds(rng))
    assert counts["Trilu"] == 1


def test_causal_plus_bool_mask(rng):
    counts = _decompose_and_check(_attention_model("bool", causal=1), _feeds(rng, "bool"))
    assert counts["Add"] == 2 and counts["IsNaN"] == 1


def test_registered_and_creatable():
    assert isinstance(passes.create("decompose-attention"), DecomposeAttention)
    assert "decompose-attention" in passes.DESCRIPTIONS


def test_past_key_left_alone_with_reason(rng):
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, H, 1, D]) for n in "qkv"]
    ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, H, 5, D]) for n in ("pk", "pv")]
    node = helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"], ["y", "pk1", "pv1"])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "pk1", "pv1")]
    proto = helper.make_model(helper.make_graph([node], "t", ins, outs), opset_imports=[helper.make_opsetid("", 23)])
    proto.ir_version = 10
    m = ir.from_proto(proto)
    p = DecomposeAttention()
    assert not p(m).modified and p.sites_changed == 0
    assert op_counts(m) == {"Attention": 1}
    assert p.details["sites"] == 1 and len(p.details["skipped"]) == 1
    assert "past_key" in p.details["skipped"][0]["reason"]


def test_3d_inputs_are_unfolded_then_decomposed():
    rng = np.random.default_rng(0)
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, S, H * D]) for n in "qkv"]
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=H, kv_num_heads=H)
    proto = helper.make_model(helper.make_graph([node], "t", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
                              opset_imports=[helper.make_opsetid("", 23)])
    proto.ir_version = 10
    feeds = {n: rng.standard_normal((1, S, H * D)).astype(np.float32) for n in "qkv"}
    want = ort_run(proto, feeds)[0]
    m = ir.from_proto(proto)
    p = DecomposeAttention()
    assert p(m).modified and p.details["decomposed"] == 1
    assert "Attention" not in op_counts(m)
    np.testing.assert_allclose(ort_run(m, feeds)[0], want, atol=1e-5)


def test_grouped_query_heads_left_alone():
    ins = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 4, S, D])]
    ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, S, D]) for n in "kv"]
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    proto = helper.make_model(helper.make_graph([node], "t", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
                              opset_imports=[helper.make_opsetid("", 23)])
    proto.ir_version = 10
    m = ir.from_proto(proto)
    p = DecomposeAttention()
    assert not p(m).modified and "grouped-query" in p.details["skipped"][0]["reason"]


def test_no_attention_is_a_no_op():
    m = _attention_model()
    DecomposeAttention()(m)
    p = DecomposeAttention()
    assert not p(m).modified and p.details == {"sites": 0, "decomposed": 0, "skipped": []}
