"""Checks of command-line values that the option parser cannot make, run before any work starts:
one line naming the option and the fix (see `_guard` in cli.py)."""

from __future__ import annotations

import math
from pathlib import Path

from edgeattn.compiler.errors import CompileError
from edgeattn.runtime.checks import cores


def check_threads(flag: str, n: int | None) -> None:
    """Threads between 1 and this machine's cores: more only oversubscribes the cores (and a typo
    like 100000 starts that many OS threads)."""
    if n is not None and not 1 <= n <= cores():
        raise CompileError(f"{flag} {n} is outside 1..{cores()} (this machine's cores)", f"give {flag} 1 to {cores()}")


def check_int8_options(precision: str, *, calib: Path | None, calib_method: str, smooth: float, outliers: float) -> None:
    """int8-only options given without int8 would be silently ignored; bad values silently meant 'off'."""
    given = [flag for flag, on in (("--calib", calib is not None), ("--calib-method", calib_method != "minmax"),
                                   ("--smooth", smooth != 0.5), ("--outliers", outliers != 2.0)) if on]
    if given and precision != "int8":
        raise CompileError(f"{', '.join(given)} apply to --precision int8 only", f"add --precision int8 or drop {given[0]}")
    if not (math.isfinite(smooth) and 0 <= smooth <= 1):
        raise CompileError(f"--smooth {smooth} is outside 0..1 (SmoothQuant's migration strength)",
                           "give e.g. --smooth 0.5, or 0 for off")
    if not (math.isfinite(outliers) and outliers >= 0):
        raise CompileError(f"--outliers {outliers} must be 0 (off) or a positive ratio", "give e.g. --outliers 2")
