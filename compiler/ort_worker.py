"""Timing worker for one ONNX graph on ONNX Runtime CPU (graph optimizations on, as the `ort`
target ships it), with feeds from an .npz; same protocol as runtime.worker. The planner times
its candidates through it, away from the compile process's torch and ORT thread pools."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("feeds")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import numpy as np
    import onnxruntime as ort

    from edgeattn.runtime.worker import serve

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if args.threads:
        so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    with np.load(args.feeds) as z:
        feeds = {k: z[k] for k in z.files}
    serve(lambda: sess.run(None, feeds), {"threads": args.threads})


if __name__ == "__main__":
    main()
