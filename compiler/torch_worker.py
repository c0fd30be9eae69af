"""Timing worker for the torch eager baseline of a zoo model (same protocol as runtime.worker)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from edgeattn.models import zoo
    from edgeattn.runtime.worker import serve

    torch.set_num_threads(args.threads)
    zm = zoo.build(args.model)
    feeds = zm.example_feeds(seed=0)
    tensors = [torch.from_numpy(feeds[s.name]) for s in zm.inputs]

    def run_once():
        with torch.inference_mode():
            zm.module(*tensors)

    serve(run_once, {"threads": args.threads})


if __name__ == "__main__":
    main()
