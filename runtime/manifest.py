"""Structure checks of a loaded manifest.json.

A hand-edited or corrupt manifest must fail as one ArtifactError naming the field, at load,
not as an AttributeError or int() error deep inside a backend or a command. Only the fields
the runtime and the CLI read are checked; absent optional fields stay allowed.
"""
from __future__ import annotations

from typing import Any, Callable

from .checks import is_int as _is_int
from .errors import ArtifactError

_RECOMPILE = "recompile with edgeattn compile"


def _bad(where: str, field: str, value: Any, want: str) -> ArtifactError:
    got = repr(value)
    got = got if len(got) <= 60 else got[:57] + "..."
    return ArtifactError(f"{where}: field {field} is {got}, expected {want}", _RECOMPILE)


def _mapping(m: dict, key: str, where: str, ok: Callable[[Any], bool] | None = None, want: str = "") -> None:
    """m[key], when present, is an object; with `ok`, each of its values passes ok."""
    value = m.get(key)
    if value is None:
        return
    if not isinstance(value, dict):
        raise _bad(where, key, value, "an object")
    for k, v in value.items():
        if ok is not None and not ok(v):
            raise _bad(where, f"{key}[{k!r}]", v, want)


def _spec_ok(s: Any) -> bool:
    if not (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("dtype"), str)):
        return False
    shape = s.get("shape", [])
    return isinstance(shape, list) and all(d is None or isinstance(d, str) or _is_int(d) for d in shape)


def check_structure(m: dict, where: str) -> None:
    """Raise ArtifactError on the first field of the wrong type; `where` names the manifest file."""
    if m.get("files") is not None and not isinstance(m["files"], dict):
        raise _bad(where, "files", m["files"], "an object of file name -> {sha256, bytes}")
    _mapping(m, "files", where, lambda v: isinstance(v, dict) and isinstance(v.get("sha256"), str),
             'an object with a "sha256" string')
    _mapping(m, "payload", where, lambda v: isinstance(v, str) and bool(v), "a file name")
    _mapping(m, "backend_options", where)
    _mapping(m, "attention", where)
    _mapping(m, "example_dims", where, lambda v: _is_int(v) and v >= 1, "a positive integer")
    pair = lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)  # noqa: E731
    _mapping(m, "input_ranges", where, pair, "[low, high] integers")
    _mapping(m, "index_bounds", where, pair, "[low, high] integers")
    for key in ("inputs", "outputs"):
        specs = m.get(key)
        if specs is None:
            continue
        if not isinstance(specs, list):
            raise _bad(where, key, specs, "a list of {name, dtype, shape}")
        for i, s in enumerate(specs):
            if not _spec_ok(s):
                raise _bad(where, f"{key}[{i}]", s, "{name, dtype, shape} with int, str or null dims")
    for key in ("model", "backend", "target"):
        if m.get(key) is not None and not isinstance(m[key], str):
            raise _bad(where, key, m[key], "a string")
