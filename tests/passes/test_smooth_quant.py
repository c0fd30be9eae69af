"""smooth-quant: an exact transform (to 1e-5) that flattens activation outlier channels."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes._linear import channel_absmax, const, replace_const
from edgeattn.passes.smooth_quant import SmoothQuant, _layernorm_sites

from .conftest import canonical_tiny_sentence_encoder, ort_run


def _feeds(seed: int, batch: int = 2):
    return {"pixel_values": np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


CALIB = [_feeds(10 + i) for i in range(3)]


def _with_outlier_channel(model: ir.Model) -> ir.Model:
    """Blow up channel 3 of every LayerNorm feeding projections (as trained ViTs/BERTs have)."""
    for ln, _, _ in _layernorm_sites(model):
        for idx in (1, 2):
            arr = const(ln.inputs[idx]).copy()
            arr[3] = arr[3] * 40 + (5.0 if idx == 2 else 0.0)
            replace_const(model, ln, idx, arr)
    return model


def test_migration_is_exact_and_fires_on_every_block(folded_deit_proto):
    model = _with_outlier_channel(ir.from_proto(folded_deit_proto))
    want = ort_run(model, _feeds(0))[0]
    p = SmoothQuant(alpha=0.5, calibration=CALIB)
    p(model)
    # 3 blocks: the LayerNorm before attention and the one before the MLP each, plus V → O.
    assert p.details["layernorm"] == 6 and p.details["value_output"] == 3 and p.sites_changed == 9
    got = ort_run(model, _feeds(0))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_outlier_channel_is_flattened(folded_deit_proto):
    model = _with_outlier_channel(ir.from_proto(folded_deit_proto))
    values = [ln.outputs[0] for ln, _, _ in _layernorm_sites(model)]
    before = channel_absmax(model, values, CALIB)
    SmoothQuant(alpha=0.5, calibration=CALIB)(model)
    after = channel_absmax(model, values, CALIB)
    ratio = lambda m: m.max() / np.median(m)  # noqa: E731
    for b, a in zip(before, after):
        assert ratio(b) > 10 and ratio(a) < ratio(b) / 3


def test_post_layernorm_encoder_restores_the_residual_exactly():
    """BERT's LayerNorms also feed the residual Add: they are smoothed too, and the residual
    reads the output through a Mul by s; the result stays exact."""
    model = canonical_tiny_sentence_encoder()
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1, 100, (2, 16)).astype(np.int64), "attention_mask": np.ones((2, 16), np.int64)}
    want = ort_run(model, feeds)[0]
    muls = sum(1 for n in model.graph if n.op_type == "Mul")
    p = SmoothQuant(calibration=[feeds])
    p(model)
    # embeddings LN → layer 0 Q/K/V; each layer's attention LN → its MLP; layer 0's output LN →
    # layer 1 Q/K/V; layer 1's output LN only feeds the pooling (no MatMul): 4 sites, 4 residual uses.
    assert p.details["layernorm"] == 4 and p.details["value_output"] == 2 and p.details["restored_uses"] == 4
    assert sum(1 for n in model.graph if n.op_type == "Mul") == muls + 4
    np.testing.assert_allclose(ort_run(model, feeds)[0], want, rtol=1e-5, atol=1e-5)
