"""Checking an artifact on the device it was built for, against reference outputs made at compile.

A compile for a target that cannot run on the build machine (tvm-cuda without a GPU) writes
`check.npz`: for each compiled batch size, the recipe of seeded inputs (`recipe_feeds`) with
their SHA-256, and the reference's outputs on them (`ref/<batch>/<output index>`).
`check_artifact` rebuilds the inputs and runs the artifact where it can run, with numpy and the
artifact's backend only.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .errors import ArtifactError

CHECK_FILE = "check.npz"
# Pass marks per precision: output cosine to the reference (fp32 also bounds the max abs error).
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "bf16": 0.999, "int8": 0.99}
FP32_MAX_ABS = 1e-3


def within_marks(result: dict, precision: str) -> bool:
    """Whether a comparison (compare's dict) passes the marks of its precision."""
    return result["cosine"] >= MIN_COSINE.get(precision, 0.999) and (
        precision != "fp32" or result["max_abs_error"] <= FP32_MAX_ABS)


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Max abs error and the lowest cosine over outputs, in float64."""
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} outputs, candidate {len(candidate)}")
    max_abs, cos = 0.0, 1.0
    for r, c in zip(reference, candidate):
        r64, c64 = np.asarray(r, np.float64).ravel(), np.asarray(c, np.float64).ravel()
        if r64.shape != c64.shape:
            raise ValueError(f"output shapes differ: {np.shape(r)} vs {np.shape(c)}")
        if (np.isnan(r64) != np.isnan(c64)).any():
            # a NaN on one side only: the worst result (Python's max/min skip NaN, which passed it)
            return {"max_abs_error": float("inf"), "cosine": -1.0, "nan_mismatch": True}
        r64, c64 = np.nan_to_num(r64), np.nan_to_num(c64)  # NaN on both sides agrees
        max_abs = max(max_abs, float(np.max(np.abs(r64 - c64))) if r64.size else 0.0)
        denom = np.linalg.norm(r64) * np.linalg.norm(c64)
        cos = min(cos, float(r64 @ c64 / denom) if denom > 0 else float(np.allclose(r64, c64)))
    return {"max_abs_error": max_abs, "cosine": cos}


def recipe_feeds(inputs: list[dict], dims: dict[str, int], ranges: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs, rebuilt bit for bit on the device (a batch-32 image input would be 19 MB in
    check.npz): input k draws from default_rng([seed, k]); floats standard normal, masks ones,
    other integers uniform in the manifest's input_ranges (default [0, 2))."""
    feeds = {}
    for k, spec in enumerate(inputs):
        shape = tuple(d if isinstance(d, int) else int(dims.get(d, 1)) for d in spec["shape"])
        dt, rng = np.dtype(spec["dtype"]), np.random.default_rng([seed, k])
        if dt.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dt)
        elif "mask" in spec["name"]:
            feeds[spec["name"]] = np.ones(shape, dt)
        else:
            lo, hi = ranges.get(spec["name"], (0, 2))
            feeds[spec["name"]] = rng.integers(lo, hi, size=shape).astype(dt)
    return feeds


def _digest(feeds: dict) -> dict[str, str]:
    return {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in feeds.items()}


def pack(cases: dict[int, tuple[dict, dict, list[np.ndarray]]], seed: int) -> dict[str, np.ndarray]:
    """{batch: (dims, feeds, reference outputs)} → the arrays of check.npz (inputs as recipe + SHA-256)."""
    meta = {"seed": seed, "cases": {str(b): {"dims": dims, "sha256": _digest(feeds)} for b, (dims, feeds, _) in cases.items()}}
    arrays = {"meta": np.array(json.dumps(meta))}
    for b, (_, _, outs) in cases.items():
        arrays.update({f"ref/{b}/{i}": np.asarray(o) for i, o in enumerate(outs)})
    return arrays


def unpack(path: Path, manifest: dict) -> dict[int, tuple[dict, list[np.ndarray]]]:
    """check.npz → {batch: (feeds rebuilt from their recipe, reference outputs)}."""
    if not Path(path).is_file():
        raise ArtifactError(f"{path} is missing", "this artifact carries no device check; recompile it")
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        refs = {key: z[key] for key in z.files if key.startswith("ref/")}
    cases = {}
    for b, case in sorted(meta["cases"].items(), key=lambda kv: int(kv[0])):
        feeds = recipe_feeds(manifest["inputs"], case["dims"], manifest.get("input_ranges") or {}, meta["seed"])
        if _digest(feeds) != case["sha256"]:
            raise ArtifactError(f"the check inputs for batch {b} rebuilt here differ from the compile's (numpy's generator changed?)",
                                "check with the numpy version the artifact was compiled with")
        outs = sorted((int(k.rsplit("/", 1)[1]), v) for k, v in refs.items() if k.startswith(f"ref/{b}/"))
        cases[int(b)] = (feeds, [v for _, v in outs])
    return cases


def check_artifact(session) -> list[dict]:
    """Run a loaded artifact (runtime.Session) on its check.npz; one row per batch size."""
    precision = session.manifest.get("precision", "fp32")
    rows = []
    for b, (feeds, refs) in unpack(session.path / CHECK_FILE, session.manifest).items():
        got = session.run(feeds)
        row = {"batch": b, **compare(refs, [got[n] for n in session.output_names])}
        row["passed"] = within_marks(row, precision)
        rows.append(row)
    return rows
