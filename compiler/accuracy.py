"""Accuracy of an artifact against its reference: max abs error, cosine, top-1 on labelled data,
and embedding agreement (cosine, nearest-neighbour agreement) on an unlabelled text set."""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgeattn.runtime.check import compare  # noqa: F401 - one definition, shared with the runtime


def top1_with_predictions(evaluate_top1: Callable, predict: Callable[[np.ndarray], np.ndarray]) -> tuple[float, np.ndarray]:
    """A zoo model's labelled top-1 with `predict`, and the classes it predicted, in order."""
    seen: list[np.ndarray] = []

    def capture(x: np.ndarray) -> np.ndarray:
        logits = np.asarray(predict(x))
        seen.append(logits.argmax(axis=-1))
        return logits

    top1 = evaluate_top1(capture)
    return top1, np.concatenate(seen)


def top1_agreement(ref: list[np.ndarray], cand: list[np.ndarray]) -> float | None:
    """Fraction of rows whose argmax (last axis) is the same under cand as under ref; None when
    the outputs are not (batch, classes) scores."""
    if not ref or any(np.ndim(r) != 2 or np.shape(r)[-1] < 2 for r in ref):
        return None
    same = np.concatenate([np.argmax(r, -1) == np.argmax(c, -1) for r, c in zip(ref, cand)])
    return float(np.mean(same))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _nearest_neighbours(unit: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row (ties: the lowest index)."""
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def embedding_agreement(ref: np.ndarray, cand: np.ndarray, tie_tol: float = 0.0) -> dict:
    """Candidate vs reference embeddings of the same N texts, both (N, D):
    embedding_cosine / embedding_cosine_min: mean / min row-wise cosine;
    nn_agreement: fraction of texts whose nearest neighbour (cosine, itself excluded) is the
    same text under cand as under ref.

    Near-ties make nn_agreement sensitive to tiny numerical noise (on minilm-l6's text set a
    few texts have their two nearest neighbours within 0.001 cosine). With tie_tol > 0, a text
    also agrees when cand's nearest neighbour is, under ref, within tie_tol of ref's nearest
    neighbour's similarity; the result then records nn_tie_tol. The default 0 is the strict
    definition."""
    r = np.asarray(ref, np.float64)
    c = np.asarray(cand, np.float64)
    if r.ndim != 2 or r.shape != c.shape:
        raise ValueError(f"expected two (N, D) arrays of the same shape, got {r.shape} and {c.shape}")
    if r.shape[0] < 2:
        raise ValueError(f"nearest-neighbour agreement needs at least 2 embeddings, got {r.shape[0]}")
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")
    ru, cu = _unit_rows(r), _unit_rows(c)
    cos = np.sum(ru * cu, axis=1)
    # a zero row is cosine 1 with another zero row, 0 with anything else
    r0, c0 = ~np.any(r, axis=1), ~np.any(c, axis=1)
    cos = np.where(r0 | c0, (r0 & c0).astype(np.float64), cos)
    nn_r, nn_c = _nearest_neighbours(ru), _nearest_neighbours(cu)
    same = nn_r == nn_c
    if tie_tol > 0:
        rows = np.arange(len(r))
        sim = ru @ ru.T
        same |= sim[rows, nn_c] >= sim[rows, nn_r] - tie_tol
    out = {"embedding_cosine": float(np.mean(cos)), "embedding_cosine_min": float(np.min(cos)),
           "nn_agreement": float(np.mean(same))}
    if tie_tol > 0:
        out["nn_tie_tol"] = float(tie_tol)
    return out


def torch_runner(module, input_names: list[str]) -> Callable[[dict], list[np.ndarray]]:
    import torch

    def run(feeds: dict) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[n]) for n in input_names))
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().numpy() for o in outs]

    return run


def onnx_reference_runner(model_bytes: bytes) -> Callable[[dict], list[np.ndarray]]:
    """The unrewritten graph on ORT with graph optimizations OFF: measures our rewrites, not ORT's."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3  # rewritten graphs may keep unused constants: not worth a warning each
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)
