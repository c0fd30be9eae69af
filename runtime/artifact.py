"""Artifact directory format: manifest.json + payload files, each pinned by SHA-256.

Writes are atomic: everything goes into a temp dir beside the target and is renamed
into place only when complete, so a failed compile never leaves a half-written artifact.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .checks import current_umask
from .errors import ArtifactError
from .manifest import check_structure

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_RECOMPILE = "recompile with edgeattn compile"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_relname(rel: str) -> Path:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or rel in ("", MANIFEST_NAME):
        raise ArtifactError(f"invalid artifact file name {rel!r}",
                            "use a relative path inside the artifact, not manifest.json")
    return p


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an -o that cannot become an artifact directory, before any work is done.

    --force replaces only an earlier artifact (or an empty directory): replacing means moving the
    old directory aside and deleting it, which must never happen to a file, a device node, the
    working directory or any folder of the user's."""
    out_dir = Path(out_dir)
    parent = next((p for p in out_dir.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ArtifactError(f"cannot create {out_dir}: {parent} is a file", "choose an -o whose parent is a directory")
    if not (out_dir.exists() or out_dir.is_symlink()):
        return
    if not overwrite:
        raise ArtifactError(f"output directory {out_dir} already exists",
                            "pass --force (force=True from Python) to replace it or choose another -o")
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise ArtifactError(f"output path {out_dir} exists and is not a directory",
                            "choose another -o (--force replaces only an earlier artifact directory)")
    if not (out_dir / MANIFEST_NAME).is_file() and any(out_dir.iterdir()):
        raise ArtifactError(f"output directory {out_dir} is not an edgeattn artifact (no {MANIFEST_NAME}), so --force "
                            "will not replace it", "choose a new or empty directory for -o")


def write_artifact(out_dir: Path, manifest: dict, files: dict[str, bytes | Path],
                   overwrite: bool = False) -> Path:
    """Write manifest + payload files to out_dir atomically; returns out_dir."""
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, overwrite)
    tmp = staging_dir(out_dir)
    try:
        manifest = dict(manifest)
        table = {}
        for rel, src in files.items():
            dst = tmp / _safe_relname(rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, (bytes, bytearray, memoryview)):
                dst.write_bytes(bytes(src))
            else:
                src = Path(src)
                if not src.is_file():
                    raise ArtifactError(f"artifact payload {src} does not exist",
                                        "the build step did not produce it; check the target's build output")
                shutil.copy(src, dst)  # keeps the mode: a mobile bundle ships an executable loader
            table[rel] = {"sha256": _sha256(dst), "bytes": dst.stat().st_size}
        manifest["files"] = table
        manifest["format_version"] = FORMAT_VERSION
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        swap_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def staging_dir(out_dir: Path) -> Path:
    """An empty folder beside `out_dir` to fill and then swap into place (swap_into_place)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700: an artifact is to be copied and served, like any folder
    return tmp


def swap_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the filled `tmp` to `out_dir`; an existing one (if `overwrite`) is replaced whole."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    if not overwrite:  # appeared while we were writing
        raise ArtifactError(f"output directory {out_dir} already exists",
                            "pass --force to overwrite it or choose another -o")
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    os.rename(out_dir, old)  # move the old one aside so a failed swap can be undone
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(artifact_dir: Path) -> dict:
    artifact_dir = Path(artifact_dir)
    path = artifact_dir / MANIFEST_NAME
    if not artifact_dir.is_dir():
        raise ArtifactError(f"artifact {artifact_dir} is not a directory",
                            "pass the directory written by edgeattn compile -o")
    if not path.is_file():
        raise ArtifactError(f"artifact {artifact_dir} has no {MANIFEST_NAME}", _RECOMPILE)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e})", _RECOMPILE) from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is not a JSON object", _RECOMPILE)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"artifact format_version {version!r} is not supported "
                            f"(this runtime reads version {FORMAT_VERSION})",
                            "recompile with the installed edgeattn, or install a matching runtime")
    check_structure(manifest, str(path))
    return manifest


def verify_artifact(artifact_dir: Path) -> dict:
    """Read the manifest and check every listed file's SHA-256; returns the manifest."""
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{artifact_dir / MANIFEST_NAME} lists no files", _RECOMPILE)
    for rel, meta in files.items():
        path = artifact_dir / _safe_relname(rel)
        if not path.is_file():
            raise ArtifactError(f"artifact file {rel} is missing from {artifact_dir}", _RECOMPILE)
        if _sha256(path) != meta.get("sha256"):
            raise ArtifactError(f"artifact file {rel} failed its SHA-256 check (tampered or corrupt)",
                                _RECOMPILE)
    unpinned = sorted(set((manifest.get("payload") or {}).values()) - set(files))
    if unpinned:  # a backend would load it unchecked (and a name like ../x could leave the artifact)
        raise ArtifactError(f"{artifact_dir / MANIFEST_NAME}: payload file {unpinned[0]} is not in its files table",
                            _RECOMPILE)
    return manifest
