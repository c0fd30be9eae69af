"""fold-causal-masks: a causal mask built at run time from input shapes → is_causal=1, exact."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx_ir as ir

from edgeattn.passes.canonicalize_attention import CanonicalizeAttention
from edgeattn.passes.causal_masks import FoldCausalMasks
from edgeattn.passes.cleanup import Cleanup

from .conftest import ort_run, tiny_gpt2


def _gpt2_dynamic_batch() -> ir.Model:
    import torch

    ids = torch.zeros(2, 10, dtype=torch.long)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(tiny_gpt2(), (ids,), dynamo=True, opset_version=20, input_names=["ids"],
                                 dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), verbose=False)
    return ir.from_proto(prog.model_proto)


def test_runtime_causal_mask_becomes_is_causal():
    model = _gpt2_dynamic_batch()
    feeds = {"ids": (np.arange(30, dtype=np.int64).reshape(3, 10) * 7) % 100}
    want = ort_run(model, feeds)[0]
    Cleanup()(model)
    CanonicalizeAttention()(model)
    atts = [n for n in model.graph if n.op_type == "Attention"]
    assert len(atts) == 2 and all(len(n.inputs) == 4 for n in atts)  # a run-time mask, not yet causal
    p = FoldCausalMasks()
    assert p(model).modified and p.sites_changed == 2
    Cleanup()(model)
    atts = [n for n in model.graph if n.op_type == "Attention"]
    assert all(n.attributes["is_causal"].value == 1 and len(n.inputs) == 3 for n in atts)
    np.testing.assert_allclose(ort_run(model, feeds)[0], want, atol=1e-4)


def test_mask_reading_input_values_is_left_alone():
    """A padding mask depends on the attention_mask values, not only shapes: never folded."""
    from .test_canonicalize_attention import _bert_feeds, _tiny_bert
    from .conftest import export
    import torch

    feeds = _bert_feeds()
    model = export(_tiny_bert("sdpa"), tuple(torch.from_numpy(v) for v in feeds.values()), dynamo=True, opset=20,
                   input_names=list(feeds))
    Cleanup()(model)
    CanonicalizeAttention()(model)
    p = FoldCausalMasks()
    p(model)
    assert p.sites_changed == 0 and p.details["shape_only_masks"] == 0
