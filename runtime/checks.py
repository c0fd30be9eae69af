"""Argument checks of the runtime's Python API (load, benchmark, example_feeds): one InputError
naming the argument and the fix, not a TypeError from pathlib, a raw backend error that blames the
artifact, or a hang while a backend starts 100000 threads."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import InputError


def cores() -> int:
    """The cores this process may run on: affinity respects taskset/cgroup pinning, cpu_count() does not."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # True/False (JSON true/false too) are ints in Python


def check_threads(threads: Any, name: str = "threads") -> int | None:
    """None (the backend's default: all cores) or an int in 1..cores(): more only oversubscribes."""
    if threads is None:
        return None
    if not is_int(threads) or not 1 <= threads <= cores():
        raise InputError(f"{name}={threads!r} is not a thread count in 1..{cores()} (this machine's cores)",
                         f"give {name} an int from 1 to {cores()}, or None for all cores")
    return threads


def check_count(name: str, value: Any, least: int) -> int:
    if not is_int(value) or value < least:
        raise InputError(f"{name}={value!r} is not an int ≥ {least}", f"give {name} an int ≥ {least}")
    return value


def check_output_file(flag: str, path: Path | None) -> None:
    """A file the command writes at the end (a report, --save): fail now, not after the work."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory", f"give {flag} a file name")
    if not path.absolute().parent.is_dir():
        raise InputError(f"{flag} {path}: the folder {path.parent} does not exist", "create it or choose another path")


def current_umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"artifact path {path!r} is of type {type(path).__name__}", "give a str or pathlib.Path")
    return Path(path)
