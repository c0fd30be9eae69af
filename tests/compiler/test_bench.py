"""`edgeattn bench` end to end on the small real model (few rounds: this checks the machinery,
not the speed; speed claims live in tests/benchmarks)."""

from __future__ import annotations

import csv
import json

import pytest

from .test_cli import edgeattn


def test_bench_digits_vit(tmp_path):
    r = edgeattn("bench", "digits-vit", "--targets", "ort", "--rounds", "2", "--runs", "3", "-o", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = {row["candidate"]: row for row in result["rows"]}
    assert {"torch eager", "ORT plain export", "edgeattn ort"} <= set(rows)
    ours = rows["edgeattn ort"]
    assert ours["samples"] == 6 and ours["best_ms"] > 0 and ours["p50_ms"] <= ours["p90_ms"]
    assert ours["max_abs_error"] <= 1e-4 and ours["top1"] >= 0.95
    assert rows["ORT plain export"]["speedup_vs_ort_plain"] == 1.0
    assert 0 < ours["fraction_of_peak"] < 1.5 and result["gemm_peak_gflops"]["fp32"] > 1
    assert result["gflop"] > 0.01
    with open(tmp_path / "b" / "bench.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    page = (tmp_path / "b" / "bench.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "edgeattn ort" in page
    assert "× torch" in r.stdout or "torch" in r.stdout


def test_bench_unknown_target_precision_note(monkeypatch, tmp_path):
    """A precision the target does not build is skipped with a note, not compiled (checked at the
    planning step: a whole bench run took 30 s of the test suite for this)."""
    from types import SimpleNamespace

    from edgeattn.compiler import bench

    built = []

    def fake(src, target, out, pipeline, options, label, kind, threads, *rest, **kw):
        built.append((label, target, options.get("precision", "fp32")))
        return SimpleNamespace(label=label, note=None, quantization=None, plan=None)

    monkeypatch.setattr(bench, "_artifact", fake)
    src = SimpleNamespace(zoo_model=None, kind="onnx")  # a user's .onnx: no torch baseline to build
    cands, notes = bench.plan_candidates(src, "model.onnx", ["ort"], ["fp32", "bf16"], tmp_path, False, 1, lambda *_: None)
    assert any(n.startswith("ort bf16: skipped (target supports") for n in notes), notes
    assert ("edgeattn ort", "ort", "fp32") in built and ("edgeattn ort", "ort", "bf16") not in built


def test_bf16_baselines_include_openvino_on_the_plain_export(monkeypatch, tmp_path):
    """With bf16 asked, the peer is OpenVINO's own bf16 on the plain export (skipped with a note where
    the CPU has no BF16), beside the fp32 baselines."""
    from types import SimpleNamespace

    from edgeattn.compiler import bench
    from edgeattn.compiler.frontend import load_source
    from edgeattn.targets import openvino

    if not openvino.available()[0]:
        pytest.skip("openvino is not installed")
    built, cpu = [], {"bf16": True}

    def fake(src, target, out, pipeline, options, label, kind, threads, *rest, **kw):
        precision = options.get("precision", "fp32")
        built.append((label, target, precision))
        note = None if precision != "bf16" or cpu["bf16"] else "bf16 requested, but this CPU's plugin reports no BF16"
        return SimpleNamespace(label=label, note=note, quantization=None, plan=None)

    monkeypatch.setattr(bench, "_artifact", fake)
    src = load_source("digits-vit")
    cands, notes = bench.plan_candidates(src, "digits-vit", [], ["fp32", "bf16"], tmp_path, True, 1, lambda *_: None)
    assert ("OpenVINO plain export", "openvino", "bf16") in built and ("OpenVINO plain export", "openvino", "fp32") in built
    assert sum(c.label == "OpenVINO plain export" for c in cands) == 2 and not notes
    cpu["bf16"] = False
    cands, notes = bench.plan_candidates(src, "digits-vit", [], ["fp32", "bf16"], tmp_path, True, 1, lambda *_: None)
    assert sum(c.label == "OpenVINO plain export" for c in cands) == 1
    assert any(n.startswith("OpenVINO plain export bf16: skipped (bf16 requested") for n in notes)
    built.clear()
    bench.plan_candidates(src, "digits-vit", [], ["fp32"], tmp_path, True, 1, lambda *_: None)
    assert ("OpenVINO plain export", "openvino", "bf16") not in built


def test_each_plan_is_compared_with_the_exact_artifact_of_its_own_precision():
    """Labels repeat across precisions ("edgeattn ort" fp32 and int8): the plan row must divide by its own exact."""
    from edgeattn.compiler.bench import Candidate, summarize

    def cand(label, precision, medians, exact=None):
        c = Candidate(label, "ort", precision, [], "edgeattn" if label.startswith("edgeattn") else "baseline",
                      {"max_abs_error": 0.0, "cosine": 1.0})
        c.round_medians, c.times_ms, c.exact = medians, medians, exact
        return c

    ort_plain = cand("ORT plain export", "fp32", [4.0])
    fp32 = cand("edgeattn ort", "fp32", [2.0])
    int8 = cand("edgeattn ort", "int8", [1.0])
    rows = summarize([ort_plain, fp32, cand("edgeattn ort + plan", "fp32", [1.6], fp32), int8,
                      cand("edgeattn ort + plan", "int8", [0.5], int8)], flops=10**9, peaks={}, batch=1)
    plans = {r["precision"]: r["speedup_vs_exact"] for r in rows if r["candidate"].endswith("plan")}
    assert plans == {"fp32": pytest.approx(1.25), "int8": pytest.approx(2.0)}
    # and every plan or reduced precision against the target's exact fp32 artifact (issue 4's yardstick)
    vs_fp32 = {(r["candidate"], r["precision"]): r["speedup_vs_exact_fp32"] for r in rows}
    assert vs_fp32 == {("ORT plain export", "fp32"): None, ("edgeattn ort", "fp32"): None,
                       ("edgeattn ort + plan", "fp32"): pytest.approx(1.25), ("edgeattn ort", "int8"): pytest.approx(2.0),
                       ("edgeattn ort + plan", "int8"): pytest.approx(4.0)}


def test_baselines_are_credited_with_the_models_work():
    """A baseline's own manifest counts its plain export, whose attention MatMuls can lack shapes:
    its GFLOP/s must use the model's count (it did the same work), a plan its own smaller one."""
    from edgeattn.compiler.bench import Candidate, summarize

    plain = Candidate("ORT plain export", "ort", "fp32", [], "baseline", {})
    plan = Candidate("edgeattn ort + plan", "ort", "fp32", [], "edgeattn", {})
    plain.gemm_flops, plan.gemm_flops = 6 * 10**8, 5 * 10**8
    for c in (plain, plan):
        c.round_medians = c.times_ms = [1.0]
    rows = {r["candidate"]: r["gflops_per_s"] for r in summarize([plain, plan], flops=10**9, peaks={}, batch=1)}
    assert rows == {"ORT plain export": pytest.approx(1000.0), "edgeattn ort + plan": pytest.approx(500.0)}


def test_a_rerun_replaces_the_report_whole_and_a_failed_one_keeps_it(tmp_path, monkeypatch):
    from edgeattn.compiler import bench

    def fake_run(files):
        def run(spec, targets_, precisions, work, *rest):
            for name in files:
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).write_text(name)
            if "boom" in files:
                raise RuntimeError("boom")
            return {"model": spec}
        return run

    out = tmp_path / "b"
    for files in (["bench.json", "artifacts/openvino-fp32/x"], ["bench.json", "artifacts/ort-fp32/x"]):
        monkeypatch.setattr(bench, "_run_bench", fake_run(files))
        bench.run_bench("m", ["ort"], ["fp32"], out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["artifacts/ort-fp32/x", "bench.json"]
    monkeypatch.setattr(bench, "_run_bench", fake_run(["bench.json", "boom"]))
    with pytest.raises(RuntimeError):
        bench.run_bench("m", ["ort"], ["fp32"], out)
    assert (out / "artifacts/ort-fp32/x").is_file() and not (out / "boom").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folder left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bench.csv").write_text("my data")
    with pytest.raises(Exception, match="not an earlier bench report"):
        bench.run_bench("m", ["ort"], ["fp32"], mine)
    assert (mine / "bench.csv").read_text() == "my data"
