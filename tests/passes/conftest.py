"""Shared helpers for pass tests: run a graph on ORT with its optimizations OFF."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest


def ort_run(model: ir.Model | onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def op_counts(model: ir.Model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.all_nodes():
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def export(module, args, *, dynamo: bool, opset: int, input_names: list[str]) -> ir.Model:
    """Export a torch module the way users do: dynamo (opset 18–20) or legacy TorchScript (opset 17)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            import contextlib

            with contextlib.redirect_stdout(io.StringIO()):
                prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=input_names, verbose=False)
            return ir.from_proto(prog.model_proto)
        buf = io.BytesIO()
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset, input_names=input_names)
        return ir.from_proto(onnx.load_from_string(buf.getvalue()))


def tiny_gpt2():
    """A 2-layer GPT-2 (random, seed 0) returning the last hidden state: a causal decoder."""
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    gpt = GPT2Model(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, use_cache=False)).eval()

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt = gpt

        def forward(self, ids):
            return self.gpt(input_ids=ids, use_cache=False).last_hidden_state

    return Hidden().eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
