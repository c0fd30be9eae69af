"""Rewrite plans under a measured budget: parse, accept, and fall back to the exact graph."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from edgeattn import passes, runtime
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.pipeline import check_pipeline, run_pipeline
from edgeattn.compiler.plan import Budget, apply_plan, check_sites, parse_rewrite

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


# Bad --rewrite / --budget / --pipeline input: one CompileError naming the problem and the fix,
# raised before the export where the input alone shows it (the audit's failures 1-5).


def test_rewrite_setting_of_the_wrong_type_names_rewrite_setting_and_type():
    with pytest.raises(CompileError) as e:
        parse_rewrite("tome:r=abc")
    assert e.value.problem == "tome: setting r='abc' is not an integer (or list of integers, one per layer)"
    assert e.value.fix == "e.g. tome:r=8"
    with pytest.raises(CompileError, match=r"pool: setting k='x' is not an integer — e.g. pool:k=2"):
        parse_rewrite("pool:k=x")
    with pytest.raises(CompileError, match=r"cls-prune: setting keep='0.5,abc' is not a number \(or list"):
        parse_rewrite("cls-prune:keep=0.5,abc")
    with pytest.raises(CompileError, match=r"tome: setting prop_attn='maybe' is not 0 or 1"):
        parse_rewrite("tome:prop_attn=maybe")
    with pytest.raises(CompileError, match=r"sink-window needs sink ≥ 0.* — change the setting in --rewrite"):
        parse_rewrite("sink-window:sink=-1")  # the pass's own range check, still before any export
    assert parse_rewrite("tome:prop_attn=false").settings == {"prop_attn": 0}


@pytest.mark.parametrize("name", sorted(passes.APPROXIMATE))
def test_unknown_setting_lists_the_rewrites_settings(name):
    known = passes.settings(name)
    assert known and None not in known.values(), f"{name}: declare each setting's kind in SETTINGS"
    assert set(getattr(passes.pass_class(name), "SETTINGS")) == set(known)  # SETTINGS matches __init__
    with pytest.raises(CompileError) as e:
        parse_rewrite(f"{name}:foo=1")
    assert e.value.problem == f"{name} has no setting 'foo'"
    assert e.value.fix.startswith(f"its settings: {', '.join(known)} (e.g. {name}:")


def test_unknown_auto_setting_and_family_fail_at_parse():
    with pytest.raises(CompileError, match="auto has no setting 'foo' — its settings: max_evals, families, compose"):
        parse_rewrite("auto:foo=1")
    with pytest.raises(CompileError, match="unknown auto family 'nope'"):
        parse_rewrite("auto:families=tome,nope")


@pytest.mark.parametrize("spec", [
    "window:window=2,4,stride=1,4,layers=0,2", "tome:r=32,32,32,32,embed_r=16,prop_attn=0",
    "cls-prune:keep=0.5,0.5625,layers=1,2", "pool:layers=embed,0", "hilo:window=6,pool=2",
    "agent:agents=49,shortcut=0", "head-prune:ratio=0.05", "auto:families=tome,cls-prune,max_evals=40"])
def test_valid_specs_still_parse(spec):
    parse_rewrite(spec)


def test_bad_layers_fail_at_parse():
    with pytest.raises(CompileError) as e:
        parse_rewrite("tome:r=4,layers=3-1")
    assert e.value.problem == "tome: layers=3-1 has an empty range '3-1'" and "layers=1-3" in e.value.fix
    with pytest.raises(CompileError, match=r"tome: bad layers '-1' — .*only pool takes -1"):
        parse_rewrite("tome:layers=-1")


def test_layers_outside_the_models_sites_fail_before_the_plan_is_built():
    from ..passes.conftest import canonical_tiny_deit  # noqa: PLC0415

    model = canonical_tiny_deit()  # 3 attention sites
    with pytest.raises(CompileError) as e:
        check_sites(model, [parse_rewrite("tome:r=4,layers=50")])
    assert e.value.problem == "tome: layer 50 is outside the model's 3 attention sites (0-2)"
    assert e.value.fix == "give site indices 0-2, e.g. layers=0-2"
    with pytest.raises(CompileError, match=r"pool: layers 3,4 are outside .* -1 \(the embeddings\) and 0-2"):
        check_sites(model, [parse_rewrite("pool:layers=-1,3-4")])
    check_sites(model, [parse_rewrite("pool:layers=-1,0-2"), parse_rewrite("tome:r=1,layers=2")])
    with pytest.raises(CompileError, match="outside the model's 3 attention sites"):
        apply_plan(model, [parse_rewrite("tome:r=4,layers=50")], Budget.parse("cosine>=0.9"),
                   lambda _m: pytest.fail("measured a plan with a missing layer"), lambda _m: None)


def test_budget_threshold_that_is_not_a_number():
    with pytest.raises(CompileError) as e:
        Budget.parse("cosine>=1.2.3")
    assert e.value.problem == "--budget 'cosine>=1.2.3': '1.2.3' is not a number"
    assert e.value.fix == "give the threshold as a number, e.g. cosine>=0.99"
    with pytest.raises(CompileError, match=r"'--1' is not a number — .* e.g. top1-drop<=0.5"):
        Budget.parse("cosine>=0.99,top1-drop<=--1")


def test_unknown_pipeline_is_a_compile_error_before_the_model_loads(tmp_path):
    with pytest.raises(CompileError) as e:
        check_pipeline("foo")
    assert not isinstance(e.value, KeyError)
    assert e.value.problem == "unknown pipeline 'foo'" and "default, none" in e.value.fix
    with pytest.raises(CompileError, match="unknown pipeline 'foo'"):
        run_pipeline(None, "foo")
    with pytest.raises(CompileError, match="unknown pipeline 'foo'"):  # not "file not found": checked first
        compile_model(str(tmp_path / "missing.onnx"), "ort", tmp_path / "a", pipeline="foo")
    assert not (tmp_path / "a").exists()


def test_cli_layers_outside_the_model_is_one_line_and_no_artifact(tmp_path):
    import onnx_ir as ir  # noqa: PLC0415

    from ..passes.conftest import canonical_tiny_deit  # noqa: PLC0415

    path = tmp_path / "deit.onnx"
    ir.save(canonical_tiny_deit(), path)
    r = edgeattn("compile", str(path), "-o", str(tmp_path / "a"), "--rewrite", "tome:r=1,layers=50")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "layer 50 is outside the model's 3 attention sites" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "a").exists()
    r = edgeattn("compile", str(path), "-o", str(tmp_path / "a"), "--rewrite", "tome:r=abc")
    assert r.returncode == 2 and "tome: setting r='abc' is not an integer" in r.stderr and not (tmp_path / "a").exists()
