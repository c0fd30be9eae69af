"""readout-prune: only the tokens the output reads are computed after the last attention's K/V."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

from edgeattn.passes.cleanup import Cleanup
from edgeattn.passes.readout_prune import ReadoutPrune
from edgeattn.passes.token_pooling import TokenPooling

from .conftest import attention_tokens, deit_feed, encoder_proto, ort_run, text_feeds  # noqa: F401 - fixture


def _prune(model: ir.Model) -> ReadoutPrune:
    p = ReadoutPrune()
    p(model)
    Cleanup()(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    return p


def _query_tokens(model: ir.Model) -> list:
    return [n.inputs[0].shape[1] for n in model.graph if n.op_type == "Attention"]


def test_deit_last_block_runs_on_the_class_token(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    feed = deit_feed()
    ref = ort_run(model, feed)[0]
    p = _prune(model)
    # 18 tokens everywhere; the last site's query (and its MLP) now has the one token the classifier reads
    assert _query_tokens(model) == [18, 18, 1]
    assert attention_tokens(model) == [18, 18, 1]
    assert [n.inputs[1].shape[1] for n in model.graph if n.op_type == "Attention"] == [18, 18, 18]  # keys whole
    assert p.details["attention_sites"] == 1 and p.details["tokens_read"] == [1] and p.sites_changed >= 10
    np.testing.assert_allclose(ort_run(model, feed)[0], ref, rtol=1e-5, atol=1e-5)


def test_through_a_pool_at_the_last_block_and_its_masks(folded_deit_proto):
    """pool after the last attention is a constant token-mixing MatMul: the class token's row reads
    one column, so the selection goes on into the attention; an earlier pool's constant log(size)
    mask is narrowed in its query axis."""
    for layers in ([2], [0, 2]):
        model = ir.from_proto(folded_deit_proto)
        TokenPooling(layers=layers)(model)
        feed = deit_feed(4)
        ref = ort_run(model, feed)[0]
        p = _prune(model)
        assert _query_tokens(model)[-1] == 1 and p.details["attention_sites"] == 1
        pools = [tuple(n.inputs[0].const_value.shape) for n in model.graph
                 if n.op_type == "MatMul" and n.inputs[0].const_value is not None]
        assert len(pools) == len(layers) and pools[-1] == (1, 1)  # the class token's row reads only itself
        last = [n for n in model.graph if n.op_type == "Attention"][-1]
        if layers[0] == 0:  # the size mask the first pool put on later sites: its query axis follows
            assert list(last.inputs[3].shape)[-2:] == [1, 6]
        np.testing.assert_allclose(ort_run(model, feed)[0], ref, rtol=1e-5, atol=1e-5)


def test_mean_pooled_encoder_is_left_alone(encoder_proto):
    model = ir.from_proto(encoder_proto)
    p = _prune(model)
    assert p.sites_changed == 0 and "no readout" in p.details["reason"]
    feed = text_feeds([16, 9])
    np.testing.assert_allclose(ort_run(model, feed)[0], ort_run(ir.from_proto(encoder_proto), feed)[0], rtol=1e-6)


def _token_mlp(readout: str) -> ir.Model:
    """x (B, 8, 16) → LayerNorm → MatMul → Add → Gelu → readout; `softmax` inserts a token-mixing
    Softmax over axis 1 first (the selection must stop there)."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel()) for n, a in
             (("g", rng.standard_normal(16)), ("b", rng.standard_normal(16)), ("w", rng.standard_normal((16, 16))),
              ("c", rng.standard_normal(16)))]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "w"], ["mm"]), helper.make_node("Add", ["mm", "c"], ["a"]),
             helper.make_node("Gelu", ["a"], ["h"])]
    if readout == "slice":
        inits += [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 2), ("e", 6), ("ax", 1), ("st", 2))]
        nodes.append(helper.make_node("Slice", ["h", "s", "e", "ax", "st"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 16])
    else:
        if readout == "softmax":
            nodes[0].input[0] = "sm"
            nodes.insert(0, helper.make_node("Softmax", ["x"], ["sm"], axis=1))
        inits.append(helper.make_tensor("i", TensorProto.INT64, [], [-1]))
        nodes.append(helper.make_node("Gather", ["h", "i"], ["y"], axis=1))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 16])],
                              [out], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def test_slice_and_negative_gather_readouts():
    x = np.random.default_rng(1).standard_normal((3, 8, 16)).astype(np.float32)
    for readout, rows in (("slice", 2), ("gather", 1)):
        model = _token_mlp(readout)
        ref = ort_run(model, {"x": x})[0]
        p = _prune(model)
        gathers = [n for n in model.graph if n.op_type == "Gather"]
        assert p.sites_changed == 4 and p.details["tokens_read"] == [rows]
        assert [n.op_type for n in model.graph][:2] == ["Gather", "LayerNormalization"]  # selection moved to the input
        assert gathers[0].inputs[0].name == "x" and gathers[0].outputs[0].shape[1] == rows
        np.testing.assert_allclose(ort_run(model, {"x": x})[0], ref, rtol=1e-6, atol=1e-6)


def test_token_mixing_op_stops_the_selection():
    model = _token_mlp("softmax")
    x = np.random.default_rng(2).standard_normal((2, 8, 16)).astype(np.float32)
    ref = ort_run(model, {"x": x})[0]
    p = _prune(model)
    assert p.sites_changed == 4  # LayerNorm … Gelu narrowed; the Softmax over tokens is not
    softmax = next(n for n in model.graph if n.op_type == "Softmax")
    assert softmax.outputs[0].shape[1] == 8
    np.testing.assert_allclose(ort_run(model, {"x": x})[0], ref, rtol=1e-6, atol=1e-6)
