"""`--calib FILE.npz`: user calibration inputs, checked before any work starts."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edgeattn.compiler.errors import CompileError

BATCH = 4


def load_calibration(path: Path) -> list[dict]:
    """An .npz with one array per model input, samples on the first axis → feeds of ≤ BATCH samples.
    Names, shapes and dtypes are checked against the model later, when its inputs are known."""
    if not path.is_file():
        raise CompileError(f"calibration file {path} does not exist", "give an .npz written with numpy.savez")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":  # np.load would return the one array, not the archive read below
        raise CompileError(f"calibration file {path} is a .npy (one array); --calib reads an .npz with one array per "
                           "model input", "write it with numpy.savez(path, input_name=array, ...)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # EOFError: an empty file
        raise CompileError(f"calibration file {path} is not a readable .npz ({e})",
                           "write it with numpy.savez(path, input_name=array, ...)") from None
    if not arrays:
        raise CompileError(f"calibration file {path} holds no arrays", "save one array per model input")
    counts = {k: (a.shape[0] if a.ndim else 0) for k, a in arrays.items()}
    n = min(counts.values())
    if n == 0 or len(set(counts.values())) != 1:
        raise CompileError(f"calibration file {path}: sample counts differ or are empty ({counts})",
                           "give every input the same number (≥ 1) of samples on axis 0")
    return [{k: np.ascontiguousarray(a[i:i + BATCH]) for k, a in arrays.items()} for i in range(0, n, BATCH)]


def check_calibration(feeds: list[dict], inputs: list[dict]) -> None:
    """Each feed must name exactly the model's inputs with matching rank, static dims and dtype."""
    want = {s["name"]: s for s in inputs}
    got = set(feeds[0])
    if got != set(want):
        raise CompileError(f"calibration inputs {sorted(got)} do not match the model's inputs {sorted(want)}",
                           "name each .npz array after a model input")
    for name, spec in want.items():
        a = feeds[0][name]
        dims = spec["shape"]
        if a.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims[1:], a.shape[1:])):
            raise CompileError(f"calibration input '{name}' has shape {tuple(a.shape)}, the model wants {tuple(dims)}",
                               "give samples shaped like the model input (samples on axis 0)")
        if a.dtype != np.dtype(spec["dtype"]):
            raise CompileError(f"calibration input '{name}' is {a.dtype}, the model wants {spec['dtype']}",
                               f"save it as {spec['dtype']}")
