"""Rewrite plans under a measured budget: parse, accept, and fall back to the exact graph."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from edgeattn import runtime
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.plan import Budget, parse_rewrite

from ..tiny_models import tiny_causal_attention_onnx
from .test_cli import edgeattn


def test_parse_rewrite_and_budget():
    step = parse_rewrite("sink-window:sink=4,window=64,layers=0-2,5")
    assert step.settings == {"sink": 4, "window": 64, "layers": [0, 1, 2, 5]}
    assert str(Budget.parse("cosine>=0.99")) == "cosine>=0.99"
    with pytest.raises(CompileError, match="unknown rewrite 'merge-all'"):
        parse_rewrite("merge-all:r=8")
    with pytest.raises(CompileError, match="bad budget"):
        Budget.parse("cosine<=0.99")
    both = Budget.parse("embedding-cosine>=0.99, nn-agree>=0.98")
    assert str(both) == "embedding-cosine>=0.99,nn-agree>=0.98"
    values = both.measure({"embedding_cosine": 0.995, "nn_agreement": 0.97, "cosine": 1.0})
    assert values == {"embedding-cosine": 0.995, "nn-agree": 0.97} and not both.met(values)
    assert both.met({"embedding-cosine": 0.995, "nn-agree": 0.99})
    with pytest.raises(CompileError, match="needs the model's text set"):
        both.measure({"cosine": 1.0})


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    return tiny_causal_attention_onnx(tmp_path_factory.mktemp("plan") / "c.onnx", seq=12)


def test_exact_setting_is_accepted(causal, tmp_path):
    m = compile_model(str(causal), "ort", tmp_path / "a", rewrites=["sink-window:sink=0,window=12"],
                      budget="max-abs<=1e-5")
    plan = m["plan"]
    assert plan["accepted"] and plan["rewrites"][0]["count"] == 1
    assert plan["measured"]["max-abs"] <= 1e-5 and m["accuracy"]["max_abs_error"] <= 1e-5


def test_missed_budget_ships_the_exact_graph(causal, tmp_path):
    m = compile_model(str(causal), "ort", tmp_path / "a", rewrites=["sink-window:sink=1,window=2"],
                      budget="cosine>=0.99999")
    plan = m["plan"]
    assert not plan["accepted"] and "shipped the exact graph" in plan["reason"]
    assert plan["measured"]["cosine"] < 0.99999
    assert m["accuracy"]["max_abs_error"] <= 1e-5  # what shipped is exact
    exact = compile_model(str(causal), "ort", tmp_path / "b")
    sess, ref = runtime.load(tmp_path / "a"), runtime.load(tmp_path / "b")
    feeds = sess.example_feeds(seed=1)
    np.testing.assert_array_equal(sess.run(feeds)["y"], ref.run(feeds)["y"])
    assert "plan" not in exact


def test_cli_rewrite_and_explain(causal, tmp_path):
    r = edgeattn("compile", str(causal), "-o", str(tmp_path / "a"), "--rewrite", "sink-window:sink=1,window=2",
                 "--budget", "cosine>=0.3")
    assert r.returncode == 0, r.stderr
    assert "accepted" in r.stdout
    saved = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert saved["plan"]["accepted"] and saved["plan"]["budget"] == "cosine>=0.3"
    r = edgeattn("explain", str(tmp_path / "a"))
    assert r.returncode == 0 and "sink-window" in r.stdout and "window=2" in r.stdout


def test_cli_bad_plan_is_one_line(causal, tmp_path):
    r = edgeattn("compile", str(causal), "-o", str(tmp_path / "a"), "--rewrite", "merge-all:r=8")
    assert r.returncode == 2 and "unknown rewrite 'merge-all'" in r.stderr and not (tmp_path / "a").exists()
    r = edgeattn("compile", str(causal), "-o", str(tmp_path / "a"), "--budget", "cosine>=0.9")
    assert r.returncode == 2 and "without --rewrite" in r.stderr


def test_explain_shows_each_windowed_layer(tmp_path):
    import onnx_ir as ir  # noqa: PLC0415

    from ..passes.conftest import canonical_tiny_deit  # noqa: PLC0415

    path = tmp_path / "deit.onnx"
    ir.save(canonical_tiny_deit(), path)
    m = compile_model(str(path), "ort", tmp_path / "a", rewrites=["window:window=2,4,stride=1,4,layers=0,2"],
                      budget="cosine>=0.3")
    assert m["plan"]["accepted"] and m["plan"]["rewrites"][0]["count"] == 2
    r = edgeattn("explain", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    assert "window 2×2, stride 1: 6 keys" in r.stdout and "window 4×4: 18 keys" in r.stdout


def test_top1_agreement_on_labelled_data_and_on_scores():
    from edgeattn.compiler import accuracy  # noqa: PLC0415
    from edgeattn.compiler.plan import measure_candidate  # noqa: PLC0415

    labels = np.array([0, 1, 2, 0])
    logits = np.eye(3)[labels] * 5
    flipped = logits.copy()
    flipped[3] = np.eye(3)[2] * 5  # one of four predictions changes

    def evaluate_top1(predict):  # a labelled set of 4 images, 2 per batch
        got = np.concatenate([predict(np.arange(i, i + 2)).argmax(1) for i in (0, 2)])
        return float(np.mean(got == labels))

    ref = accuracy.top1_with_predictions(evaluate_top1, lambda x: logits[x])
    assert ref[0] == 1.0 and list(ref[1]) == [0, 1, 2, 0]

    zoo = types.SimpleNamespace(inputs=[types.SimpleNamespace(name="x")], evaluate_top1=evaluate_top1)

    runner = lambda table: (lambda _m: lambda f: [table[f["x"]]])
    feeds = [{"x": np.array([0])}, {"x": np.array([3])}]
    acc = measure_candidate(None, feeds, [logits[[0]], logits[[3]]], zoo, ref, runner=runner(flipped))
    assert acc["top1"] == 0.75 and acc["top1_agreement"] == 0.75
    assert Budget.parse("top1-agree>=0.7").met(Budget.parse("top1-agree>=0.7").measure(acc))
    # no labelled data: agreement over the feeds' own class scores (here 1 of 2 differs)
    acc = measure_candidate(None, feeds, [logits[[0]], logits[[3]]], runner=runner(flipped))
    assert acc["top1_agreement"] == 0.5 and "top1" not in acc
    # outputs that are not class scores: no agreement, and a budget asking for it says why
    acc = measure_candidate(None, feeds[:1], [np.zeros((1, 4, 3))], runner=lambda _m: lambda f: [np.zeros((1, 4, 3))])
    with pytest.raises(CompileError, match="top1-agree needs"):
        Budget.parse("top1-agree>=0.9").measure(acc)
