"""Bad input (corrupt file, wrong shape, bad manifest) is one clear error naming the problem, never a traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeattn.runtime import ArtifactError, InputError, load
from edgeattn.runtime.artifact import MANIFEST_NAME, verify_artifact, write_artifact
from edgeattn.runtime.errors import BackendError
from edgeattn.runtime.npyfiles import load_input_files

from .conftest import manifest_for


def _edit_manifest(art, edit) -> None:
    m = json.loads((art / MANIFEST_NAME).read_text())
    edit(m)
    (art / MANIFEST_NAME).write_text(json.dumps(m))


# --- input files (edgeattn run --input NAME=FILE) -------------------------------------------

def _write(tmp_path, kind: str) -> str:
    p = tmp_path / ("x.npz" if kind == "npz" else "x.npy")
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).bytes(256))
    elif kind == "npz":
        np.savez(p, a=np.zeros(3), b=np.ones(3))
    elif kind == "object":
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "dir":
        p.mkdir()
    return str(p)


@pytest.mark.parametrize("kind, needle", [
    ("empty", "not a valid .npy file (empty)"),  # np.load's EOFError became a bare "Aborted."
    ("random", "not a valid .npy file (no .npy header)"),
    ("npz", "expected a .npy file with one array; an .npz holds several (a, b)"),
    ("object", "not a valid .npy file (Object arrays"),
    ("dir", "not a file"),
    ("missing", "no such file"),
])
def test_unreadable_input_file_names_it(tmp_path, kind, needle):
    file = _write(tmp_path, kind)
    with pytest.raises(InputError) as e:
        load_input_files([f"x={file}"])
    assert f"x={file}: " in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("items, needle", [(["x.npy"], "bad --input 'x.npy'"), (["x=a.npy", "x=b.npy"], "given twice")])
def test_bad_input_items(tmp_path, items, needle):
    for f in ("a.npy", "b.npy"):
        np.save(tmp_path / f, np.zeros(1))
    with pytest.raises(InputError, match=needle):
        load_input_files([i.replace("=", f"={tmp_path}/") for i in items])


def test_empty_axis_is_rejected_before_the_backend(artifact):
    with pytest.raises(InputError, match=r"shape \(0, 4, 8\): axis 0 is empty"):
        load(artifact).run({"x": np.zeros((0, 4, 8), np.float32)})


# --- backend failures ------------------------------------------------------------------------

@pytest.fixture
def lying_artifact(tmp_path, model_bytes):
    """A manifest that disagrees with its model (last axis 4, the model's is 8): only the backend can tell."""
    m = manifest_for()
    m["inputs"][0]["shape"] = ["batch", "seq", 4]
    return write_artifact(tmp_path / "lying", m, {"model.onnx": model_bytes})


def test_backend_failure_is_one_line_with_the_cause(lying_artifact):
    s = load(lying_artifact)
    for call in (lambda: s.run(s.example_feeds()), lambda: s.benchmark(runs=1, warmup=0)):
        with pytest.raises(BackendError, match="the ort backend failed to run model.onnx: .*INVALID_ARGUMENT") as e:
            call()
        assert "\n" not in str(e.value) and "recompile" in str(e.value)
        assert e.value.__cause__ is not None  # the backend's own report, for --debug


# --- manifest structure ----------------------------------------------------------------------

@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["files"].update({"model.onnx": "abc"}), "files['model.onnx'] is 'abc'"),
    (lambda m: m.update(example_dims={"batch": "x"}), "example_dims['batch'] is 'x', expected a positive integer"),
    (lambda m: m.update(example_dims={"batch": True}), "example_dims['batch'] is True"),
    (lambda m: m.update(payload=["model.onnx"]), "payload is ['model.onnx'], expected an object"),
    (lambda m: m.update(inputs="x"), "inputs is 'x', expected a list"),
    (lambda m: m["inputs"][0].update(shape="batch"), "inputs[0] is"),
    (lambda m: m.update(input_ranges={"x": [0]}), "input_ranges['x'] is [0]"),
    (lambda m: m.update(backend_options=3), "backend_options is 3"),
    (lambda m: m.update(payload={"model": "other.onnx"}), "payload file other.onnx is not in its files table"),
])
def test_malformed_manifest_names_the_field(artifact, edit, needle):
    _edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError) as e:
        verify_artifact(artifact)
    assert needle in str(e.value) and "recompile" in str(e.value)


# --- through the CLI -------------------------------------------------------------------------

def _cli(*args: str):
    from typer.testing import CliRunner

    from edgeattn.compiler.cli import app

    return CliRunner().invoke(app, list(args))


def _one_error_line(r, *needles: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_run_bad_input_files(artifact, tmp_path):
    _one_error_line(_cli("run", str(artifact), "--input", f"x={_write(tmp_path, 'empty')}"), "not a valid .npy file")
    np.savez(tmp_path / "c.npz", x=np.zeros((1, 4, 8), np.float32))
    _one_error_line(_cli("run", str(artifact), "--input", f"x={tmp_path / 'c.npz'}"), "expected a .npy file")


def test_cli_run_save_path(artifact, tmp_path):
    r = _cli("run", str(artifact), "--save", str(tmp_path / "nodir" / "out.npz"))
    _one_error_line(r, "the folder", "does not exist")
    assert r.stdout == ""  # refused before running, not after printing the outputs
    r = _cli("run", str(artifact), "--save", str(tmp_path / "out"))
    assert r.exit_code == 0 and f"saved {tmp_path / 'out.npz'}" in r.stdout  # numpy appends .npz
    assert list(np.load(tmp_path / "out.npz")) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "out.npz"]  # no temp file left


def test_cli_backend_failure(lying_artifact):
    _one_error_line(_cli("run", str(lying_artifact)), "the ort backend failed to run model.onnx")


@pytest.mark.parametrize("cmd", ["run", "inspect", "explain", "check"])
def test_cli_malformed_manifest(artifact, cmd):
    _edit_manifest(artifact, lambda m: m["files"].update({"model.onnx": "abc"}))
    _one_error_line(_cli(cmd, str(artifact)), "files['model.onnx'] is 'abc'")


@pytest.mark.parametrize("payload, needle", [(b"\x08\xff\xff garbage", "is not a valid ONNX model"),
                                             (b"", "holds no ONNX graph")])
def test_cli_inspect_corrupt_payload_with_matching_checksum(tmp_path, payload, needle):
    art = write_artifact(tmp_path / "a", manifest_for(), {"model.onnx": payload})
    _one_error_line(_cli("inspect", str(art)), needle, "recompile")
