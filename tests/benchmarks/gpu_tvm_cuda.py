"""The GPU check of issue 3, for a machine with an NVIDIA GPU, PyTorch and transformers but no TVM
(the H100 image of this project): see scripts/gpu-check.sh, which sets up the path and runs it.

1. loads a tvm-cuda artifact with the TVM runtime alone (apache-tvm-ffi + the runtime the artifact
   ships; the TVM compiler is not installed there) and checks it against the CPU reference
   outputs made at compile (check.npz);
2. times it at each compiled batch size, GPU-resident inputs (the VM replays its CUDA graph);
3. times the same architecture in PyTorch on the same card: eager fp16 (and fp32 at batch 1),
   torch.compile fp16 (default mode, and reduce-overhead, which uses CUDA graphs).
The torch model is built from the zoo's config with random weights: speed does not depend on the
weight values, and numerics are checked against the reference instead (step 1).

    python tests/benchmarks/gpu_tvm_cuda.py ARTIFACT [--out results.json] [--rounds 5] [--iters 50]

Results go to JSON as they come, so a run cut short still reports what it measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def timed(fn, sync, rounds: int, iters: int, warmup: int = 10) -> dict:
    """Median over rounds of the mean ms per call (each round: iters calls, then one device sync)."""
    for _ in range(warmup):
        fn()
    sync()
    means = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        means.append((time.perf_counter() - t0) * 1e3 / iters)
    return {"ms": statistics.median(means), "min_ms": min(means), "rounds": rounds, "iters": iters}


def torch_model(manifest: dict):
    """The zoo's DeiT/ViT architecture in transformers, random init, from the artifact's description."""
    import torch
    from transformers import DeiTConfig, DeiTForImageClassification

    size = manifest["inputs"][0]["shape"][-1]
    cfg = DeiTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                     image_size=size, patch_size=16, num_labels=1000)
    torch.manual_seed(0)
    return DeiTForImageClassification(cfg).eval(), size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--out", type=Path, default=Path("gpu_results.json"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--skip-compile", action="store_true", help="skip torch.compile (slow to compile)")
    ap.add_argument("--budget-s", type=float, default=420, help="start no torch.compile after this many seconds")
    args = ap.parse_args()
    start = time.perf_counter()
    res: dict = {"machine": platform.node(), "artifact": str(args.artifact)}

    def save(key, value):
        res[key] = value
        args.out.write_text(json.dumps(res, indent=2))
        print(key, json.dumps(value), flush=True)

    import torch  # only to synchronise the device and for the torch baselines

    from edgeattn import runtime
    from edgeattn.runtime.artifact import read_manifest
    from edgeattn.runtime.check import check_artifact

    sync = torch.cuda.synchronize
    save("gpu", {"name": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda})

    def tvm_part():
        sess = runtime.load(args.artifact)
        m = sess.manifest
        save("artifact_info", {"precision": m["precision"], "backend_options": {k: v for k, v in m["backend_options"].items() if k != "target"},
                               "runtime_only": "tvm" not in sys.modules})
        save("check", check_artifact(sess))

        # GPU-resident timing of each compiled batch: inputs uploaded once, outputs left on the GPU.
        handle, name = sess._handle, m["inputs"][0]["name"]
        rng = np.random.default_rng(1)
        tvm_rows = {}
        for b, fn in sorted(handle._fns.items()):
            x = handle._runner.to_device(rng.standard_normal((b, *m["inputs"][0]["shape"][1:])).astype(np.float32))
            tvm_rows[b] = timed(lambda: fn(x), sync, args.rounds, args.iters)
            t = timed(lambda: sess.run({name: np.zeros((b, *m["inputs"][0]["shape"][1:]), np.float32)}), sync, 3, 10, warmup=3)
            tvm_rows[b]["with_numpy_copies_ms"] = t["ms"]
        save("tvm_cuda", tvm_rows)
        return m, handle, tvm_rows

    try:
        m, handle, tvm_rows = tvm_part()
        batches = sorted(handle._fns)
    except Exception:  # keep going: the torch baselines still say something
        import traceback

        save("tvm_error", traceback.format_exc()[-3000:])
        m, tvm_rows = read_manifest(args.artifact), {}
        batches = sorted(int(b) for b in m["backend_options"]["entries"])
    model, size = torch_model(m)
    rows: dict = {}
    with torch.inference_mode():
        for dtype, label in ((torch.float32, "eager_fp32"), (torch.float16, "eager_fp16")):
            mod = model.to("cuda", dtype)
            for b in (batches if dtype == torch.float16 else [1]):
                x = torch.randn(b, 3, size, size, device="cuda", dtype=dtype)
                rows.setdefault(label, {})[b] = timed(lambda: mod(pixel_values=x), sync, args.rounds, args.iters)
            save("torch", rows)
        if not args.skip_compile:
            mod = model.to("cuda", torch.float16)
            for mode in ("default", "reduce-overhead"):
                for b in batches:
                    if time.perf_counter() - start > args.budget_s:
                        save(f"skipped_compile_{mode}_b{b}", "out of time budget")
                        continue
                    torch._dynamo.reset()
                    cm = torch.compile(mod, mode=mode)
                    x = torch.randn(b, 3, size, size, device="cuda", dtype=torch.float16)
                    t0 = time.perf_counter()
                    cm(pixel_values=x)
                    sync()
                    r = timed(lambda: cm(pixel_values=x), sync, args.rounds, args.iters)
                    r["compile_s"] = round(time.perf_counter() - t0, 1)
                    rows.setdefault(f"compile_{mode}_fp16", {})[b] = r
                    save("torch", rows)
    summary = {}
    for b, r in tvm_rows.items():
        base = {k: v[b]["ms"] for k, v in rows.items() if b in v}
        summary[b] = {"tvm_cuda_ms": r["ms"], **{f"{k}_ms": v for k, v in base.items()},
                      **{f"speedup_vs_{k}": v / r["ms"] for k, v in base.items()}}
    save("summary", summary)


if __name__ == "__main__":
    main()
