"""TVM MetaSchedule tuning: tune the tiny attention model through compile_model, into a temporary
database; the artifact ships the records (with SHA-256) and still matches; a second compile reuses them."""

from __future__ import annotations

import json

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
    """One tuning run (8 trials) of the tiny model into a temporary database; ~1 min on 2 cores."""
    root = tmp_path_factory.mktemp("tvm-tune")
    src = tiny_attention_onnx(root / "tiny.onnx")
    calls: list[tuple[int, int]] = []
    opts = {"tune_trials": 8, "tuning_db": str(root / "db"), "progress": lambda d, t: calls.append((d, t))}
    m = compile_model(str(src), "tvm", root / "art", target_options=opts)
    return {"root": root, "src": src, "manifest": m, "calls": calls, "db": root / "db"}


def test_database_location_is_overridable(monkeypatch, tmp_path):
    assert tvm_tuning.database_root({}) == tvm_tuning.DEFAULT_ROOT
    assert tvm_tuning.DEFAULT_ROOT.name == "tvm_db" and tvm_tuning.DEFAULT_ROOT.parent.name == "kernels"
    monkeypatch.setenv(tvm_tuning.ENV_DB, str(tmp_path / "env"))
    assert tvm_tuning.database_root({}) == tmp_path / "env"
    assert tvm_tuning.database_root({"tuning_db": str(tmp_path / "opt")}) == tmp_path / "opt"
    assert tvm_tuning.database_dir("llvm-x-2c", {}) == tmp_path / "env" / "llvm-x-2c"


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
                      target_options={"tune_trials": 8, "tuning_db": str(tuned["db"])})
    run = m["backend_options"]["tuning"]["run"]
    assert run["trials"] == 0 and run["tasks_tuned"] == 0 and run["tasks_reused"] == run["tasks"]
    assert run["records_found"] == run["tasks"]
    assert m["backend_options"]["tuned"] is True and m["accuracy"]["max_abs_error"] <= 1e-4
    key = m["backend_options"]["target_key"]
    assert (tuned["db"] / key / "database_tuning_record.json").read_bytes() == before
    # A plain compile (no tune_trials) applies the same records.
    plain = compile_model(str(tuned["src"]), "tvm", tuned["root"] / "plain", target_options={"tuning_db": str(tuned["db"])})
    assert plain["backend_options"]["tuned"] is True and "run" not in plain["backend_options"]["tuning"]
    assert RECORDS in plain["payload"].values()


def test_empty_database_builds_untuned(tmp_path):
    m = compile_model(str(tiny_attention_onnx(tmp_path / "t.onnx")), "tvm", tmp_path / "a",
                      target_options={"tuning_db": str(tmp_path / "db")})
    assert m["backend_options"]["tuned"] is False and m["payload"] == {"model": "model.so"}
    assert not (tmp_path / "db").exists()
