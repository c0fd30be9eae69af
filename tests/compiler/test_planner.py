"""--rewrite auto: the per-layer search stays inside the budget and falls back when it cannot."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeattn.compiler import planner
from edgeattn.compiler.compile import compile_model
from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.plan import Budget, RewriteStep, build_plan

from ..passes.conftest import canonical_tiny_deit


@pytest.fixture(scope="module")
def deit():
    return canonical_tiny_deit()


def _saved(model: ir.Model, exact: int) -> float:
    """Fraction of the GEMM FLOPs removed (what the fake meters charge for)."""
    return 1.0 - graph_flops(model) / exact


def test_search_finds_the_largest_schedule_inside_the_budget(deit):
    # A meter whose "cosine" falls with the FLOPs removed: the budget allows removing 40%.
    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact), "max_abs_error": 0.0}
    steps, record = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, families="tome")
    assert [s.name for s in steps] == ["tome"]
    chosen = record["chosen"]
    assert len(chosen) == 3 and record["grid_step"] == 1 and record["protect"] == 2
    assert all(t["ok"] == (t["value"]["cosine"] >= 0.98) for t in record["trials"])
    best = min((t for t in record["trials"] if t["ok"]), key=lambda t: t["flops"])
    assert best["r"] == [record["embed_r"]] + chosen and record["flops_chosen"] == best["flops"] < exact
    # no single layer can take one more step inside the budget
    full = [record["embed_r"]] + chosen  # the searched schedule: before block 0, then after each block
    for i in range(4):
        more = [v + (j == i) for j, v in enumerate(full)]
        trial = next((t for t in record["trials"] if t["r"] == more), None)
        assert trial is None or not trial["ok"] or trial["flops"] == best["flops"]


def test_search_with_nothing_affordable_returns_no_plan(deit):
    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 if _saved(m, exact) == 0 else 0.5, "max_abs_error": 0.0}
    steps, record = planner.search(deit, Budget.parse("cosine>=0.99"), meter, lambda _: None)
    assert steps == [] and "no layer can merge" in record["reason"] and "no layer can prune" in record["reason"]


def test_auto_finds_the_free_merge_after_the_last_attention(deit, tmp_path, monkeypatch):
    """Only the class/distillation tokens reach the logits after the last attention, so merging
    patch tokens there is exact: a near-zero max-abs budget admits that layer and no other.
    (Sites are free here: a real site cost would rightly refuse a merge that saves no GEMM.)"""
    monkeypatch.setattr(planner, "site_cost_flops", lambda *a: {"flops": 0.0})
    path = tmp_path / "deit.onnx"
    ir.save(deit, path)
    m = compile_model(str(path), "ort", tmp_path / "a", rewrites=["auto:families=tome"], budget="max-abs<=1e-5")
    search = m["plan"]["search"]
    assert search["embed_r"] == 0 and search["chosen"][:2] == [0, 0] and search["chosen"][2] > 0
    assert m["accuracy"]["max_abs_error"] <= 1e-5
    # shipped only if it also measured faster than the exact graph; either way the reason is recorded
    assert m["plan"]["accepted"] or "no measured speedup" in m["plan"]["reason"]
    if m["plan"]["accepted"]:  # checked on inputs that no choice measured
        held = m["plan"]["held_out"]
        assert held["seeds"] == [2000, 2001, 2002, 2003] and held["max_abs_error"] <= 1e-5


def test_auto_without_sites_ships_the_exact_graph(tmp_path):
    from ..tiny_models import tiny_causal_attention_onnx

    path = tiny_causal_attention_onnx(tmp_path / "c.onnx")
    m = compile_model(str(path), "ort", tmp_path / "a", rewrites=["auto"])
    assert not m["plan"]["accepted"] and "causal attention" in m["plan"]["reason"]
    assert "shipped the exact graph" in m["plan"]["reason"]


def test_auto_is_alone(tmp_path):
    with pytest.raises(CompileError, match="cannot be combined"):
        compile_model("x.onnx", "ort", tmp_path / "a", rewrites=["auto", "tome:r=2"])


def test_probe_picks_proportional_attention_by_margin(deit):
    """A meter that penalises the +log(size) masks: the probe must switch them off."""
    exact = graph_flops(deit)

    def meter(m):
        masked = any(len(n.inputs) > 3 and n.inputs[3] is not None for n in m.graph if n.op_type == "Attention")
        return {"cosine": 1.0 - 0.05 * _saved(m, exact) - (0.01 if masked else 0.0), "max_abs_error": 0.0}

    steps, record = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, families="tome")
    assert record["prop_attn"] is False and steps[0].settings["prop_attn"] == 0
    assert {t["prop_attn"] for t in record["trials"][:2]} == {True, False}


def test_cls_prune_search_stays_inside_the_budget_and_skips_hopeless_layers(deit):
    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact), "max_abs_error": 0.0}
    steps, record = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, families="cls-prune")
    assert [s.name for s in steps] == ["cls-prune"] and record["family"] == "cls-prune"
    assert all(t["ok"] == (t["value"]["cosine"] >= 0.98) for t in record["trials"])
    best = min((t for t in record["trials"] if t["ok"]), key=lambda t: t["flops"])
    assert record["flops_chosen"] == best["flops"] < exact
    layers, keeps = steps[0].settings["layers"], steps[0].settings["keep"]
    assert layers == sorted(layers) and 2 not in layers  # never after the last block
    # the chosen site's keep cannot go one grid step lower inside the budget
    last = {**{str(i): k for i, k in zip(layers, keeps)}}
    lower = {int(i): k for i, k in last.items()} | {layers[-1]: keeps[-1] - 1 / 16}
    trial = next((t for t in record["trials"] if t["keep"] == lower), None)
    assert trial is None or not trial["ok"]


@pytest.mark.parametrize("family", ["cls-prune", "window", "pool"])
def test_family_search_on_a_model_it_cannot_rewrite(family):
    """A causal decoder has no class token to prune by and no patch grid to window."""
    from ..tiny_models import tiny_causal_attention_onnx  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        model = ir.load(tiny_causal_attention_onnx(Path(tmp) / "c.onnx"))
    steps, record = planner.search(model, Budget.parse("cosine>=0.9"), lambda m: {"cosine": 1.0}, lambda _: None,
                                   families=family)
    assert steps == [] and "no schedule to search" in record["reason"]


def test_window_search_keeps_the_windows_the_budget_affords(deit):
    """A meter charging 0.01 cosine per windowed site (a windowed site with prefix tokens has a
    second Attention for them): one window fits the budget, two do not."""
    windowed = lambda m: sum(n.op_type == "Attention" for n in m.graph) - 3
    meter = lambda m: {"cosine": 1.0 - 0.01 * windowed(m), "max_abs_error": 0.0}
    steps, record = planner.search(deit, Budget.parse("cosine>=0.985"), meter, lambda _: None, families="window")
    assert record["family"] == "window" and record["options"] == [2]  # the tiny DeiT's 4×4 grid
    assert steps == [RewriteStep("window", {"window": [2], "layers": [0]})]
    assert record["alone"] == [2, 2, 2] and record["flops_chosen"] < record["flops_exact"]
    assert all(t["ok"] == (sum(map(bool, t["windows"])) <= 1) for t in record["trials"])
    built = build_plan(deit, steps, lambda _: None)[0]
    assert windowed(built) == 1


def test_families_are_chosen_by_measured_latency(deit, monkeypatch):
    """FLOPs pick one family, the (stubbed) clock the other: the clock wins and is recorded."""
    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact), "max_abs_error": 0.0}
    budget = Budget.parse("cosine>=0.98")
    by_flops, _ = planner.search(deit, budget, meter, lambda _: None)
    other = "cls-prune" if by_flops[0].name == "tome" else "tome"
    is_tome = lambda m: any(n.op_type == "ScatterElements" for n in m.graph)  # the merge's scatter-add
    clock = lambda models, feeds: [1.0 if is_tome(m) == (other == "tome") else 2.0 for m in models]
    monkeypatch.setattr(planner, "time_models", clock)
    monkeypatch.setattr(planner, "site_cost_flops", lambda *a: {"flops": 0.0})
    feeds = {"pixel_values": np.zeros((1, 3, 32, 32), np.float32)}
    steps, record = planner.search(deit, budget, meter, lambda _: None, feeds=feeds)
    assert steps[0].name == other == record["family"]
    assert record["families"]["chosen_by"].startswith("measured latency")
    assert {n: record["families"][n]["latency_ms"] for n in ("tome", "cls-prune")}[other] == 1.0


def test_unknown_family_is_one_clear_error(deit):
    with pytest.raises(CompileError, match="unknown auto family 'bogus'"):
        planner.search(deit, Budget.parse("cosine>=0.98"), lambda m: {}, lambda _: None, families="tome,bogus")


def test_validation_backs_off_toward_the_exact_graph(deit):
    """A validation cosine that only plans keeping enough FLOPs reach: the pick is backed off
    (the family's `safer` step) until it passes, and no further."""
    from edgeattn.compiler import search_prune, search_tome  # noqa: PLC0415

    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact), "max_abs_error": 0.0}
    for family, module in (("tome", search_tome), ("cls-prune", search_prune)):
        steps, record = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, families=family)
        pick = graph_flops(build_plan(deit, steps, lambda _: None)[0])
        line = (pick + exact) / 2
        valid = lambda m: 1.0 if graph_flops(m) >= line else 0.0
        backed, report = planner.validated(deit, steps, record, valid, 0.99, lambda _: None)
        assert report["passed"] and not report["checks"][0]["ok"] and report["checks"][-1]["ok"]
        got = graph_flops(build_plan(deit, backed, lambda _: None)[0])
        assert line <= got < exact
        before = module.safer
        # the step before the one that passed was below the line: it backed off no further than needed
        prev = [RewriteStep(**c["rewrites"][0]) for c in report["checks"]][-2]
        assert graph_flops(build_plan(deit, [prev], lambda _: None)[0]) < line and before(
            [prev])[0].to_dict() == backed[0].to_dict()
    none, report = planner.validated(deit, steps, record, lambda m: 0.0, 0.99, lambda _: None, max_checks=3)
    assert none == [] and not report["passed"] and len(report["checks"]) == 3


def test_safer_steps_end_at_the_exact_graph():
    from edgeattn.compiler import search_prune, search_tome, search_window  # noqa: PLC0415

    steps = [RewriteStep("cls-prune", {"keep": [0.25, 0.5], "layers": [0, 3]})]
    seen = []
    while steps:
        seen.append(steps[0].settings["keep"])
        steps = search_prune.safer(steps)
    assert seen[:3] == [[0.25, 0.5], [0.25], [0.3125]] and seen[-1] == [0.9375]
    steps, seen = [RewriteStep("window", {"window": [4, 2, 8], "layers": [0, 1, 3]})], []
    while steps:
        seen.append(steps[0].settings["layers"])
        steps = search_window.safer(steps)
    assert seen == [[0, 1, 3], [0, 3], [3]]
    steps, count = [RewriteStep("tome", {"r": [8, 0, 3], "embed_r": 4, "prop_attn": 0})], 0
    while steps:
        count += 1
        steps = search_tome.safer(steps)
    assert count <= 12


def test_a_costly_site_trades_merge_sites_for_flops(deit):
    """With each merge site charged a fifth of the model's FLOPs, the tome search ends with fewer
    sites than without, every trial still inside the budget it reports. (The meter rules out the
    merge before the first block, which alone would reach the budget.)"""
    from edgeattn.compiler import search_tome  # noqa: PLC0415

    exact = graph_flops(deit)
    embed = lambda m: any("_tome_embed" in name for name in m.graph.initializers)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact) - 0.1 * embed(m), "max_abs_error": 0.0}
    budget = Budget.parse("cosine>=0.98")
    free, rec0 = search_tome.search(deit, budget, meter, lambda _: None)
    costly, rec1 = search_tome.search(deit, budget, meter, lambda _: None, site_cost=0.2 * exact)
    sites = lambda st: sum(1 for v in [st[0].settings["embed_r"], *st[0].settings["r"]] if v)
    assert sites(costly) < sites(free) and rec1["site_cost"] == 0.2 * exact
    assert all(t["ok"] == (t["value"]["cosine"] >= 0.98) for t in rec1["trials"])


def test_the_fewest_flops_schedule_is_a_finalist_when_sites_are_charged(deit, monkeypatch):
    """With sites charged, each family's fewest-FLOPs trial is timed too; a clock that favours
    fewer FLOPs picks it, and the record says so. (No merge before the first block, as above.)"""
    exact = graph_flops(deit)
    embed = lambda m: any("_tome_embed" in name for name in m.graph.initializers)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact) - 0.1 * embed(m), "max_abs_error": 0.0}
    monkeypatch.setattr(planner, "site_cost_flops", lambda *a: {"flops": 0.2 * exact})
    monkeypatch.setattr(planner, "time_models", lambda models, feeds: [graph_flops(m) / exact for m in models])
    feeds = {"pixel_values": np.zeros((1, 3, 32, 32), np.float32)}
    steps, record = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, feeds=feeds,
                                   families="tome")
    fewest = min(t["flops"] for t in record["trials"] if t["ok"])
    assert "tome (fewest FLOPs)" in record["families"] and record["pick"] == "fewest FLOPs"
    assert graph_flops(build_plan(deit, steps, lambda _: None)[0]) == fewest == record["flops_chosen"]


@pytest.mark.parametrize("cap", [0, 3, 6, 100])
def test_per_layer_schedule_returns_the_cheapest_measured_inside_even_when_cut_short(cap):
    """Levels cost: each level saves 10 FLOPs, the budget allows 5 levels in all. Whatever the
    cap, the result is a measured schedule inside the budget with the fewest FLOPs of those
    measured; uncapped, it uses the whole budget."""
    from edgeattn.compiler.search_base import per_layer_schedule  # noqa: PLC0415

    measured = []

    def run(schedule):
        if len(measured) >= cap:
            return {"ok": False, "flops": None}
        measured.append((schedule, sum(schedule) <= 5))
        return {"ok": sum(schedule) <= 5, "flops": 100 - 10 * sum(schedule)}

    best, flops, alone = per_layer_schedule(run, 4, 3, 0.0, lambda: len(measured) >= cap)
    if cap == 0:
        assert best == (0, 0, 0, 0) and flops is None
        return
    inside = [sch for sch, ok in measured if ok]
    assert best in inside and flops == 100 - 10 * sum(best) == min(100 - 10 * sum(s) for s in inside)
    if cap == 100:
        assert sum(best) == 5 and alone == [3, 3, 3, 3]


def _matmul_chain(length: int) -> ir.Model:
    """y = x · W · W · … (`length` 64×64 MatMuls)."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    w = numpy_helper.from_array(np.eye(64, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}" if i + 1 < length else "y"])
             for i in range(length)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_time_models_runs_each_graph_in_its_own_worker():
    """The planner's timer (one ORT worker process per graph, interleaved rounds): 200 MatMuls
    in a chain are not timed faster than one."""
    feeds = {"x": np.ones((1, 64), np.float32)}
    light_ms, heavy_ms = planner.time_models([_matmul_chain(1), _matmul_chain(200)], feeds, rounds=2)
    assert 0 < light_ms < heavy_ms


@pytest.mark.parametrize("family,setting", [("agent", "agents"), ("hilo", "window")])
def test_opt_in_level_families_search_per_layer(deit, family, setting):
    """agent and hilo search per-layer values from their ladder like window does: the cheapest
    measured schedule inside the budget, one that builds to the FLOPs it reports; `safer`
    walks it back to the exact graph one layer at a time."""
    import importlib  # noqa: PLC0415

    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.5 * _saved(m, exact), "max_abs_error": 0.0}
    steps, record = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, families=family)
    assert record["family"] == family and steps and steps[0].name == family
    assert all(t["ok"] == (t["value"]["cosine"] >= 0.98) for t in record["trials"])
    built = build_plan(deit, steps, lambda _: None)[0]
    assert graph_flops(built) == record["flops_chosen"] < exact
    assert 1.0 - 0.5 * _saved(built, exact) >= 0.98
    assert not any(t["ok"] and t["flops"] < record["flops_chosen"] for t in record["trials"])
    module = importlib.import_module(planner.FAMILIES[family])
    layers = []
    while steps:
        layers.append(len(steps[0].settings["layers"]))
        assert len(steps[0].settings[setting]) == layers[-1]
        steps = module.safer(steps)
    assert layers == list(range(layers[0], 0, -1))


def test_head_prune_family_bisects_the_head_count(deit):
    """head-prune (opt-in) takes the largest head count inside the budget, with calibration
    data from the planner; its trials and `safer` count heads."""
    from edgeattn.compiler import search_heads  # noqa: PLC0415

    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.1 * _saved(m, exact), "max_abs_error": 0.0}
    calib = lambda: [{"pixel_values": np.random.default_rng(i).standard_normal((2, 3, 32, 32)).astype(np.float32)}
                     for i in range(2)]
    steps, record = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, families="head-prune",
                                   calibration=calib)
    k = steps[0].settings["heads"]
    assert record["family"] == "head-prune" and 1 < k == record["chosen"] < record["heads_total"] - 3
    ok = {t["heads"]: t["ok"] for t in record["trials"]}
    assert ok[k] and ok.get(k + 1, False) is False
    assert graph_flops(build_plan(deit, steps, lambda _: None, calib)[0]) == record["flops_chosen"] < exact
    assert search_heads.safer(steps)[0].settings == {"heads": k - 1}
    assert search_heads.safer([RewriteStep("head-prune", {"heads": 1})]) is None
    none, rec = planner.search(deit, Budget.parse("cosine>=0.98"), meter, lambda _: None, families="head-prune")
    assert none == [] and "no calibration data" in rec["reason"]


def test_compose_adds_a_second_family_on_top_of_the_pick(deit):
    """compose=1: the other families are searched on the pick's graph with the same meter (so the
    budget covers both); without feeds the combination with fewer FLOPs is kept, and validation
    backs off the second family before the first. (head-prune then window compose; token-changing
    rewrites leave masks or grids the others refuse, and say so.)"""
    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact), "max_abs_error": 0.0}
    calib = lambda: [{"pixel_values": np.random.default_rng(i).standard_normal((2, 3, 32, 32)).astype(np.float32)}
                     for i in range(2)]
    budget = Budget.parse("cosine>=0.98")
    kw = {"families": "window,head-prune", "calibration": calib}
    alone, rec0 = planner.search(deit, budget, meter, lambda _: None, **kw)
    both, rec = planner.search(deit, budget, meter, lambda _: None, compose=1, **kw)
    assert rec0["family"] == rec["family"] == "head-prune" and "composed" not in rec0
    comp = rec["composed"]
    assert both[:1] == alone and comp["first_steps"] == 1 and comp["family"] == "window"
    assert [s.name for s in both] == ["head-prune", "window"]
    built = build_plan(deit, both, lambda _: None, calib)[0]
    assert graph_flops(built) < graph_flops(build_plan(deit, alone, lambda _: None, calib)[0])
    assert 1.0 - 0.05 * _saved(built, exact) >= 0.98
    backed = planner._safer(rec)(both)
    assert backed[0] == both[0] and len(backed[1].settings["layers"]) == len(both[1].settings["layers"]) - 1
    _, rec = planner.search(deit, budget, meter, lambda _: None, families="cls-prune,window", compose=1)
    assert rec["composed"]["family"] is None and "not one square grid" in rec["composed"]["tried"]["window"]["reason"]


def test_pool_search_pools_after_the_earliest_layers_inside_the_budget(deit):
    exact = graph_flops(deit)
    meter = lambda m: {"cosine": 1.0 - 0.05 * _saved(m, exact), "max_abs_error": 0.0}
    for floor in (0.99, 0.975):
        steps, record = planner.search(deit, Budget.parse(f"cosine>={floor}"), meter, lambda _: None, families="pool")
        assert [s.name for s in steps] == ["pool"] and all(t["ok"] == (t["value"]["cosine"] >= floor) for t in record["trials"])
        layers = steps[0].settings["layers"]
        first = [t for t in record["trials"] if len(t["layers"]) == 1]
        # every earlier single pool (from −1, on the embeddings) was measured over the budget; the chosen one is inside
        assert [t["ok"] for t in first if t["layers"][0] < layers[0]] == [False] * (layers[0] + 1)
        assert record["flops_chosen"] < exact
    from edgeattn.compiler import search_pool  # noqa: PLC0415

    assert search_pool.safer([RewriteStep("pool", {"layers": [0, 2]})]) == [RewriteStep("pool", {"layers": [0]})]
    assert search_pool.safer([RewriteStep("pool", {"layers": [1]})]) is None
