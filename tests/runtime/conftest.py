"""Tiny ONNX models built in the test (onnx is a test dependency; the runtime never imports it)."""
from __future__ import annotations

import numpy as np
import pytest

W = np.random.default_rng(42).standard_normal((8, 8)).astype(np.float32)


def softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference(x: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    a = x @ W
    return softmax(a if m is None else a + m[..., None].astype(np.float32))


def _model_bytes(with_mask: bool) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="proj")]
    last = "a"
    if with_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]))
        nodes += [helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT, name="cast"),
                  helper.make_node("Unsqueeze", ["mf", "axes"], ["mu"], name="unsq"),
                  helper.make_node("Add", ["a", "mu"], ["s"], name="add")]
        last = "s"
    nodes.append(helper.make_node("Softmax", [last], ["y"], axis=-1, name="softmax"))
    inits = [numpy_helper.from_array(W, "W")]
    if with_mask:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))
    graph = helper.make_graph(nodes, "tiny", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def manifest_for(with_mask: bool = False) -> dict:
    inputs = [{"name": "x", "dtype": "float32", "shape": ["batch", "seq", 8]}]
    if with_mask:
        inputs.append({"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]})
    return {"model": "tiny-attn", "target": "ort", "backend": "ort", "payload": {"model": "model.onnx"},
            "backend_options": {"graph_optimization_level": "all"}, "inputs": inputs,
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", "seq", 8]}],
            "example_dims": {"batch": 2, "seq": 4}}


@pytest.fixture(scope="session")
def model_bytes() -> bytes:
    return _model_bytes(False)


@pytest.fixture(scope="session")
def mask_model_bytes() -> bytes:
    return _model_bytes(True)


@pytest.fixture
def artifact(tmp_path, model_bytes):
    from edgeattn.runtime.artifact import write_artifact
    return write_artifact(tmp_path / "art", manifest_for(), {"model.onnx": model_bytes})


@pytest.fixture
def mask_artifact(tmp_path, mask_model_bytes):
    from edgeattn.runtime.artifact import write_artifact
    return write_artifact(tmp_path / "mart", manifest_for(True), {"model.onnx": mask_model_bytes})
