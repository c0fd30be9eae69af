"""Per-kernel GPU time of a tvm-cuda artifact (issue 3), for the GPU machine (torch present, no TVM):
CUPTI, through torch.profiler, sees every kernel in the process, TVM's included (CUDA-graph replays too).

    GPU_SCRIPT=tests/benchmarks/gpu_kernel_profile.py sh scripts/gpu-check.sh ARTIFACT --out prof.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--out", type=Path, default=Path("gpu_kernels.json"))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from edgeattn import runtime

    sess = runtime.load(args.artifact)
    handle, shape = sess._handle, sess.manifest["inputs"][0]["shape"][1:]
    result = {}
    for b, fn in sorted(handle._fns.items()):
        x = handle._runner.to_device(np.random.default_rng(0).standard_normal((b, *shape)).astype(np.float32))
        for _ in range(5):
            fn(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.iters):
                fn(x)
            torch.cuda.synchronize()
        per = defaultdict(lambda: [0.0, 0])
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                per[e.name][0] += e.device_time_total / 1e3 / args.iters  # ms per inference
                per[e.name][1] += 1
        rows = sorted(([n, round(ms, 4), c // args.iters] for n, (ms, c) in per.items()), key=lambda r: -r[1])
        result[b] = {"kernel_ms_sum": round(sum(r[1] for r in rows), 4), "kernels": rows[: args.top]}
        print(f"batch {b}: {len(rows)} distinct kernels, {result[b]['kernel_ms_sum']:.3f} ms of kernel time per inference")
        for name, ms, calls in rows[: args.top]:
            print(f"  {ms:8.4f} ms  x{calls:<3d} {name[:110]}")
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
