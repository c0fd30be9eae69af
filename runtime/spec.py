"""Tensor specs of a compiled model and cheap validation of user feeds against them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64", ...
    shape: tuple[int | str | None, ...]  # str = symbolic dim ("batch"); None = unknown

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(str(d["name"]), str(np.dtype(d["dtype"])), tuple(d.get("shape", ())))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def shape_str(self) -> str:
        return format_shape(self.shape)


def format_shape(shape: Sequence) -> str:
    parts = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


@lru_cache(maxsize=None)
def _np_dtype(name: str) -> np.dtype:
    return np.dtype(name)


def validate_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check names, dtypes, ranks, fixed dims and symbolic-dim consistency.

    Returns the feeds as numpy arrays (no copy for arrays already of the right dtype).
    Raises InputError with one line naming what was expected.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(f"inputs must be a dict of name -> array, got {type(feeds).__name__}",
                         f"pass {{{', '.join(repr(s.name) for s in specs)}: ...}}")
    expected = [s.name for s in specs]
    unknown = [k for k in feeds if k not in expected]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}", f"the model's inputs are {expected}")
    out: dict[str, np.ndarray] = {}
    bound: dict[str, tuple[int, str]] = {}  # symbol -> (size, input that fixed it)
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(f"missing input {spec.name!r}",
                             f"pass {spec.name} with shape {spec.shape_str()} and dtype {spec.dtype}")
        value = feeds[spec.name]
        want = _np_dtype(spec.dtype)
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype != want:
            how = "" if isinstance(value, np.ndarray) else " after np.asarray"
            raise InputError(f"input {spec.name!r} has dtype {arr.dtype}{how}, expected {spec.dtype}",
                             f"convert it with np.asarray(x, dtype=np.{spec.dtype})")
        if arr.ndim != len(spec.shape):
            raise InputError(f"input {spec.name!r} has shape {tuple(arr.shape)} (rank {arr.ndim}), "
                             f"expected {spec.shape_str()} (rank {len(spec.shape)})",
                             "reshape the input to the expected rank")
        for axis, (dim, size) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(dim, int):
                if dim >= 0 and size != dim:
                    raise InputError(f"input {spec.name!r} has shape {tuple(arr.shape)}, expected "
                                     f"{spec.shape_str()} (axis {axis} must be {dim})",
                                     "resize the input to the expected shape")
            elif isinstance(dim, str):
                seen = bound.get(dim)
                if seen is None:
                    bound[dim] = (size, spec.name)
                elif seen[0] != size:
                    raise InputError(f"symbolic dim {dim!r} is {size} in input {spec.name!r} "
                                     f"but {seen[0]} in input {seen[1]!r}",
                                     f"give every input the same {dim} size")
        if arr.size == 0:  # backends reject empty tensors with a long report (ORT), or crash
            raise InputError(f"input {spec.name!r} has shape {tuple(arr.shape)}: axis {arr.shape.index(0)} is empty",
                             "give every axis at least one element")
        out[spec.name] = arr
    return out


def check_index_bounds(bounds: Mapping[str, Sequence[int]] | None, feeds: Mapping[str, np.ndarray]) -> None:
    """Integer inputs that index a table (manifest["index_bounds"], compiler/index_bounds.py) must
    hold values inside it: out of range, ORT refuses the run and TVM's compiled gather reads out of
    bounds (a segfault), so every backend gets this one error first."""
    for name, (lo, hi) in (bounds or {}).items():
        arr = feeds.get(name)
        if arr is None or arr.size == 0:
            continue
        low, high = int(arr.min()), int(arr.max())
        if low < lo or high > hi:
            bad = high if high > hi else low
            raise InputError(f"input {name!r} holds {bad}, outside [{lo}, {hi}]: it indexes a table of {hi + 1} rows "
                             "(e.g. token ids into the embeddings)",
                             f"pass values in [0, {hi}] (e.g. ids from the model's own tokenizer)")
