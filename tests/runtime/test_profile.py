import csv
import json

import numpy as np
import pytest

from edgeattn.runtime import InputError, load
from edgeattn.runtime.backends.ort import parse_trace
from edgeattn.runtime.report import OP_COLUMNS, write_csv, write_json


@pytest.fixture
def report(artifact):
    s = load(artifact, threads=1)
    calls = []
    rep = s.benchmark(runs=12, warmup=2, per_op=True, progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (14, 14) and len(calls) == 14
    return rep


def test_benchmark_report(report):
    for key in ("model", "target", "runs", "warmup", "threads", "latency", "throughput_per_s",
                "peak_rss_mb", "ops"):
        assert key in report
    assert report["model"] == "tiny-attn" and report["target"] == "ort"
    assert report["runs"] == 12 and report["warmup"] == 2 and report["threads"] == 1
    lat = report["latency"]
    assert set(lat) == {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms"}
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert report["throughput_per_s"] > 0 and report["peak_rss_mb"] > 1
    assert report["batch"] == 2  # example_dims batch


def test_per_op_rows(report):
    rows = report["ops"]
    assert rows
    types = {r["op_type"] for r in rows}
    assert {"MatMul", "Softmax"} <= types
    assert all(r["calls"] >= 1 and r["total_ms"] >= 0 for r in rows)
    assert [r["total_ms"] for r in rows] == sorted((r["total_ms"] for r in rows), reverse=True)
    assert abs(sum(r["percent"] for r in rows) - 100.0) < 1e-6


def test_no_per_op_by_default(artifact):
    rep = load(artifact).benchmark(runs=3, warmup=0)
    assert rep["ops"] == [] and rep["runs"] == 3


@pytest.mark.parametrize("kwargs, needle", [
    ({"runs": 0}, "runs=0 is not an int ≥ 1"), ({"runs": "3"}, "runs='3'"), ({"warmup": 1.5}, "warmup=1.5"),
    ({"warmup": -1}, "warmup=-1"), ({"progress": 1}, "progress=1 is not callable"),
])
def test_bad_benchmark_arguments(artifact, kwargs, needle):
    # named as the caller's mistake, not passed on to the backend (which blamed the artifact)
    with pytest.raises(InputError, match=needle):
        load(artifact).benchmark(**kwargs)


@pytest.mark.parametrize("kwargs, needle", [
    ({"threads": 0}, "threads=0"), ({"threads": 100000}, "threads=100000"), ({"threads": -1}, "threads=-1"),
    ({"threads": "2"}, "threads='2'"), ({"threads": True}, "threads=True"),
])
def test_bad_thread_counts(artifact, kwargs, needle):
    # 100000 hung the process while onnxruntime started its pool; -1 was accepted
    with pytest.raises(InputError, match=needle):
        load(artifact, **kwargs)


def test_bad_path_and_seed(artifact):
    with pytest.raises(InputError, match="is of type int"):
        load(123)
    with pytest.raises(InputError, match="seed=-1"):
        load(artifact).example_feeds(seed=-1)


def test_parse_trace_aggregates():
    ev = [{"cat": "Node", "name": "mm_kernel_time", "dur": 3000, "args": {"op_name": "MatMul"}},
          {"cat": "Node", "name": "mm_kernel_time", "dur": 1000, "args": {"op_name": "MatMul"}},
          {"cat": "Node", "name": "mm_fence_before", "dur": 50, "args": {"op_name": "MatMul"}},
          {"cat": "Node", "name": "sm_kernel_time", "dur": 1000, "args": {"op_name": "Softmax"}},
          {"cat": "Session", "name": "model_run", "dur": 9000}]
    rows = parse_trace(ev)
    assert [(r["op_type"], r["calls"]) for r in rows] == [("MatMul", 2), ("Softmax", 1)]
    assert rows[0]["total_ms"] == pytest.approx(4.0) and rows[0]["mean_ms"] == pytest.approx(2.0)
    assert rows[0]["percent"] == pytest.approx(80.0)


def test_writers(report, tmp_path):
    tmp_path = tmp_path / "reports"
    jp = write_json(report, tmp_path / "out" / "r.json")
    assert json.loads(jp.read_text())["latency"]["p50_ms"] == report["latency"]["p50_ms"]
    cp = write_csv(report, tmp_path / "r.csv")
    lines = cp.read_text().split("\n\n")
    summary = dict(csv.reader(lines[0].splitlines()))
    assert summary["metric"] == "value" and float(summary["p99_ms"]) == pytest.approx(report["latency"]["p99_ms"])
    ops = list(csv.DictReader(lines[1].splitlines()))
    assert tuple(ops[0]) == OP_COLUMNS and len(ops) == len(report["ops"])
    assert {o["op_type"] for o in ops} >= {"MatMul"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.csv"]  # no temp files left


def test_peak_memory_is_the_process_own_not_its_parents():
    # ru_maxrss survives exec on Linux: every bench worker reported the bench parent's peak
    import subprocess
    import sys

    held = np.ones(400 * 2**20 // 8)  # 400 MB resident in this (parent) process
    code = "from edgeattn.runtime.profile import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < child < 200 and held.sum() > 0
