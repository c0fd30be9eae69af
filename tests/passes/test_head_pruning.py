"""head-prune (FLAP): pruned heads are replaced by their calibration mean (bias compensation)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes._linear import channel_stats
from edgeattn.passes.head_pruning import HeadPruning

from .conftest import ort_run


def _feeds(seed: int, batch: int = 4):
    return {"pixel_values": np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


CALIB = [_feeds(10 + i) for i in range(3)]


def _heads(model):
    return [n.attributes["q_num_heads"].value for n in model.graph if n.op_type == "Attention"]


def test_ratio_zero_is_exact(folded_deit_proto):
    model = ir.from_proto(folded_deit_proto)
    want = ort_run(model, _feeds(0))[0]
    p = HeadPruning(ratio=0.0, calibration=CALIB)
    p(model)
    assert p.sites_changed == 0 and _heads(model) == [2, 2, 2]
    np.testing.assert_allclose(ort_run(model, _feeds(0))[0], want, atol=1e-6)


def test_pruned_heads_equal_their_calibration_mean(folded_deit_proto):
    """The pruned graph must equal the original with the pruned heads' output channels held at
    their calibration means: that is exactly what bias compensation promises."""
    model = ir.from_proto(folded_deit_proto)
    p = HeadPruning(ratio=0.5, calibration=CALIB)  # 3 of 6 heads, ≥ 1 kept per layer
    p(model)
    assert p.details["heads_removed"] == 3 and all(k["kept"] >= 1 for k in p.details["pruned"])
    assert sum(_heads(model)) == 3
    out = ort_run(model, _feeds(0))[0]
    # the reference: the original graph with those channels overwritten by their means
    ref = ir.from_proto(folded_deit_proto)
    blocks = find_blocks(ref)[0]
    stats = channel_stats(ref, [b.attention.outputs[0] for b in blocks], CALIB)
    for item in p.details["pruned"]:
        block = blocks[item["layer"]]
        y = block.attention.outputs[0]
        d = y.shape[2] // block.heads
        keep = np.ones(y.shape[2], np.float32)
        for h in item["heads"]:
            keep[h * d:(h + 1) * d] = 0
        mean = stats[item["layer"]][0].astype(np.float32) * (1 - keep)
        users = list(y.uses())
        node = ir.node("Mul", [y, ir.Value(name=f"keep{item['layer']}", const_value=ir.tensor(keep))])
        fixed = ir.node("Add", [node.outputs[0], ir.Value(name=f"mean{item['layer']}", const_value=ir.tensor(mean))])
        for n in (node, fixed):
            for i in n.inputs[1:]:
                ref.graph.register_initializer(i)
        ref.graph.insert_after(block.attention, [node, fixed])
        for u in users:
            u.node.replace_input_with(u.idx, fixed.outputs[0])
    np.testing.assert_allclose(out, ort_run(ref, _feeds(0))[0], atol=1e-4)


def test_needs_calibration(folded_deit_proto):
    with pytest.raises(ValueError, match="calibration"):
        HeadPruning(ratio=0.3)(ir.from_proto(folded_deit_proto))
