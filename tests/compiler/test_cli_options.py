"""Option values the parser cannot check, refused in one line before any work (compiler/cli_checks.py),
and paths that --force must never replace. In-process (typer's CliRunner) except where main()'s own
usage-error line is the point."""

from __future__ import annotations

import os
import stat

import pytest
from typer.testing import CliRunner

from edgeattn.compiler.cli import app

from ..tiny_models import tiny_attention_onnx
from .test_cli import _one_error_line, edgeattn


def _cli(*args: str):
    r = CliRunner().invoke(app, list(args))
    r.returncode = r.exit_code  # the shape _one_error_line reads
    return r


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("opts")
    model = tiny_attention_onnx(tmp / "tiny.onnx")
    r = _cli("compile", str(model), "-o", str(tmp / "art"))
    assert r.exit_code == 0, r.output
    return model, tmp / "art"


def test_force_replaces_only_an_artifact(tiny, tmp_path):
    model, art = tiny
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    _one_error_line(_cli("compile", str(model), "-o", str(afile), "--force"), "is not a directory")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    _one_error_line(_cli("compile", str(model), "-o", str(folder), "--force"), "not an edgeattn artifact")
    _one_error_line(_cli("compile", str(model), "-o", str(afile / "sub")), "is a file")
    assert afile.read_text() == "keep me" and (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine"]  # no temp dirs left
    r = _cli("compile", str(model), "-o", str(art), "--force")  # an earlier artifact: replaced
    assert r.exit_code == 0, r.output


def test_artifact_directory_follows_the_umask(tiny):
    mode = stat.S_IMODE(os.stat(tiny[1]).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # mkdtemp's 0700 would hide it from the user serving or copying it


@pytest.mark.parametrize("args, needles", [
    (["--threads", "0"], ["--threads 0", "1.."]),
    (["--threads", "100000"], ["--threads 100000", "cores"]),
    (["--json", "{tmp}"], ["--json", "is a directory"]),
    (["--csv", "{tmp}/no/such/dir/p.csv"], ["--csv", "does not exist"]),
])
def test_profile_options(tiny, tmp_path, args, needles):
    r = _cli("profile", str(tiny[1]), "--runs", "1", *[a.format(tmp=tmp_path) for a in args])
    _one_error_line(r, *needles)
    assert "p50" not in r.stdout  # refused before profiling


@pytest.mark.parametrize("args, needles", [
    (["--calib", "c.npz"], ["--calib", "--precision int8"]),
    (["--calib-method", "entropy"], ["--calib-method", "--precision int8"]),
    (["--precision", "int8", "--smooth", "3"], ["--smooth 3", "0..1"]),
    (["--precision", "int8", "--outliers", "-1"], ["--outliers -1", "0 (off)"]),
])
def test_int8_options(tiny, tmp_path, args, needles):
    _one_error_line(_cli("compile", str(tiny[0]), "-o", str(tmp_path / "o"), *args), *needles)
    assert not (tmp_path / "o").exists()


def test_explain_csv_needs_layers(tiny, tmp_path):
    _one_error_line(_cli("explain", str(tiny[1]), "--csv", str(tmp_path / "l.csv")), "--csv", "--layers")
    assert not (tmp_path / "l.csv").exists()


@pytest.mark.parametrize("args, needles", [
    (["--precision", "fp7"], ["precision 'fp7'", "fp32"]),
    (["--targets", "tpu"], ["unknown target 'tpu'"]),
    (["--targets", "tvm", "--precision", "int8"], ["precision 'int8'", "tvm"]),
    (["--rewrite", "tome:r=2", "--budget", "cosine=>1"], ["budget"]),
])
def test_bench_request_is_checked_before_any_work(tiny, tmp_path, args, needles):
    r = _cli("bench", str(tiny[0]), "-o", str(tmp_path / "b"), "--rounds", "1", "--runs", "1", *args)
    _one_error_line(r, *needles)
    assert not (tmp_path / "b").exists()


def test_bench_output_under_a_file(tiny, tmp_path):
    (tmp_path / "f").write_text("x")
    _one_error_line(_cli("bench", str(tiny[0]), "-o", str(tmp_path / "f" / "b")), "is a file")


def test_usage_errors_are_one_line_too():
    # main(), not CliRunner: typer would draw click's usage errors as a boxed panel
    _one_error_line(edgeattn("profile", "x", "--runs", "0"), "--runs", "edgeattn profile --help")
    _one_error_line(edgeattn("frobnicate"), "No such command")
