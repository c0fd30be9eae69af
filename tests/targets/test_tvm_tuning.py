"""TVM MetaSchedule tuning: tune the tiny attention model through compile_model, into a temporary
database; the artifact ships the records (with SHA-256) and still matches; a second compile reuses them.
The same through the CLI (`compile --tune-trials`, `tune`), with MetaSchedule's log kept off the terminal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed — pip install 'edgeattn[tvm]'")

from edgeattn import runtime  # noqa: E402
from edgeattn.compiler.compile import compile_model  # noqa: E402
from edgeattn.kernels import tvm_tuning  # noqa: E402
from edgeattn.targets import tvm as tvm_target  # noqa: E402

from ..tiny_models import D, H, S, tiny_attention_onnx  # noqa: E402

RECORDS = "tuning/database_tuning_record.json"
WORKLOADS = "tuning/database_workload.json"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tuning run (8 trials) of the tiny model into a temporary database; ~1 min on 2 cores.
    apply_tuning="all": the records of 8 trials on tiny kernels win or lose against the defaults by
    noise, and these tests are about shipping them (the timed choice: the CLI test and
    test_records_slower_than_the_default_schedule_are_not_used)."""
    root = tmp_path_factory.mktemp("tvm-tune")
    src = tiny_attention_onnx(root / "tiny.onnx")
    calls: list[tuple[int, int]] = []
    opts = {"tune_trials": 8, "tuning_db": str(root / "db"), "progress": lambda d, t: calls.append((d, t)),
            "apply_tuning": "all"}
    m = compile_model(str(src), "tvm", root / "art", target_options=opts)
    return {"root": root, "src": src, "manifest": m, "calls": calls, "db": root / "db"}


def test_database_location_is_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv(tvm_tuning.ENV_DB, raising=False)
    assert tvm_tuning.database_root({}) == tvm_tuning.DEFAULT_ROOT
    # From the source tree (as here): kernels/tvm_db.
    assert tvm_tuning.DEFAULT_ROOT.name == "tvm_db" and tvm_tuning.DEFAULT_ROOT.parent.name == "kernels"
    monkeypatch.setenv(tvm_tuning.ENV_DB, str(tmp_path / "env"))
    assert tvm_tuning.database_root({}) == tmp_path / "env"
    assert tvm_tuning.database_root({"tuning_db": str(tmp_path / "opt")}) == tmp_path / "opt"
    assert tvm_tuning.database_dir("llvm-x-2c", {}) == tmp_path / "env" / "llvm-x-2c"


def test_installed_package_defaults_to_the_user_cache(monkeypatch, tmp_path):
    installed = tmp_path / "site-packages" / "edgeattn" / "kernels" / "tvm_db"
    installed.mkdir(parents=True)
    monkeypatch.setattr(tvm_tuning, "_SOURCE_DB", installed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert tvm_tuning._default_root() == tmp_path / "cache" / "edgeattn" / "tvm_db"
    (installed.parent.parent / "pyproject.toml").write_text("")  # kernels/ beside pyproject.toml: a checkout
    assert tvm_tuning._default_root() == installed


def test_quiet_logs_keep_the_last_runs(tmp_path):
    parent = tmp_path / "logs" / "llvm-x-2c"
    for i in range(7):
        (parent / f"2020010{i}-000000-1").mkdir(parents=True)
    with tvm_tuning.quiet_logs(tmp_path, "llvm-x-2c") as run:
        assert run.is_dir() and run.parent == parent
        assert logging.getLogger(tvm_tuning.MS_LOGGER).level == logging.WARNING
    runs = sorted(p.name for p in parent.iterdir())
    assert len(runs) == tvm_tuning.KEEP_LOG_RUNS and run.name in runs and "20200106-000000-1" in runs
    assert "20200102-000000-1" not in runs


def test_tuning_monitor_follows_the_scheduler_log():
    states: list[dict] = []
    mon = tvm_tuning.TuningMonitor(states.append, tasks=3, total=4)

    def log(msg: str) -> None:
        mon.handle(logging.LogRecord(tvm_tuning.SCHEDULER_LOGGER + ".gradient_based", logging.INFO, "x", 1, msg, None, None))

    log('[task_scheduler.cc:174] Initializing Task #0: "matmul"')
    log('[task_scheduler.cc:195] TaskScheduler picks Task #1: "softmax"')
    log("[task_scheduler.cc:208] Sending 2 sample(s) to builder")
    log("[task_scheduler.cc:218] Sending 2 valid sample(s) to runner")  # not counted twice
    log("something else")  # ignored
    mon.measured(4, 1)
    mon.finish()
    assert [s["phase"] for s in states] == ["init", "tune", "tune", "tune", "done"]
    assert states[1]["task"] == 2 and states[1]["task_name"] == "softmax" and states[1]["tasks"] == 3
    assert states[2]["sent"] == 2 and states[3]["measured"] == 4 and states[3]["failed"] == 1 and states[3]["sent"] == 4
    bad = tvm_tuning.TuningMonitor(lambda st: 1 / 0, tasks=1, total=1)
    bad.measured(1, 0)  # a failing display is dropped, tuning goes on
    assert bad.on_update is None


def test_tune_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="tune_trials"):
        compile_model(str(tiny_attention_onnx(tmp_path / "t.onnx")), "tvm", tmp_path / "a",
                      target_options={"tune_trials": -1, "tuning_db": str(tmp_path / "db")})
    assert not (tmp_path / "a").exists() and not (tmp_path / "db").exists()
    with pytest.raises(ValueError, match="legalized"):
        tvm_target.tune(None, {})


@pytest.mark.slow
def test_tuning_writes_records_and_reports(tuned):
    m = tuned["manifest"]
    run = m["backend_options"]["tuning"]["run"]
    key = m["backend_options"]["target_key"]
    db_dir = tuned["db"] / key
    assert run["tuned"] is True and run["trials"] == 8 and run["tasks"] >= 1 and run["failed_trials"] == 0
    assert run["database"] == str(db_dir) and run["seconds"] > 0
    assert (db_dir / "database_tuning_record.json").stat().st_size > 0
    assert (db_dir / "database_workload.json").stat().st_size > 0
    assert tuned["calls"] and tuned["calls"][-1] == (8, 8)
    assert [d for d, _ in tuned["calls"]] == sorted(d for d, _ in tuned["calls"])


@pytest.mark.slow
def test_artifact_ships_records_and_still_matches(tuned):
    art = tuned["root"] / "art"
    m = json.loads((art / "manifest.json").read_text())
    assert m["payload"] == {"model": "model.so", "tuning_records": RECORDS, "tuning_workloads": WORKLOADS}
    assert set(m["files"]) == {"model.so", RECORDS, WORKLOADS}
    assert all(len(m["files"][f]["sha256"]) == 64 for f in m["files"])
    assert (art / RECORDS).stat().st_size > 0
    opts = m["backend_options"]
    assert opts["tuned"] is True and opts["tuning"]["applied"]["records"] >= 1
    assert m["accuracy"]["max_abs_error"] <= 1e-4
    sess = runtime.load(art)  # verifies every payload file's hash
    x = np.random.default_rng(3).standard_normal((1, S, H * D)).astype(np.float32)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(tuned["src"]), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(sess.run({"x": x})["y"] - ref).max() <= 1e-4


@pytest.mark.slow
def test_second_compile_reuses_the_database(tuned):
    before = (tuned["db"] / tuned["manifest"]["backend_options"]["target_key"] / "database_tuning_record.json").read_bytes()
    m = compile_model(str(tuned["src"]), "tvm", tuned["root"] / "again",
                      target_options={"tune_trials": 8, "tuning_db": str(tuned["db"]), "apply_tuning": "all"})
    run = m["backend_options"]["tuning"]["run"]
    assert run["trials"] == 0 and run["tasks_tuned"] == 0 and run["tasks_reused"] == run["tasks"]
    assert run["records_found"] == run["tasks"]
    assert m["backend_options"]["tuned"] is True and m["accuracy"]["max_abs_error"] <= 1e-4
    key = m["backend_options"]["target_key"]
    assert (tuned["db"] / key / "database_tuning_record.json").read_bytes() == before
    # A plain compile (no tune_trials) applies the same records.
    plain = compile_model(str(tuned["src"]), "tvm", tuned["root"] / "plain",
                          target_options={"tuning_db": str(tuned["db"]), "apply_tuning": "all"})
    assert plain["backend_options"]["tuned"] is True and "run" not in plain["backend_options"]["tuning"]
    assert RECORDS in plain["payload"].values()


def test_empty_database_builds_untuned(tmp_path):
    m = compile_model(str(tiny_attention_onnx(tmp_path / "t.onnx")), "tvm", tmp_path / "a",
                      target_options={"tuning_db": str(tmp_path / "db")})
    assert m["backend_options"]["tuned"] is False and m["payload"] == {"model": "model.so"}
    assert not (tmp_path / "db").exists()


def test_tune_with_no_trials_writes_no_database(tmp_path):
    # `--trials 0` only reports: it once left an empty database in the source checkout's kernels/tvm_db
    r = _cli("tune", str(tiny_attention_onnx(tmp_path / "t.onnx")), "--trials", "0", "--tuning-db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    assert "this model's tasks with a record: 0 of" in r.stdout and not (tmp_path / "db").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgeattn.compiler.cli", *args], capture_output=True, text=True,
                          env=env, timeout=1200)


@pytest.mark.slow
def test_cli_compile_with_tune_trials_then_tune(tmp_path):
    """`compile --target tvm --tune-trials 4 --tuning-db`, then `tune` fills more of the same database (~2 min on 2 cores)."""
    src = tiny_attention_onnx(tmp_path / "tiny.onnx")
    db, art = tmp_path / "db", tmp_path / "art"
    t0 = time.perf_counter()
    r = _cli("compile", str(src), "--target", "tvm", "--tune-trials", "4", "--tuning-db", str(db), "-o", str(art))
    assert r.returncode == 0, r.stderr
    m = json.loads((art / "manifest.json").read_text())
    opts = m["backend_options"]
    run, applied = opts["tuning"]["run"], opts["tuning"]["applied"]
    assert run["trials"] == 4 and run["budget"] == 4 and run["failed_trials"] == 0
    # Every record is either applied (and shipped) or measured slower than the default schedule.
    assert 1 <= applied["records"] + len(applied["slower_than_default"]) <= run["tasks"]
    assert opts["tuned"] is (applied["records"] > 0)
    if applied["records"]:
        assert m["payload"]["tuning_records"] == RECORDS and RECORDS in m["files"]
    assert m["accuracy"]["max_abs_error"] <= 1e-4
    key = opts["target_key"]
    log_dir = Path(run["log_dir"])
    assert log_dir.parent.parent == db / "logs" / key and any(log_dir.glob("*task_scheduler.log"))
    assert "picks Task" in next(log_dir.glob("*task_scheduler.log")).read_text()
    assert "task_scheduler.cc" not in r.stdout + r.stderr  # MetaSchedule's log stays in its file
    assert f"MetaSchedule log: {log_dir}" in r.stdout and "trials (budget 4)" in r.stdout
    x = np.random.default_rng(5).standard_normal((2, S, H * D)).astype(np.float32)  # batch 2: looped batch-1 calls
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(runtime.load(art).run({"x": x})["y"] - ref).max() <= 1e-4
    compile_s = time.perf_counter() - t0

    before, _ = tvm_tuning.count_records(db / key)
    r = _cli("tune", str(src), "--trials", "2", "--tuning-db", str(db))
    assert r.returncode == 0, r.stderr
    after, workloads = tvm_tuning.count_records(db / key)
    assert after == before + 2 and workloads == run["tasks"]
    assert f"database: {after} tuning records for {workloads} workloads in {db / key}" in r.stdout
    recorded = applied["records"] + len(applied["slower_than_default"])  # tasks the first run left a record for
    # `tune` spends its 2 trials on tasks without a record: up to 2 more tasks get one
    assert f"this model's tasks with a record: {min(recorded + 2, run['tasks'])} of {run['tasks']}" in r.stdout
    assert "task_scheduler.cc" not in r.stdout + r.stderr
    assert not (tmp_path / "artifacts").exists()
    print(f"compile --tune-trials 4: {compile_s:.0f} s; tune --trials 2: {time.perf_counter() - t0 - compile_s:.0f} s")


@pytest.mark.slow
def test_records_slower_than_the_default_schedule_are_not_used(tuned, tmp_path, monkeypatch):
    """Each record is timed against its default schedule while compiling (records_against_defaults,
    one batch): those slower stay out of the build, the rest is applied; a record that cannot be
    timed stays out too."""
    timed: list[int] = []

    def records_slow(mods, target, runner=None):  # (record, default) pairs in order: records 10 s
        timed.append(len(mods))
        return [10.0 if n % 2 == 0 else 1e-3 for n in range(len(mods))]

    monkeypatch.setattr(tvm_tuning, "measure_kernels", records_slow)
    m = compile_model(str(tuned["src"]), "tvm", tmp_path / "slow", target_options={"tuning_db": str(tuned["db"])})
    applied = m["backend_options"]["tuning"]["applied"]
    assert timed and timed[0] == 2 * len(applied["slower_than_default"])  # every record beside its default
    assert applied["records"] == 0 and applied["slower_than_default"] and m["backend_options"]["tuned"] is False
    assert m["accuracy"]["max_abs_error"] <= 1e-4

    monkeypatch.setattr(tvm_tuning, "measure_kernels", lambda mods, target, runner=None:
                        [1e-3 if n % 2 == 0 else 10.0 for n in range(len(mods))])
    m = compile_model(str(tuned["src"]), "tvm", tmp_path / "fast", target_options={"tuning_db": str(tuned["db"])})
    applied = m["backend_options"]["tuning"]["applied"]
    assert applied["records"] >= 1 and not applied["slower_than_default"] and m["backend_options"]["tuned"] is True
    assert m["accuracy"]["max_abs_error"] <= 1e-4


def test_unknown_apply_tuning_is_refused(tmp_path):
    with pytest.raises(ValueError, match="apply_tuning"):
        compile_model(str(tiny_attention_onnx(tmp_path / "t.onnx")), "tvm", tmp_path / "a",
                      target_options={"apply_tuning": "some", "tuning_db": str(tmp_path / "db")})
    assert not (tmp_path / "a").exists()


def test_kernels_are_timed_with_cold_weights_in_one_batch():
    """The runner flushes the weights before every run (the model reads them from memory, not from
    a cache a 100 ms rerun loop keeps warm); a task without a record is timed alone, beside nothing."""
    from tvm.s_tir import meta_schedule as ms

    host = tvm_target.host_target()
    cfg = tvm_tuning.cold_evaluator()
    assert cfg.enable_cpu_cache_flush and cfg.number == 1 and cfg.repeat == tvm_tuning.COLD_REPEATS
    assert tvm_tuning.local_runner(host).evaluator_config == cfg
    from tvm import relax
    from tvm.script import relax as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((8, 16), "float32"))
    w = np.random.default_rng(0).standard_normal((16, 24)).astype(np.float32)
    with bb.function("main", [x]):
        with bb.dataflow():
            o = bb.emit_output(bb.emit(relax.op.matmul(x, relax.const(w))))
        bb.emit_func_output(o)
    (task,) = tvm_target._tasks(bb.get(), host)
    empty = ms.database.MemoryDatabase()
    ((record, default),) = tvm_tuning.records_against_defaults(empty, [task.dispatched[0]], host)
    assert record is None and default is not None and 0 < default < 1


def test_runner_workers_use_the_targets_threads():
    """MetaSchedule's plain LocalRunner workers size TVM's pool at half the logical CPUs on x86 (one
    thread on a 2-vCPU VM): records and defaults were timed on one thread for a two-thread artifact."""
    host = tvm_target.host_target()
    cores = int(host.attrs["num-cores"])
    runner = tvm_tuning.local_runner(host)._inst
    threads = runner.pool.submit(lambda: tvm.get_global_func("runtime.NumThreads")()).result()
    assert threads == min(cores, os.cpu_count() or cores)
    one = tvm.target.Target({"kind": "llvm", "mcpu": str(host.attrs["mcpu"]), "num-cores": 1})
    assert tvm_tuning.local_runner(one)._inst.pool.submit(lambda: tvm.get_global_func("runtime.NumThreads")()).result() == 1
