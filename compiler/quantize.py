"""`--precision int8`: SmoothQuant → calibration → the target's Q/DQ placement → measured budget,
with the most sensitive MatMuls returned to float one by one until the budget holds.

Also the per-layer error report (each quantizable MatMul's output SNR and cosine, quantized
model against float model, on one calibration input), the table users otherwise build by hand.
"""

from __future__ import annotations

import ast
from typing import Callable

import numpy as np
import onnx_ir as ir

from edgeattn import passes
from edgeattn.compiler import plan
from edgeattn.compiler.errors import CompileError
from edgeattn.passes._calibrate import METHODS as _RANGE_METHODS
from edgeattn.passes._calibrate import activation_ranges
from edgeattn.passes._linear import const, reduce_values
from edgeattn.passes.quantize_qdq import (QDQRule, QuantizeMatMuls, fake_quant_activation,
                                          quantizable, quantize_weight)

MAX_FALLBACK_STEPS = 24
SMOOTH_TOLERANCE = 1e-4  # relative max error allowed for the (exact) scale migration
METHODS = (*_RANGE_METHODS, "auto")


def layer_name(node: ir.Node) -> str:
    """The module path the exporter recorded (e.g. encoder.layer.3.attention.self.query)."""
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            names = ast.literal_eval(scopes)
            if len(names) >= 2:
                return names[-2].removeprefix("inner.")
        except (ValueError, SyntaxError):
            pass
    return node.name


EXACT_SNR_DB = 200.0  # reported for bit-identical outputs (JSON has no infinity)


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - got) ** 2))
    signal = float(np.sum(ref ** 2))
    return EXACT_SNR_DB if noise == 0 else float(min(EXACT_SNR_DB, 10 * np.log10(max(signal, 1e-300) / noise)))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def local_sensitivity(model: ir.Model, nodes: list[ir.Node], ranges: dict, rule: QDQRule, feed: dict) -> dict[str, float]:
    """SNR (dB) of each MatMul quantized alone, on its float input: low = sensitive."""
    xs = reduce_values(model, [n.inputs[0] for n in nodes], [feed], lambda x: x.astype(np.float32))
    out = {}
    for n, (x,) in zip(nodes, xs):
        w = const(n.inputs[1])
        scale, zp = rule.activation(*ranges[n.inputs[0].name])
        wq, ws = quantize_weight(w, rule.weight_max)
        out[n.name] = _snr_db(x @ w, fake_quant_activation(x, scale, zp) @ (wq.astype(np.float32) * ws))
    return out


def layer_report(exact: ir.Model, quantized: ir.Model, names: list[str], feed: dict) -> list[dict]:
    """Per MatMul output: SNR and cosine of the quantized model against the float model."""
    def outputs(model):
        by_name = {n.name: n for n in model.graph.all_nodes()}
        return reduce_values(model, [by_name[k].outputs[0] for k in names], [feed], lambda x: x)

    rows = []
    for name, (ref,), (got,) in zip(names, outputs(exact), outputs(quantized)):
        rows.append({"node": name, "snr_db": round(float(_snr_db(ref, got)), 2), "cosine": round(_cosine(ref, got), 6)})
    return rows


def _smooth(candidate: ir.Model, alpha: float, calib: list[dict], say) -> dict:
    """SmoothQuant on the float candidate, checked to be exact before anything is quantized."""
    from edgeattn.compiler import accuracy

    feed = calib[0]
    before = accuracy.onnx_reference_runner(ir.to_proto(candidate).SerializeToString())(feed)
    say(f"int8: SmoothQuant (alpha {alpha:g})")
    p = passes.create("smooth-quant", alpha=alpha, calibration=calib)
    p(candidate)
    after = accuracy.onnx_reference_runner(ir.to_proto(candidate).SerializeToString())(feed)
    err = max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12)) for a, b in zip(before, after))
    if err > SMOOTH_TOLERANCE:
        raise CompileError(f"SmoothQuant changed the float model's output (relative error {err:.2e})",
                           "report this model; compile with smooth=0 meanwhile (--quant smooth=0)")
    return {**p.details, "sites": p.sites_changed, "relative_error": err}


AUTO_METHODS = ("minmax", "percentile")  # what `auto` tries: the two that win on some zoo model


def _fallback(base: ir.Model, nodes: list[ir.Node], ranges: dict, rule: QDQRule, budget: plan.Budget,
              measure: Callable[[ir.Model], dict], calibration: list[dict], say) -> dict:
    """Quantize all, then return the most sensitive MatMuls to float one by one until the budget holds."""
    snr = local_sensitivity(base, nodes, ranges, rule, calibration[0])
    order = sorted(snr, key=snr.get)  # most sensitive first
    base_proto = ir.to_proto(base)

    def trial(exclude: set[str], note: str = "") -> tuple[ir.Model, dict, dict]:
        model = ir.from_proto(base_proto)
        QuantizeMatMuls(ranges, rule, exclude=exclude)(model)
        say(f"int8: measure ({len(nodes) - len(exclude)}/{len(nodes)} MatMuls in int8{note})")
        acc = measure(model)
        return model, acc, budget.measure(acc)

    steps, kept = [], []
    for step in range(min(len(order), MAX_FALLBACK_STEPS) + 1):
        cand, acc, values = trial(set(kept))
        steps.append({"kept_float": len(kept), **values})
        if budget.met(values):
            break
        if step < len(order):
            kept.append(order[step])
    if budget.met(values):  # backward pass: local SNR only ranks; each kept MatMul gets one more try in int8
        for name in reversed(list(kept)):
            t_model, t_acc, t_values = trial(set(kept) - {name}, ", retrying one")
            steps.append({"kept_float": len(kept) - 1, "retried": name, **t_values})
            if budget.met(t_values):
                kept.remove(name)
                cand, acc, values = t_model, t_acc, t_values
    return {"model": cand, "kept": kept, "steps": steps, "values": values, "acc": acc, "snr": snr,
            "accepted": budget.met(values)}


def _better(a: dict, b: dict) -> bool:
    """Is fallback result `a` better than `b`: accepted first, then more MatMuls in int8."""
    return (a["accepted"], -len(a["kept"])) > (b["accepted"], -len(b["kept"]))


def quantize(exact: ir.Model, rule: QDQRule, budget: plan.Budget, measure: Callable[[ir.Model], dict],
             calibration: list[dict], say: Callable[[str], None], *, method: str = "minmax",
             smooth: float = 0.5) -> tuple[ir.Model, dict]:
    """Returns (the model to ship, the manifest's `quantization` record). `method` auto: each of
    AUTO_METHODS through the whole fallback, keeping the one with the most MatMuls in int8 inside the
    budget, min-max on a tie (no method wins on every model: percentile kept 28 of minilm-l6@128's 36
    MatMuls in int8 on an AVX2 VM, min-max 21; at 512 tokens only min-max meets NN >= 98%)."""
    if method not in METHODS:
        raise CompileError(f"unknown calibration method '{method}'", f"use one of: {', '.join(METHODS)}")
    if not calibration:
        raise CompileError("the calibration set is empty", "give at least one input with --calib")
    base = ir.from_proto(ir.to_proto(exact))
    record: dict = {"method": method, "calibration_batches": len(calibration), "budget": str(budget),
                    "rule": {"act_levels": rule.act_levels, "weight_max": rule.weight_max, "symmetric": rule.symmetric,
                             "note": rule.note}}
    if smooth > 0:
        record["smooth_quant"] = _smooth(base, smooth, calibration, say)
    nodes = quantizable(base, rule)
    if not nodes:
        return exact, {**record, "accepted": False, "reason": "no MatMul with constant weights to quantize"}
    best = None
    for m in (AUTO_METHODS if method == "auto" else (method,)):
        say(f"int8: calibrate {len(nodes)} MatMul inputs ({m}, {len(calibration)} inputs)")
        ranges = activation_ranges(base, [n.inputs[0].name for n in nodes], calibration, m)
        result = {**_fallback(base, nodes, ranges, rule, budget, measure, calibration, say), "method": m}
        if method == "auto":
            record.setdefault("methods_tried", {})[m] = {"accepted": result["accepted"], "quantized": len(nodes) - len(result["kept"]),
                                                         **result["values"]}
        if best is None or _better(result, best):
            best = result
    cand, kept, values, snr = best["model"], best["kept"], best["values"], best["snr"]
    accepted = best["accepted"]
    names = {n.name: layer_name(n) for n in nodes}
    record.update({"accepted": accepted, "measured": {**values, **best["acc"]}, "steps": best["steps"],
                   "quantized": len(nodes) - len(kept), "matmuls": len(nodes),
                   "kept_float": [names[k] for k in kept]})
    if method == "auto":
        record["method_chosen"] = best["method"]
    if not accepted:
        record["reason"] = (f"budget {budget} missed with {len(kept)} MatMuls back in float: measured "
                            f"{plan.describe(values)}; shipped the float graph")
        return exact, record
    report = layer_report(base, cand, [n.name for n in nodes], calibration[0])
    for row in report:
        row.update({"layer": names[row["node"]], "int8": row["node"] not in kept,
                    "local_snr_db": round(float(snr[row["node"]]), 2)})
    record["layers"] = report
    return cand, record
