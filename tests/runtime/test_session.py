import threading

import numpy as np
import pytest

from edgeattn.runtime import InputError, TensorSpec, load
from edgeattn.runtime.spec import validate_feeds

from .conftest import reference


def test_run_matches_numpy(artifact):
    s = load(artifact, threads=1)
    assert [i.name for i in s.inputs] == ["x"] and s.inputs[0].shape == ("batch", "seq", 8)
    assert s.threads == 1
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    out = s.run({"x": x})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], reference(x), rtol=1e-5, atol=1e-6)


def test_mask_model_and_example_feeds(mask_artifact):
    s = load(mask_artifact)
    feeds = s.example_feeds(seed=1)
    assert feeds["x"].shape == (2, 4, 8) and feeds["x"].dtype == np.float32
    assert feeds["attention_mask"].dtype == np.int64 and (feeds["attention_mask"] == 1).all()
    np.testing.assert_allclose(s.run(feeds)["y"], reference(feeds["x"], feeds["attention_mask"]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(s.example_feeds(seed=1)["x"], feeds["x"])  # deterministic


def test_input_ranges_used_for_ints(mask_artifact):
    s = load(mask_artifact)
    s.manifest["input_ranges"] = {"attention_mask": [5, 9]}
    m = s.example_feeds()["attention_mask"]
    assert m.min() >= 5 and m.max() < 9


def test_wrong_inputs_raise_clear_errors(artifact):
    s = load(artifact)
    x = np.zeros((1, 4, 8), np.float32)
    with pytest.raises(InputError, match=r"unknown input name.*\['x'\]"):
        s.run({"x": x, "y": x})
    with pytest.raises(InputError, match="missing input 'x'.*\\(batch, seq, 8\\)"):
        s.run({})
    with pytest.raises(InputError, match="dtype float64, expected float32"):
        s.run({"x": x.astype(np.float64)})
    with pytest.raises(InputError, match=r"expected \(batch, seq, 8\)"):
        s.run({"x": np.zeros((1, 4, 7), np.float32)})
    with pytest.raises(InputError, match=r"rank 2.*expected \(batch, seq, 8\)"):
        s.run({"x": np.zeros((4, 8), np.float32)})
    with pytest.raises(InputError, match="after np.asarray"):
        s.run({"x": [[[0.0] * 8] * 4]})  # a Python float list becomes float64


def test_list_input_converted_when_dtype_matches():
    spec = [TensorSpec("ids", "int64", ("batch", 3))]
    out = validate_feeds(spec, {"ids": [[1, 2, 3]]})
    assert isinstance(out["ids"], np.ndarray) and out["ids"].dtype == np.int64


def test_arrays_pass_through_without_copy():
    spec = [TensorSpec("x", "float32", (2,))]
    x = np.zeros(2, np.float32)
    assert validate_feeds(spec, {"x": x})["x"] is x


def test_symbolic_dims_must_agree(mask_artifact):
    s = load(mask_artifact)
    with pytest.raises(InputError, match="symbolic dim 'seq' is 5 in input 'attention_mask' but 4"):
        s.run({"x": np.zeros((1, 4, 8), np.float32), "attention_mask": np.ones((1, 5), np.int64)})
    with pytest.raises(InputError, match="symbolic dim 'batch'"):
        s.run({"x": np.zeros((2, 4, 8), np.float32), "attention_mask": np.ones((1, 4), np.int64)})


def test_tensorspec_round_trip():
    t = TensorSpec.from_dict({"name": "x", "dtype": "float32", "shape": ["batch", 3, 224, 224]})
    assert t.shape == ("batch", 3, 224, 224)
    assert TensorSpec.from_dict(t.to_dict()) == t
    assert t.shape_str() == "(batch, 3, 224, 224)"


def test_concurrent_runs_match_serial(artifact):
    s = load(artifact, threads=2)
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((2, 6, 8)).astype(np.float32) for _ in range(8)]
    serial = [s.run({"x": x})["y"] for x in xs]
    results: list = [None] * 8
    errors: list = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            for _ in range(20):
                results[i] = s.run({"x": xs[i]})["y"]
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_closed_session_refuses_run(artifact):
    with load(artifact) as s:
        feeds = s.example_feeds()
    with pytest.raises(InputError, match="closed"):
        s.run(feeds)


def test_validation_is_cheap(mask_artifact):
    import time
    s = load(mask_artifact)
    feeds = s.example_feeds()
    t0 = time.perf_counter()
    for _ in range(1000):
        validate_feeds(s.inputs, feeds)
    mean_ms = (time.perf_counter() - t0)  # seconds per 1000 calls == ms per call
    assert mean_ms < 0.5  # ≤1% of a 50 ms model, far under the 3% overhead budget


def test_missing_onnxruntime_is_a_clear_error(monkeypatch, artifact):
    import sys
    from edgeattn.runtime import BackendUnavailable
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime"):
        load(artifact)
