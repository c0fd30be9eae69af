"""Zoo models compile exactly: the artifact matches torch eager to ≤ 1e-4 (max abs)."""

from __future__ import annotations

import json

import pytest

from edgeattn.compiler.compile import compile_model


def test_digits_vit_real_accuracy(tmp_path):
    m = compile_model("digits-vit", "ort", tmp_path / "digits")
    acc = m["accuracy"]
    assert m["attention"]["sites"] == 4 and m["attention"]["canonicalized"] == 4
    assert acc["max_abs_error"] <= 1e-4
    assert acc["top1"] >= 0.95 and acc["top1"] == pytest.approx(acc["reference_top1"], abs=1 / 450)
    saved = json.loads((tmp_path / "digits" / "manifest.json").read_text())
    assert saved["accuracy"]["top1"] == acc["top1"]
    # readout pruning ran after the plan: the last block computes the class token only (of 4 blocks)
    readout = next(p for p in m["passes"] if p["name"] == "readout-prune")
    assert readout["details"]["attention_sites"] == 1 and readout["details"]["tokens_read"] == [1]
    assert 0.75 * 69_079_552 < m["gemm_flops"] < 0.85 * 69_079_552  # the exact graph's FLOPs at batch 1


@pytest.mark.slow
@pytest.mark.parametrize("model,sites", [("vit-tiny", 12), ("deit-small", 12), ("deit-small@384", 12),
                                         ("minilm-l6", 6), ("gpt2-small", 12)])
def test_zoo_model_is_exact(model, sites, tmp_path):
    m = compile_model(model, "ort", tmp_path / "art")
    assert m["attention"]["sites"] == sites and m["attention"]["canonicalized"] == sites
    assert m["accuracy"]["max_abs_error"] <= 1e-4, m["accuracy"]
