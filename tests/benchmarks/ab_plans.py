"""Time explicit rewrite plans against the exact graph on ONNX Runtime, many interleaved rounds in
one process (one backend only: no second thread pool). For models so small (~1 ms) that a bench
run's 5–7 rounds cannot tell plans apart on a noisy VM.

    python tests/benchmarks/ab_plans.py digits-vit "tome:r=32,32,0,0,embed_r=16,prop_attn=0" ...
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from edgeattn.compiler import frontend, plan
from edgeattn.compiler.pipeline import run_pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("plans", nargs="+", help="rewrite specs; several steps joined with '+'")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    src = frontend.load_source(a.model)
    run_pipeline(src.model, "default")
    if src.zoo_model is None:
        raise SystemExit(f"{a.model}: give a zoo model (its example inputs are the feeds)")
    feeds = src.zoo_model.example_feeds(seed=0)
    labels, sessions = ["exact"] + a.plans, []
    for label in labels:
        steps = [] if label == "exact" else [plan.parse_rewrite(s) for s in label.split("+")]
        model, _ = plan.build_plan(src.model, steps, lambda _s: None)
        model = ir.from_proto(ir.to_proto(model))  # the exact "plan" may be src.model itself
        run_pipeline(model, "default", finish=True)  # as the artifact runs it (readout pruning)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.log_severity_level = a.threads, 3
        sessions.append(ort.InferenceSession(ir.to_proto(model).SerializeToString(), so,
                                             providers=["CPUExecutionProvider"]))
    medians = [[] for _ in labels]
    for _ in range(a.rounds):
        for i, sess in enumerate(sessions):
            for _ in range(a.runs // 5):
                sess.run(None, feeds)
            times = []
            for _ in range(a.runs):
                t = time.perf_counter()
                sess.run(None, feeds)
                times.append(time.perf_counter() - t)
            medians[i].append(float(np.median(times)) * 1e3)
    base = np.array(medians[0])
    print(f"{a.model}: {a.rounds} interleaved rounds × {a.runs} runs, {a.threads} threads, ORT")
    for label, m in zip(labels, map(np.array, medians)):
        print(f"{label:48s} min {m.min():7.3f} ms  median {np.median(m):7.3f} ms  "
              f"× (min) {base.min() / m.min():.2f}  × (median) {np.median(base) / np.median(m):.2f}")


if __name__ == "__main__":
    main()
