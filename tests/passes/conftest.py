"""Shared helpers for pass tests: run a graph on ORT with its optimizations OFF."""

from __future__ import annotations

import contextlib
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


def deit_feed(seed: int = 2) -> dict:
    """A batch of 2 random 32×32 images for canonical_tiny_deit."""
    return {"pixel_values": np.random.default_rng(seed).standard_normal((2, 3, 32, 32)).astype(np.float32)}


def attention_tokens(model: ir.Model) -> list:
    """The token count each Attention site reads."""
    return [n.inputs[0].shape[1] for n in model.graph if n.op_type == "Attention"]


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


def tiny_deit(zero_positions: bool = False):
    """A 3-layer DeiT (random, seed 0; 32×32 input, patch 8 → 16 patches + class + distillation
    tokens) returning its logits. zero_positions: no position embedding, so equal patches give
    equal tokens."""
    import torch
    from transformers import DeiTConfig, DeiTForImageClassification

    torch.manual_seed(0)
    cfg = DeiTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                     image_size=32, patch_size=8, num_labels=10)
    model = DeiTForImageClassification(cfg).eval()
    if zero_positions:
        with torch.no_grad():
            model.deit.embeddings.position_embeddings.zero_()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    return Logits().eval()


def canonical_tiny_deit(zero_positions: bool = False) -> ir.Model:
    """tiny_deit exported (dynamo, opset 20, symbolic batch) and run through the default pipeline."""
    import torch

    from edgeattn.compiler.frontend import DEFAULT_OPSET
    from edgeattn.compiler.pipeline import run_pipeline

    x = torch.randn(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=64)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(tiny_deit(zero_positions), (x,), dynamo=True, opset_version=DEFAULT_OPSET,
                                 input_names=["pixel_values"], dynamic_shapes=({0: batch},), verbose=False)
    model = ir.from_proto(prog.model_proto)
    run_pipeline(model, "default")
    return model


def canonical_tiny_sentence_encoder(seq: int = 16) -> ir.Model:
    """A 2-layer BERT (random, seed 0) with a padding mask and mean pooling, as
    sentence-transformers computes embeddings; exported and run through the default pipeline."""
    import torch
    from transformers import BertConfig, BertModel

    from edgeattn.compiler.frontend import DEFAULT_OPSET
    from edgeattn.compiler.pipeline import run_pipeline

    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=100, max_position_embeddings=64)).eval()

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    ids = torch.randint(1, 100, (2, seq))
    mask = torch.ones(2, seq, dtype=torch.int64)
    batch = torch.export.Dim("batch", min=1, max=64)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(Embed().eval(), (ids, mask), dynamo=True, opset_version=DEFAULT_OPSET,
                                 input_names=["input_ids", "attention_mask"],
                                 dynamic_shapes=({0: batch}, {0: batch}), verbose=False)
    model = ir.from_proto(prog.model_proto)
    run_pipeline(model, "default")
    return model


@pytest.fixture(scope="module")
def folded_deit_proto():
    """canonical_tiny_deit in the 3-D Attention form (fold-attention-heads), as a proto to copy."""
    from edgeattn.passes.fold_attention_heads import FoldAttentionHeads

    model = canonical_tiny_deit()
    FoldAttentionHeads()(model)
    return ir.to_proto(model)


@pytest.fixture(scope="module")
def encoder_proto():
    return ir.to_proto(canonical_tiny_sentence_encoder(seq=16))


def text_feeds(real: list[int], seq: int = 16) -> dict[str, np.ndarray]:
    """Random token ids for the tiny sentence encoder; text i has real[i] tokens, then padding."""
    rng = np.random.default_rng(3)
    mask = np.zeros((len(real), seq), np.int64)
    for i, n in enumerate(real):
        mask[i, :n] = 1
    return {"input_ids": rng.integers(1, 100, (len(real), seq)).astype(np.int64), "attention_mask": mask}
