"""tome: bipartite soft matching after each attention; static token counts, protected prefix."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.passes._tokens import find_blocks
from edgeattn.passes.fold_attention_heads import FoldAttentionHeads
from edgeattn.passes.token_merging import TokenMerging

from .conftest import canonical_tiny_deit, ort_run, text_feeds

TOKENS = 18  # 16 patches + class + distillation


@pytest.fixture(scope="module")
def deit_proto():
    return ir.to_proto(canonical_tiny_deit())


@pytest.fixture(scope="module")
def flat_deit_proto():
    return ir.to_proto(canonical_tiny_deit(zero_positions=True))


def _x(batch: int = 2):
    return {"pixel_values": np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


def _attention_tokens(model: ir.Model) -> list[int]:
    return [n.inputs[0].shape[1] for n in model.graph if n.op_type == "Attention"]


def test_r0_is_exact(deit_proto):
    model = ir.from_proto(deit_proto)
    want = ort_run(model, _x())[0]
    p = TokenMerging(r=0)
    p(model)
    assert p.sites_changed == 0 and _attention_tokens(model) == [TOKENS] * 3
    np.testing.assert_allclose(ort_run(model, _x())[0], want, atol=1e-5)


def test_token_counts_shrink_and_prefix_is_protected(deit_proto):
    model = ir.from_proto(deit_proto)
    p = TokenMerging(r=3)
    p(model)
    assert p.details["protect"] == 2  # class + distillation tokens found in the embedding Concat
    assert [m["tokens_after"] for m in p.details["merged"]] == [15, 12, 9]
    assert _attention_tokens(model) == [18, 15, 12]
    # later layers get log(size) as the attention mask; the first has none
    masks = [len(n.inputs) > 3 and n.inputs[3] is not None for n in model.graph if n.op_type == "Attention"]
    assert masks == [False, True, True]
    out = ort_run(model, _x())[0]
    assert out.shape == (2, 10) and np.isfinite(out).all()


def test_layers_and_per_layer_r(deit_proto):
    model = ir.from_proto(deit_proto)
    p = TokenMerging(r=[4, 2], layers=[0, 2])
    p(model)
    assert [(m["layer"], m["r"]) for m in p.details["merged"]] == [(0, 4), (2, 2)]
    assert _attention_tokens(model) == [18, 14, 14]
    with pytest.raises(ValueError, match="2 r values for 1 layers"):
        TokenMerging(r=[1, 2], layers=[0])(ir.from_proto(deit_proto))


def _tome_reference(x, k, heads, r, p):
    """ToMe's bipartite_soft_matching + merge_wavg (sizes 1), written out in numpy."""
    b, n, c = x.shape
    m = k.reshape(b, n, heads, -1).mean(2)[:, p:]
    m = m / np.linalg.norm(m, axis=-1, keepdims=True)
    scores = m[:, ::2] @ m[:, 1::2].transpose(0, 2, 1)
    node_max, node_idx = scores.max(-1), scores.argmax(-1)
    edges = np.argsort(-node_max, axis=-1, kind="stable")
    out = []
    for i in range(b):
        xa, xb = x[i, p:][::2], x[i, p:][1::2].copy()
        sb = np.ones((len(xb), 1))
        src, unm = edges[i, :r], edges[i, r:]
        for s in src:
            d = node_idx[i, s]
            xb[d] += xa[s]
            sb[d] += 1
        out.append(np.concatenate([x[i, :p], xa[unm], xb / sb]))
    return np.stack(out)


def test_merge_matches_a_numpy_reference(deit_proto):
    model = ir.from_proto(deit_proto)
    FoldAttentionHeads()(model)
    block = find_blocks(model)[0][0]
    stream, key = block.stream, block.key
    ln = next(u.node for u in stream.uses() if u.node.op_type == "LayerNormalization")
    p = TokenMerging(r=5, layers=[0])
    p(model)
    merged = ln.inputs[0]
    assert merged is not stream and merged.shape[1] == TOKENS - 5
    model.graph.outputs.extend([stream, key, merged])
    _, x, k, got = ort_run(model, _x())
    np.testing.assert_allclose(got, _tome_reference(x, k, heads=2, r=5, p=2), atol=1e-5)


def test_merging_duplicate_tokens_is_exact_with_proportional_attention(flat_deit_proto):
    """A constant image without position embeddings: all patch tokens are equal, so merging
    them is exact when attention weighs each merged token by its size, and not without."""
    feeds = {"pixel_values": np.full((1, 3, 32, 32), 0.3, np.float32)}
    want = ort_run(ir.from_proto(flat_deit_proto), feeds)[0]
    prop = ir.from_proto(flat_deit_proto)
    TokenMerging(r=4)(prop)
    np.testing.assert_allclose(ort_run(prop, feeds)[0], want, atol=1e-4)
    early = ir.from_proto(flat_deit_proto)  # also merging the embeddings before the first block
    p = TokenMerging(r=2, embed_r=4)
    p(early)
    assert p.details["merged"][0] == {"layer": "embed", "r": 4, "tokens_after": 14}
    assert _attention_tokens(early) == [14, 12, 10]
    np.testing.assert_allclose(ort_run(early, feeds)[0], want, atol=1e-4)
    plain = ir.from_proto(flat_deit_proto)
    TokenMerging(r=4, prop_attn=False)(plain)
    assert np.abs(ort_run(plain, feeds)[0] - want).max() > 1e-3


def test_causal_decoder_is_skipped_with_reason(tmp_path):
    from edgeattn.passes.cleanup import Cleanup

    from ..tiny_models import tiny_causal_attention_onnx

    model = ir.load(tiny_causal_attention_onnx(tmp_path / "c.onnx"))
    Cleanup()(model)
    p = TokenMerging(r=2)
    p(model)
    assert p.sites_changed == 0
    assert p.details["skipped"] and "causal" in p.details["skipped"][0]["reason"]


def test_padding_mask_becomes_size_zero_and_pad_merges_are_free(encoder_proto):
    """Padded tokens get size 0: log(0) = -inf masks them after a merge, and merging a padded
    token costs nothing, so merging no more tokens than there are padded ones is exact."""
    feeds = text_feeds([6, 9])  # ≥ 7 padded tokens in each row, ≥ 3 of them in set A
    want = ort_run(ir.from_proto(encoder_proto), feeds)[0]
    model = ir.from_proto(encoder_proto)
    p = TokenMerging(r=3, layers=[0])
    p(model)
    assert p.details["padding_mask"] == "attention_mask" and p.sites_changed == 1
    assert _attention_tokens(model) == [16, 13]
    np.testing.assert_allclose(ort_run(model, feeds)[0], want, atol=1e-5)
    # merging real tokens changes the embedding, but stays finite and close
    model = ir.from_proto(encoder_proto)
    TokenMerging(r=5)(model)
    got = ort_run(model, text_feeds([16, 16]))[0]
    ref = ort_run(ir.from_proto(encoder_proto), text_feeds([16, 16]))[0]
    assert np.isfinite(got).all() and np.abs(got - ref).max() > 1e-4
