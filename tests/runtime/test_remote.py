"""Remote profiling through TVM's RPC, with a tracker and servers on loopback only."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed — pip install 'edgeattn[tvm]'")
pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado — pip install 'edgeattn[tvm]'")

from tvm.rpc.server import Server  # noqa: E402
from tvm.rpc.tracker import Tracker  # noqa: E402

from edgeattn.compiler.compile import compile_model  # noqa: E402
from edgeattn.runtime import remote  # noqa: E402
from edgeattn.runtime.errors import BackendUnavailable, InputError  # noqa: E402

from ..tiny_models import tiny_attention_onnx  # noqa: E402

LOOPBACK = "127.0.0.1"
KEY = "edgeattn-test-cpu"


@pytest.fixture(scope="module")
def rpc():
    """A tracker, one server registered under KEY, and one standalone server; all on loopback."""
    tracker = Tracker(host=LOOPBACK, port=19190, port_end=19290, silent=True)
    behind = Server(host=LOOPBACK, port=19300, port_end=19400, tracker_addr=(LOOPBACK, tracker.port), key=KEY, silent=True)
    alone = Server(host=LOOPBACK, port=19500, port_end=19600, silent=True)
    time.sleep(1.0)  # the server registers with the tracker asynchronously; requests queue until then
    yield {"tracker": f"{LOOPBACK}:{tracker.port}", "server": f"{LOOPBACK}:{alone.port}"}
    for p in (alone, behind, tracker):
        p.terminate()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote")
    tiny = tiny_attention_onnx(d / "tiny.onnx")
    compile_model(str(tiny), "tvm", d / "tvm")
    compile_model(str(tiny), "ort", d / "ort")
    return d


def test_profile_through_the_tracker_checks_and_times_on_the_device(rpc, artifacts):
    rep = remote.profile_remote(artifacts / "tvm", rpc["tracker"], key=KEY, runs=5, warmup=1)
    assert rep["remote"]["key"] == KEY and rep["runs"] == 5 and rep["batch"] == 1
    lat = rep["latency"]
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["max_ms"]
    chk = rep["remote"]["check"]
    assert chk["max_abs_error"] <= 1e-6 and chk["cosine"] > 0.999999  # same library, same CPU kind
    assert set(rep) >= {"model", "target", "latency", "throughput_per_s", "threads", "ops"}


def test_profile_on_a_standalone_server(rpc, artifacts):
    rep = remote.profile_remote(artifacts / "tvm", rpc["server"], runs=2, warmup=0)
    assert rep["remote"]["key"] is None and rep["latency"]["p50_ms"] > 0


def test_unknown_tracker_or_server_is_one_clear_error(artifacts):
    with pytest.raises(BackendUnavailable, match="cannot reach the RPC server 127.0.0.1:1"):
        remote.profile_remote(artifacts / "tvm", "127.0.0.1:1", runs=1)
    with pytest.raises(InputError, match="HOST:PORT"):
        remote.profile_remote(artifacts / "tvm", "no-port", runs=1)


def test_an_artifact_without_a_tvm_library_is_refused(rpc, artifacts):
    with pytest.raises(InputError, match="target ort has no TVM library"):
        remote.profile_remote(artifacts / "ort", rpc["server"], runs=1)


def test_cli_profile_remote(rpc, artifacts, tmp_path):
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edgeattn.compiler.cli", "profile", str(artifacts / "tvm"), "--remote",
                        rpc["tracker"], "--key", KEY, "--runs", "3", "--json", str(tmp_path / "p.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"remote {rpc['tracker']} ({KEY})" in r.stdout and "max abs error" in r.stdout
    assert json.loads((tmp_path / "p.json").read_text())["remote"]["key"] == KEY
    r = subprocess.run([sys.executable, "-m", "edgeattn.compiler.cli", "profile", str(artifacts / "tvm"), "--key", KEY],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--key needs --remote" in r.stderr


@pytest.mark.slow
def test_tune_measures_candidates_on_the_device_behind_the_tracker(rpc, tmp_path):
    """MetaSchedule's RPC runner: builds here, measurements on the server registered under KEY."""
    from edgeattn.targets import tvm as tvm_target

    import onnx_ir as ir

    model = ir.load(str(tiny_attention_onnx(tmp_path / "tiny.onnx")))
    tvm_target.legalize(model)
    rep = tvm_target.tune(model, {"trials": 4, "tuning_db": str(tmp_path / "db"),
                                  "rpc": {"tracker": rpc["tracker"], "key": KEY}})
    assert rep["measured_on"] == f"{KEY} via tracker {rpc['tracker']}"
    assert rep["trials"] >= 1 and rep["failed_trials"] < rep["trials"], rep
    assert rep["records_found"] >= 1


def test_tune_remote_needs_both_flags():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edgeattn.compiler.cli", "tune", "vit-tiny", "--remote", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--remote and --key go together" in r.stderr


def test_cli_bench_remote_times_tvm_candidates_on_the_device(rpc, artifacts, tmp_path):
    import json
    import subprocess
    import sys

    tiny = artifacts / "tiny.onnx"
    r = subprocess.run([sys.executable, "-m", "edgeattn.compiler.cli", "bench", str(tiny), "--targets", "tvm", "--remote",
                        rpc["tracker"], "--key", KEY, "--rounds", "2", "--runs", "3", "-o", str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert res["device"]["key"] == KEY and [row["candidate"] for row in res["rows"]] == ["edgeattn tvm"]
    row = res["rows"][0]
    assert row["samples"] == 6 and 0 < row["best_ms"] <= row["p90_ms"]
    assert row["device_check"]["max_abs_error"] <= 1e-6
    assert "on the device at" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgeattn.compiler.cli", "bench", str(tiny), "--targets", "ort", "--remote",
                        rpc["tracker"], "--key", KEY, "-o", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "cannot run over TVM RPC" in r.stderr
