import json
import subprocess
import sys

import pytest

from edgeattn.runtime import ArtifactError, load
from edgeattn.runtime.artifact import (FORMAT_VERSION, MANIFEST_NAME, read_manifest, verify_artifact,
                                       write_artifact)
from edgeattn.runtime.backends import get_backend

from .conftest import manifest_for


def test_write_verify_round_trip(tmp_path, model_bytes):
    src = tmp_path / "src.bin"
    src.write_bytes(b"tuning records")
    out = write_artifact(tmp_path / "a", manifest_for(), {"model.onnx": model_bytes, "tune/records.bin": src})
    m = verify_artifact(out)
    assert m["format_version"] == FORMAT_VERSION
    assert m["files"]["model.onnx"]["bytes"] == len(model_bytes)
    assert len(m["files"]["model.onnx"]["sha256"]) == 64
    assert (out / "tune/records.bin").read_bytes() == b"tuning records"
    assert read_manifest(out)["model"] == "tiny-attn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "src.bin"]  # no temp dirs left


def test_tampered_payload_is_refused(artifact):
    p = artifact / "model.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx failed its SHA-256 check"):
        load(artifact)


def test_missing_payload_file_is_refused(artifact):
    (artifact / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        verify_artifact(artifact)


def test_failed_write_leaves_nothing(tmp_path, model_bytes):
    with pytest.raises(ArtifactError, match="does not exist"):
        write_artifact(tmp_path / "a", manifest_for(),
                       {"model.onnx": model_bytes, "x.bin": tmp_path / "nope.bin"})
    assert list(tmp_path.iterdir()) == []


def test_existing_dir_without_overwrite(artifact):
    before = (artifact / MANIFEST_NAME).read_text()
    with pytest.raises(ArtifactError, match="--force") as e:
        write_artifact(artifact, manifest_for(), {"model.onnx": b"x"})
    assert str(artifact) in str(e.value)
    assert (artifact / MANIFEST_NAME).read_text() == before


def test_overwrite_swaps_in_new_content(artifact, model_bytes):
    (artifact / "stale.txt").write_text("old")
    m = manifest_for()
    m["model"] = "v2"
    write_artifact(artifact, m, {"model.onnx": model_bytes}, overwrite=True)
    assert read_manifest(artifact)["model"] == "v2"
    assert not (artifact / "stale.txt").exists()
    assert sorted(p.name for p in artifact.parent.iterdir()) == [artifact.name]


def test_bad_manifests(tmp_path, artifact):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(tmp_path)
    (artifact / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(artifact)
    (artifact / MANIFEST_NAME).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        read_manifest(artifact)


def test_unknown_backend(tmp_path, model_bytes):
    with pytest.raises(ArtifactError, match="known backends"):
        get_backend("warpdrive")
    m = manifest_for()
    m["backend"] = "warpdrive"
    out = write_artifact(tmp_path / "a", m, {"model.onnx": model_bytes})
    with pytest.raises(ArtifactError, match="warpdrive"):
        load(out)


def test_error_str_is_one_line():
    e = ArtifactError("bad thing", "do this")
    assert str(e) == "bad thing — do this"
    assert str(ArtifactError("only problem")) == "only problem"


def test_runtime_import_is_light():
    code = ("import sys, edgeattn.runtime as r, edgeattn.runtime.profile, edgeattn.runtime.report\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch','onnx','onnxscript','onnx_ir','rich')\n"
            "       or m.startswith(('edgeattn.compiler','edgeattn.passes','edgeattn.targets','edgeattn.models'))]\n"
            "print(repr(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
