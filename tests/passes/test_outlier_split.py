"""outlier-split: exact (to 1e-5), fires only on channels over the ratio, leaves the outlier part in
float, and gives the rest a finer int8 grid."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeattn.passes._calibrate import activation_ranges
from edgeattn.passes._linear import const
from edgeattn.passes.outlier_split import KEEP_FLOAT, OutlierSplit, outlier_channels, sites
from edgeattn.passes.quantize_qdq import QuantizeMatMuls, quantizable

from .conftest import canonical_tiny_sentence_encoder, ort_run

OUTLIER = 5  # the GELU output channel made large in every MLP


def _feeds(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1, 100, (2, 16)).astype(np.int64), "attention_mask": np.ones((2, 16), np.int64)}


CALIB = [_feeds(10 + i) for i in range(3)]


def _encoder(outlier: bool) -> ir.Model:
    """The tiny BERT; with `outlier`, channel OUTLIER of each MLP's GELU output runs ~20× the others
    (fc1's column scaled, its bias raised), as trained BERTs' layers do."""
    model = canonical_tiny_sentence_encoder()
    if outlier:
        for _, proj in sites(model):
            w, b = proj.weight.copy(), proj.bias.copy()
            w[:, OUTLIER] *= 10
            b[OUTLIER] += 20
            proj.set_weight(model, w)
            proj.set_bias(model, b)
    return model


def test_outlier_channels_are_the_ones_over_the_ratio():
    absmax = np.array([1.0, 30.0, 2.0, 1.5, 12.0, 3.0, 2.5, 1.0])
    assert list(outlier_channels(absmax, ratio=2.0, max_channels=3)) == [1, 4]  # 4th largest: 2.5
    assert list(outlier_channels(absmax, ratio=20.0, max_channels=3)) == []
    assert list(outlier_channels(absmax[:3], ratio=2.0, max_channels=3)) == []  # nothing to compare with


def test_split_is_exact_and_fires_on_every_mlp():
    model = _encoder(outlier=True)
    want = ort_run(model, _feeds(0))[0]
    matmuls = sum(n.op_type == "MatMul" for n in model.graph)
    p = OutlierSplit(ratio=2.0, calibration=CALIB)
    p(model)
    assert p.sites_changed == 2 and all(s["channels"] == [OUTLIER] for s in p.details["split"])
    assert sum(n.op_type == "MatMul" for n in model.graph) == matmuls + 2
    assert sum(n.op_type == "Split" for n in model.graph) == 2
    np.testing.assert_allclose(ort_run(model, _feeds(0))[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # the outlier parts (one row of weights each) stay float; the other parts quantize
    kept = [n for n in model.graph if n.metadata_props.get(KEEP_FLOAT)]
    assert len(kept) == 2 and all(const(n.inputs[1]).shape[0] == 1 for n in kept)
    assert not set(kept) & set(quantizable(model))


def test_no_outlier_no_split():
    model = _encoder(outlier=False)
    p = OutlierSplit(ratio=4.0, calibration=CALIB)
    assert not p(model).modified and p.sites_changed == 0 and p.details["candidates"] == 2


def _int8_error(model: ir.Model) -> float:
    """Relative error of the model with every quantizable MatMul in int8 (min-max ranges)."""
    want = ort_run(model, _feeds(0))[0]
    nodes = quantizable(model)
    ranges = activation_ranges(model, [n.inputs[0].name for n in nodes], CALIB)
    QuantizeMatMuls(ranges)(model)
    return float(np.abs(ort_run(model, _feeds(0))[0] - want).max() / np.abs(want).max())


def test_split_model_quantizes_with_less_error():
    plain = _int8_error(_encoder(outlier=True))
    model = _encoder(outlier=True)
    OutlierSplit(ratio=2.0, calibration=CALIB)(model)
    assert _int8_error(model) < plain / 2


def test_the_bias_stays_on_the_big_part():
    model = _encoder(outlier=True)
    first = sites(model)[0][0].name
    OutlierSplit(ratio=2.0, calibration=CALIB)(model)
    others = next(n for n in model.graph if n.name == f"{first}_others")
    (use,) = others.outputs[0].uses()
    assert use.node.op_type == "Add" and const(use.node.inputs[1 - use.idx]) is not None  # the bias
    (after,) = use.node.outputs[0].uses()
    assert after.node.op_type == "Add" and after.node.inputs[1 - after.idx].producer().name == f"{first}_outliers"
