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
from edgeattn.passes.outlier_split import PART
from edgeattn.passes.quantize_qdq import (QDQRule, QuantizeMatMuls, fake_quant_activation,
                                          quantizable, quantize_weight)

MAX_FALLBACK_STEPS = 24
EXACT_TOLERANCE = 1e-4  # relative max error allowed for the exact passes (scale migration, outlier split)
METHODS = (*_RANGE_METHODS, "auto")
OUTLIER_RATIO = 2.0  # compile's default for the outlier-split retry (the CLI's --outliers)


def layer_name(node: ir.Node) -> str:
    """The module path the exporter recorded (e.g. encoder.layer.3.attention.self.query)."""
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            names = ast.literal_eval(scopes)
            if len(names) >= 2:
                part = node.metadata_props.get(PART)
                return names[-2].removeprefix("inner.") + (f" ({part})" if part else "")
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


def _exact_pass(candidate: ir.Model, name: str, calib: list[dict], say, **settings) -> dict:
    """An exact pass (SmoothQuant, the outlier split) on the float candidate, checked to leave its
    outputs unchanged before anything is quantized."""
    from edgeattn.compiler import accuracy

    feed = calib[0]
    before = accuracy.onnx_reference_runner(ir.to_proto(candidate).SerializeToString())(feed)
    say(f"int8: {name} ({', '.join(f'{k} {v:g}' for k, v in settings.items() if isinstance(v, (int, float)))})")
    p = passes.create(name, calibration=calib, **settings)
    p(candidate)
    after = accuracy.onnx_reference_runner(ir.to_proto(candidate).SerializeToString())(feed)
    err = max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12)) for a, b in zip(before, after))
    if err > EXACT_TOLERANCE:
        flag = {"smooth-quant": "--smooth 0", "outlier-split": "--outliers 0"}[name]
        raise CompileError(f"{name} changed the float model's output (relative error {err:.2e})",
                           f"report this model; compile with {flag} meanwhile")
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
    limit = min(len(order), MAX_FALLBACK_STEPS)
    for step in range(limit + 1):
        cand, acc, values = trial(set(kept))
        steps.append({"kept_float": len(kept), **values})
        if budget.met(values) or step == limit:  # `kept` stays what the last trial measured
            break
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
             smooth: float = 0.5, outliers: float = 0.0) -> tuple[ir.Model, dict]:
    """Returns (the model to ship, the manifest's `quantization` record). `method` auto: each of
    AUTO_METHODS through the whole fallback, keeping the one with the most MatMuls in int8 inside the
    budget, min-max on a tie (no method wins on every model: percentile kept 28 of minilm-l6@128's 36
    MatMuls in int8 on an AVX2 VM, min-max 21; at 512 tokens only min-max meets NN >= 98%).
    `outliers` > 0: where the fallback returned MatMuls to float, the outlier input channels of every
    MatMul are split off (outlier-split at that ratio) and the fallback runs once more; the better
    result ships."""
    if method not in METHODS:
        raise CompileError(f"unknown calibration method '{method}'", f"use one of: {', '.join(METHODS)}")
    if not calibration:
        raise CompileError("the calibration set is empty", "give at least one input with --calib")
    base = ir.from_proto(ir.to_proto(exact))
    record: dict = {"method": method, "calibration_batches": len(calibration), "budget": str(budget),
                    "rule": {"act_levels": rule.act_levels, "weight_max": rule.weight_max, "symmetric": rule.symmetric,
                             "note": rule.note}}
    folded = passes.create("fold-weight-transpose")
    folded(base)  # weights computed as Transpose(initializer) (GPT-2's tied lm_head) become quantizable
    if folded.sites_changed:
        record["weights_untransposed"] = folded.sites_changed
    if smooth > 0:
        record["smooth_quant"] = _exact_pass(base, "smooth-quant", calibration, say, alpha=smooth)
    nodes = quantizable(base, rule)
    if not nodes:
        return exact, {**record, "accepted": False, "reason": "no MatMul with constant weights to quantize"}

    def attempt(model: ir.Model, m: str) -> dict:
        todo = quantizable(model, rule)
        say(f"int8: calibrate {len(todo)} MatMul inputs ({m}, {len(calibration)} inputs)")
        ranges = activation_ranges(model, [n.inputs[0].name for n in todo], calibration, m)
        return {**_fallback(model, todo, ranges, rule, budget, measure, calibration, say), "method": m,
                "base": model, "nodes": todo}

    best = None
    for m in (AUTO_METHODS if method == "auto" else (method,)):
        result = attempt(base, m)
        if outliers > 0 and result["kept"]:
            # some MatMuls needed float: split off every outlier channel, and one more try (splitting
            # only the kept ones kept 32 of minilm-l6@128's 36 in int8, as without; all of them, 35)
            split = ir.from_proto(ir.to_proto(base))
            info = _exact_pass(split, "outlier-split", calibration, say, ratio=outliers)
            if info["sites"]:
                retry = {**attempt(split, m), "outlier_split": info}
                better = _better(retry, result)
                note = {"sites": info["sites"], "accepted": retry["accepted"],
                        "quantized": len(nodes) - len(retry["kept"]), "shipped": better}
                result = retry if better else result
                result["outlier_retry"] = note
        if method == "auto":
            record.setdefault("methods_tried", {})[m] = {"accepted": result["accepted"], "quantized": len(nodes) - len(result["kept"]),
                                                         **result["values"]}
        if best is None or _better(result, best):
            best = result
    base, nodes = best["base"], best["nodes"]
    for key in ("outlier_split", "outlier_retry"):
        if key in best:
            record[key] = best[key]
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
