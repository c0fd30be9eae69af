"""Reading `--input NAME=FILE.npy` arrays and writing outputs to an .npz, for `edgeattn run`.

Every unreadable file is one InputError naming it: np.load raises EOFError on an empty file
(which click reports as a bare "Aborted."), ValueError, OSError or BadZipFile on others.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .checks import check_output_file, current_umask
from .errors import InputError

_NPY_FIX = "write it with numpy.save(path, array)"


def load_input_files(items: Iterable[str]) -> dict[str, np.ndarray]:
    """`NAME=FILE.npy` items -> {name: array}."""
    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise InputError(f"bad --input {item!r}", "use --input NAME=FILE.npy")
        if name in feeds:
            raise InputError(f"--input {name} is given twice", "give each input once")
        feeds[name] = load_npy(file, label=f"{name}={file}")
    return feeds


def load_npy(file: str | Path, label: str | None = None) -> np.ndarray:
    label = label or str(file)
    path = Path(file)
    if not path.exists():
        raise InputError(f"{label}: no such file", "give the path of a .npy file")
    if not path.is_file():
        raise InputError(f"{label}: not a file", "give the path of a .npy file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            f.seek(0)
            if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # else np.load guesses "pickled data"
                raise InputError(f"{label}: not a valid .npy file ({'empty' if not magic else 'no .npy header'})",
                                 _NPY_FIX)
            value = np.load(f, allow_pickle=False)
            if isinstance(value, np.lib.npyio.NpzFile):
                keys = value.files
                value.close()
                raise InputError(f"{label}: expected a .npy file with one array; an .npz holds several "
                                 f"({', '.join(keys[:4]) or 'none'}{', ...' if len(keys) > 4 else ''})",
                                 "save the one array with numpy.save(NAME.npy, array)")
    except InputError:
        raise
    except Exception as e:  # EOFError, ValueError (pickled/object data), OSError, BadZipFile, ...
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{label}: not a valid .npy file ({why})", _NPY_FIX) from None
    return value


def npz_target(path: str | Path) -> Path:
    """The file numpy.savez would write for `path` (it appends .npz), checked before any work runs."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    check_output_file("--save", path)
    return path


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write atomically: a temp file beside `path`, renamed over it only when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.absolute().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
