"""Reference outputs for a target that cannot run where it is compiled (tvm-cuda without a GPU):
the compile records why it could not check, and ships check.npz so the device can (runtime/check.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeattn.runtime.check import CHECK_FILE, compare, pack, recipe_feeds

SEED = 0


def write(src, manifest: dict, work: Path, reference, why: str, emulate=None) -> dict:
    """Write check.npz (input recipe + reference outputs per compiled batch size); the manifest's accuracy
    entry. `emulate` (the target's host_emulation run, if any) is compared on the batch-1 case."""
    run_ref, ref_name = reference
    opts = manifest.get("backend_options") or {}
    batches = sorted(int(b) for b in opts.get("entries", {"1": None}))
    ranges = manifest.get("input_ranges") or {}
    cases = {}
    for b in batches:
        dims = {**src.example_dims, **{d: b for d in opts.get("batch_dims", [])}}
        feeds = recipe_feeds(manifest["inputs"], dims, ranges, SEED)
        cases[b] = (dims, feeds, [np.asarray(o) for o in run_ref(feeds)])
    np.savez_compressed(work / CHECK_FILE, **pack(cases, SEED))
    manifest["payload"]["check"] = CHECK_FILE
    out = {"verified": False, "reason": f"{why}: not checked at compile", "reference": ref_name,
           "check_data": CHECK_FILE, "check_batches": batches,
           "how": "run `edgeattn check DIR` on the device (numpy + the artifact's runtime only)"}
    if emulate is not None and 1 in cases:
        _, feeds, refs = cases[1]
        out["host_emulation"] = {**compare(refs, emulate(feeds)), "batch": 1,
                                 "what": "the same Relax module and precision plan compiled for this CPU: "
                                         "checks the plan (casts, fp16 ops), not the GPU kernels"}
    return out
