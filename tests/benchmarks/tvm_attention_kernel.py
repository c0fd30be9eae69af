"""The TVM CPU target's fused attention kernel (kernels/tvm_attention.py) against the chain it
replaces (q·kᵀ → + mask → softmax → ·v as separate kernels under the target's default schedules),
at the zoo models' shapes: both compiled through the target's pipeline, checked against each other,
then timed interleaved in one process (best round / median of rounds, ms).

    python tests/benchmarks/tvm_attention_kernel.py --rounds 40
    python tests/benchmarks/tvm_attention_kernel.py --shapes 6x577x64,12x512x32:mask --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

# deit-small (197 tokens, 6 heads of 64), deit-small@384 (577), minilm-l6 at 128 and 512 tokens
# (12 heads of 32, with its padding mask)
SHAPES = "6x197x64,6x577x64,12x128x32:mask,12x512x32:mask"


def _build(heads: int, s: int, d: int, mask: bool, fused: bool):
    import tvm

    from edgeattn.kernels import tvm_attention
    from edgeattn.targets import tvm as tvm_target
    from tests.targets.test_tvm_attention import _chain

    mod = _chain(1, heads, s, s, d, d, (1, 1, 1, s) if mask else None)
    off = mock.patch.object(tvm_attention, "fuse_attention",
                            lambda _t: tvm.transform.module_pass(lambda m, _c: m, opt_level=0))
    with contextlib.nullcontext() if fused else off:
        exe = tvm_target.compile_default(mod, tvm_target.host_target())
    return tvm.relax.VirtualMachine(exe, tvm.cpu())["main"]


def _time(fn, args, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=SHAPES, help="HEADSxTOKENSxHEAD_DIM[:mask], comma-separated")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(a.threads)  # read when TVM's thread pool starts
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests` importable from a checkout
    import tvm

    rng = np.random.default_rng(0)
    print(f"{'shape':18s} {'fused best / p50':>18s} {'chain best / p50':>18s} {'× (best)':>9s} {'max |diff|':>10s}")
    for spec in a.shapes.split(","):
        dims, _, flag = spec.partition(":")
        h, s, d = (int(x) for x in dims.split("x"))
        q, k, v = (rng.standard_normal((1, h, s, d)).astype(np.float32) / 3 for _ in range(3))
        args = [q, k, v] + ([np.where(rng.random((1, 1, 1, s)) < 0.1, -np.inf, 0).astype(np.float32)] if flag else [])
        args = [tvm.runtime.tensor(x) for x in args]
        fns = {name: _build(h, s, d, bool(flag), name == "fused") for name in ("fused", "chain")}
        diff = float(np.abs(fns["fused"](*args).numpy() - fns["chain"](*args).numpy()).max())
        n = max(1, int(0.05 / max(_time(fns["fused"], args, 3) / 1e3, 1e-6)))  # ~50 ms a round each
        rounds = {name: [] for name in fns}
        for _ in range(a.rounds):
            for name, fn in fns.items():
                rounds[name].append(_time(fn, args, n))
        f, c = rounds["fused"], rounds["chain"]
        print(f"{spec:18s} {min(f):8.3f} / {statistics.median(f):7.3f} {min(c):8.3f} / {statistics.median(c):7.3f} "
              f"{min(c) / min(f):9.2f} {diff:10.2e}")


if __name__ == "__main__":
    main()
