"""head-prune (FLAP): pruned heads are replaced by their calibration mean (bias compensation)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes._linear import channel_stats
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads
from edgeattn.passes.head_pruning import HeadPruning

from .conftest import ort_run, text_feeds


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


def _with_channel_means(proto, pruned: list[dict], calib: list[dict], tokens=None) -> ir.Model:
    """The original graph with the pruned heads' output channels overwritten by their means
    (over the calibration tokens `tokens(feed)` selects; default all)."""
    ref = ir.from_proto(proto)
    FoldAttentionHeads()(ref)  # the 3-D form the pass works on (a folded graph stays as it is)
    blocks = find_blocks(ref, head_shared_masks=True)[0]
    stats = channel_stats(ref, [b.attention.outputs[0] for b in blocks], calib, tokens)
    for item in pruned:
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
    return ref


def test_pruned_heads_equal_their_calibration_mean(folded_deit_proto):
    """The pruned graph must equal the original with the pruned heads' output channels held at
    their calibration means: that is exactly what bias compensation promises."""
    model = ir.from_proto(folded_deit_proto)
    p = HeadPruning(ratio=0.5, calibration=CALIB)  # 3 of 6 heads, ≥ 1 kept per layer
    p(model)
    assert p.details["heads_removed"] == 3 and all(k["kept"] >= 1 for k in p.details["pruned"])
    assert sum(_heads(model)) == 3
    ref = _with_channel_means(folded_deit_proto, p.details["pruned"], CALIB)
    np.testing.assert_allclose(ort_run(model, _feeds(0))[0], ort_run(ref, _feeds(0))[0], atol=1e-4)


def test_a_padding_mask_shared_by_the_heads_is_kept(encoder_proto):
    """A BERT-style encoder's key-padding mask is the same for every head: pruning heads leaves
    it valid, so masked sites are pruned too (padded texts in calibration and test), and the
    compensating means are taken over the real tokens only."""
    calib = [text_feeds([16, 9]), text_feeds([5, 12])]
    model = ir.from_proto(encoder_proto)
    p = HeadPruning(ratio=0.5, calibration=calib)  # 2 of 4 heads
    p(model)
    assert p.details["heads_removed"] == 2 and not p.details["skipped"]
    real = lambda f: f["attention_mask"].reshape(-1) != 0
    ref = _with_channel_means(encoder_proto, p.details["pruned"], calib, real)
    means = lambda m: [v.const_value.numpy() for k, v in m.graph.initializers.items() if k.startswith("mean")]
    everywhere = _with_channel_means(encoder_proto, p.details["pruned"], calib)
    assert not np.allclose(means(ref)[0], means(everywhere)[0])  # the padded positions would move them
    feeds = text_feeds([16, 7, 3])
    np.testing.assert_allclose(ort_run(model, feeds)[0], ort_run(ref, feeds)[0], atol=1e-4)


def test_needs_calibration(folded_deit_proto):
    with pytest.raises(ValueError, match="calibration"):
        HeadPruning(ratio=0.3)(ir.from_proto(folded_deit_proto))
