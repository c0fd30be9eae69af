"""sink-window: causal Attention → constant sink + local-window mask; exact when window ≥ seq."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes.cleanup import Cleanup
from edgeattn.passes.sink_window import SinkWindowMask, sink_window_mask

from ..tiny_models import tiny_causal_attention_onnx
from .conftest import ort_run

SEQ = 12


def _model(tmp_path) -> ir.Model:
    m = ir.load(tiny_causal_attention_onnx(tmp_path / "c.onnx", SEQ))
    Cleanup()(m)  # shapes for the pass's checks
    return m


def _x():
    return {"x": np.random.default_rng(0).standard_normal((2, SEQ, 8)).astype(np.float32)}


def test_mask_formula():
    m = sink_window_mask(6, sink=1, window=2)
    assert m.tolist()[5] == [True, False, False, False, True, True]  # sink, then the last 2 up to itself
    assert not np.triu(m, 1).any()  # never looks ahead


def test_window_covering_the_sequence_is_exact(tmp_path):
    model = _model(tmp_path)
    want = ort_run(model, _x())[0]
    p = SinkWindowMask(sink=0, window=SEQ)
    p(model)
    att = next(n for n in model.graph if n.op_type == "Attention")
    assert p.sites_changed == 1 and att.attributes["is_causal"].value == 0 and len(att.inputs) == 4
    assert p.details["kept_fraction_of_causal"] == 1.0
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-6)


def test_small_window_changes_far_queries_only(tmp_path):
    model = _model(tmp_path)
    want = ort_run(model, _x())[0]
    p = SinkWindowMask(sink=2, window=4)
    p(model)
    got = ort_run(model, _x())[0]
    # queries whose causal span fits in sink + window are untouched, later ones change
    np.testing.assert_allclose(got[:, :, :6], want[:, :, :6], atol=1e-6)
    assert np.abs(got[:, :, 6:] - want[:, :, 6:]).max() > 1e-3
    assert 0 < p.details["kept_fraction_of_causal"] < 1


def test_layers_setting_and_non_causal_skip(tmp_path):
    model = _model(tmp_path)
    p = SinkWindowMask(window=4, layers=[1])
    p(model)
    assert p.sites_changed == 0
    model2 = _model(tmp_path)
    att = next(n for n in model2.graph if n.op_type == "Attention")
    att.attributes["is_causal"] = ir.AttrInt64("is_causal", 0)
    p2 = SinkWindowMask(window=4)
    p2(model2)
    assert p2.sites_changed == 0 and p2.details["skipped"][0]["reason"] == "not causal"


def test_bad_settings():
    with pytest.raises(ValueError, match="window ≥ 1"):
        SinkWindowMask(window=0)
