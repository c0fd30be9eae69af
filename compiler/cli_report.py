"""What the CLI prints about artifacts and reports: the compile summary, rewrite plans, tuning,
profiles and bench tables (rich tables on the shared console)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output (CI logs, `| tee`) gets a wide console so tables are not squeezed to 80 columns.
out = Console() if sys.stdout.isatty() else Console(width=200)


def _print_tuning(m: dict) -> None:
    t = (m.get("backend_options") or {}).get("tuning")
    if not t:
        return
    run, applied = t.get("run"), t.get("applied") or {}
    if run:
        line = (f"tuning ({run['target_key']}): {run['trials']} trials (budget {run['budget']}) for the "
                f"{run['tasks_tuned']} of {run['tasks']} tasks without records, in {run['seconds']:.0f} s")
        if run.get("failed_trials"):
            line += f", [yellow]{run['failed_trials']} failed[/] ({escape(run.get('first_error', ''))})"
        out.print(line)
        if run.get("reason"):
            out.print(f"  {escape(run['reason'])}")
    if applied.get("records"):
        out.print(f"tuned kernels: records for {applied['records']} of {applied['tasks']} tasks applied and shipped "
                  f"(from {escape(applied['database'])})")
    if applied.get("slower_than_default"):
        out.print(f"  {len(applied['slower_than_default'])} record(s) measured slower than the default schedule, not used: "
                  + escape(", ".join(applied["slower_than_default"])))
    else:
        out.print("tuned kernels: none (no record in the database for this model's tasks; plain loops)")


def print_tuning_log(run: Optional[dict]) -> None:
    if run and run.get("log_dir"):
        out.print(f"MetaSchedule log: {escape(run['log_dir'])}", highlight=False)


def print_compile_summary(m: dict, output: Path) -> None:
    t = Table(title=f"{m['model']} → {m['target']}  ({output})", show_header=True)
    t.add_column("pass")
    t.add_column("sites changed", justify="right")
    for p in m["passes"]:
        t.add_row(p["name"], str(p["count"]))
    out.print(t)
    att, acc = m["attention"], m["accuracy"]
    out.print(f"attention: {att['sites']} sites found, {att['canonicalized']} canonicalized"
              + (f", {att['already_canonical']} already canonical" if att.get("already_canonical") else "")
              + (f", {len(att['unmatched'])} unmatched" if att["unmatched"] else ""))
    if m.get("weights", "").startswith("random"):  # a config-only folder or zoo architecture: say so
        out.print(f"[yellow]weights[/]: {escape(m['weights'])} — outputs are not those of a trained model")
    if m.get("attn_implementation"):
        out.print(f"[yellow]note[/]: attention exported as {escape(m['attn_implementation'])}")
    for u in att["unmatched"]:
        out.print(f"  [yellow]unmatched[/] {escape(u['node'])}: {escape(u['reason'])}")
    if acc.get("verified") is False:
        line = (f"[yellow]accuracy not checked[/]: {escape(acc['reason'])}; reference outputs of {acc['reference']} "
                f"for batch {', '.join(map(str, acc['check_batches']))} are in {acc['check_data']} — {escape(acc['how'])}")
        if acc.get("host_emulation"):
            h = acc["host_emulation"]
            line += (f"\n  precision plan on this CPU (batch 1): max abs error {h['max_abs_error']:.3g}, cosine {h['cosine']:.6f} "
                     "[dim](checks the casts, not the GPU kernels)[/]")
    else:
        line = f"accuracy vs {acc['reference']}: max abs error {acc['max_abs_error']:.3g}, cosine {acc['cosine']:.6f}"
    if "top1" in acc:
        line += f", top-1 {acc['top1']:.4f} (reference {acc['reference_top1']:.4f})"
    out.print(line)
    if acc.get("note"):
        out.print(f"  [yellow]note[/] {escape(acc['note'])}")
    if acc.get("vs_graph"):
        g = acc["vs_graph"]
        out.print("artifact vs its own graph (ONNX Runtime, optimizations off): "
                  f"max abs error {g['max_abs_error']:.3g}, cosine {g['cosine']:.6f}")
    _print_tuning(m)
    if m.get("plan"):
        _print_plan(m["plan"])
    if m.get("quantization"):
        _print_quantization(m["quantization"])
    if m.get("mobile"):
        _print_mobile(m["mobile"])
    if m.get("precision_note"):
        out.print(f"[yellow]note[/] {escape(m['precision_note'])}")


def _print_plan(plan: dict) -> None:
    t = Table(title=f"rewrite plan (budget {plan['budget']}): " + ("[green]accepted[/]" if plan["accepted"] else "[red]rejected[/]"))
    for col in ("rewrite", "settings", "sites changed"):
        t.add_column(col)
    for r in plan["rewrites"]:
        t.add_row(r["name"], escape(", ".join(f"{k}={v}" for k, v in r["settings"].items())) or "defaults", str(r["count"]))
    out.print(t)
    idle = [r["name"] for r in plan["rewrites"] if not r["count"]]
    if idle:  # accepted, but nothing changed: e.g. sink-window on a model without causal attention
        out.print(f"[yellow]note[/]: {', '.join(idle)} changed no attention site (see `edgeattn inspect` for the sites)")
    _print_layers(plan)
    measured = plan.get("measured")
    if measured:
        where = f" ({escape(plan['measured_on'])})" if plan.get("measured_on") else ""
        out.print(f"plan measured{where}: {escape(describe_measured(measured))}")
    flops, lat, search = plan.get("gemm_flops"), plan.get("latency"), plan.get("search")
    if flops and flops["plan"]:
        out.print(f"GEMM FLOPs: {flops['exact'] / 1e9:.3g} → {flops['plan'] / 1e9:.3g} G ({flops['exact'] / flops['plan']:.2f}× fewer)")
    if lat:
        out.print(f"latency ({lat['measured_on']}): exact {lat['exact_ms']:.3g} ms → plan {lat['plan_ms']:.3g} ms ({lat['speedup']:.2f}×)")
    held = plan.get("held_out")
    if held:
        mark = "" if held.get("cosine_within_budget", True) else " [yellow](below the budget's cosine)[/]"
        out.print(f"held-out random inputs ({len(held['seeds'])} that no choice measured): cosine {held['cosine']:.6g}, "
                  f"max abs error {held['max_abs_error']:.3g}{mark}")
    if search:
        fams = {n: f for n, f in (search.get("families") or {}).items() if isinstance(f, dict)}
        picks = ", ".join(f"{n} {f['latency_ms']:.3g} ms" if "latency_ms" in f else f"{n}: {f.get('reason', 'searched')}"
                          for n, f in fams.items())
        out.print(f"auto search: {search.get('evaluations', 0)} measured candidates; chosen: {search.get('family', '')}"
                  + (f" ({escape(picks)})" if picks else ""))
        comp = search.get("composed")
        if comp:
            lat = ", ".join(f"{n} {ms:.3g} ms" for n, ms in (comp.get("latency_ms") or {}).items())
            if comp["family"] or lat:
                out.print(f"composed: then {comp['family'] or 'nothing (the pick alone was fastest)'}"
                          + (f" ({escape(lat)})" if lat else ""))
            else:
                why = "; ".join(f"{n}: {t.get('reason', '')}" for n, t in comp["tried"].items())
                out.print(f"composed: nothing fits on top ({escape(why)})")
    if not plan["accepted"]:
        out.print(f"[yellow]fallback[/] {escape(plan['reason'])}")


def _print_quantization(q: dict) -> None:
    state = "[green]accepted[/]" if q["accepted"] else "[red]rejected[/]"
    out.print(f"int8 (budget {escape(q['budget'])}): {state}; calibration {q['method']} on "
              f"{escape(q.get('calibration_source', ''))}")
    for m, t in q.get("methods_tried", {}).items():
        mark = " (chosen)" if m == q.get("method_chosen") else ""
        out.print(f"  auto: {m}{mark}: {t['quantized']} of {q.get('matmuls', '?')} MatMuls in int8, "
                  f"{'inside' if t['accepted'] else 'outside'} the budget")
    sq = q.get("smooth_quant")
    if sq and sq.get("sites"):
        out.print(f"  SmoothQuant alpha {sq['alpha']:g}: {sq['layernorm']} LayerNorm and {sq['value_output']} V→O sites "
                  f"(checked exact: relative error {sq['relative_error']:.1e})")
    retry = q.get("outlier_retry")
    if retry:
        fate = "shipped" if retry["shipped"] else "not better, not shipped"
        out.print(f"  outlier split on {retry['sites']} float-kept MatMul(s) (LLM.int8()-style, checked exact): "
                  f"{retry['quantized']} of {q.get('matmuls', '?')} in int8, "
                  f"{'inside' if retry['accepted'] else 'outside'} the budget; {fate}")
    if q.get("rule", {}).get("note"):
        out.print(f"  {escape(q['rule']['note'])}")
    if "matmuls" in q:
        out.print(f"  {q['quantized']} of {q['matmuls']} MatMuls in int8"
                  + (f"; back in float: {escape(', '.join(q['kept_float']))}" if q["kept_float"] else ""))
    if q.get("measured"):
        out.print(f"  measured: {escape(describe_measured(q['measured']))}")
    if not q["accepted"]:
        out.print(f"[yellow]fallback[/] {escape(q['reason'])}")


def _print_mobile(mob: dict) -> None:
    tvm = mob.get("tvm") or {}
    if not tvm.get("built"):
        out.print(f"mobile: ONNX Runtime Mobile variant only; TVM aarch64 bundle not built ({escape(tvm.get('reason', ''))})")
        return
    v = tvm.get("verified")
    check = (f"checked under qemu against ORT: max abs error {v['max_abs_error']:.2g}" if isinstance(v, dict)
             else escape(str(v)))
    out.print(f"mobile: TVM aarch64 bundle for {tvm['device']} ({tvm['bytes'] / 1e6:.1f} MB), {check}; "
              "run it with tvm-aarch64/loader tvm-aarch64/model.so --out DIR input.npy")


def describe_measured(m: dict) -> str:
    parts = [f"cosine {m['cosine']:.6f}", f"max abs error {m['max_abs_error']:.3g}"]
    if "top1" in m:
        parts.append(f"top-1 {m['top1']:.4f} (reference {m['reference_top1']:.4f})")
    if "nn_agreement" in m:
        parts.append(f"embedding cosine {m['embedding_cosine']:.5f}, nearest-neighbour agreement {m['nn_agreement']:.3f}")
    return ", ".join(parts)


def print_quant_layers(q: dict, csv_path: Optional[Path] = None) -> None:
    """Each quantizable MatMul: int8 or float, its own error (quantized alone), and the error of
    its output in the quantized model (accumulated through the layers before it)."""
    t = Table(title="int8 per layer (against the float model, one calibration input)")
    cols = ("layer", "precision", "SNR dB, alone", "SNR dB, in model", "cosine, in model")
    for col in cols:
        t.add_column(col, justify="left" if col == "layer" else "right")
    for r in q["layers"]:
        t.add_row(escape(r["layer"]), "int8" if r["int8"] else "float", f"{r['local_snr_db']:.1f}",
                  f"{r['snr_db']:.1f}", f"{r['cosine']:.6f}")
    out.print(t)
    if csv_path is not None:
        import csv

        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "node", "precision", "local_snr_db", "snr_db", "cosine"])
            for r in q["layers"]:
                w.writerow([r["layer"], r["node"], "int8" if r["int8"] else "float", r["local_snr_db"], r["snr_db"], r["cosine"]])
        out.print(f"wrote {escape(str(csv_path))}")


def _print_layers(plan: dict) -> None:
    """Per-layer table of token-reducing and windowed rewrites: tokens in, what the layer does
    now, and each layer's own error."""
    rows: dict[int, dict] = {}
    for r in plan["rewrites"]:
        for item in r.get("details", {}).get("tokens_in", []):
            rows.setdefault(item["layer"], {})["in"] = item["tokens"]
        for item in r.get("details", {}).get("merged", []) + r.get("details", {}).get("pruned", []):
            row = rows.setdefault(item["layer"], {})
            row.update(change=f"{r['name']} → {item['tokens_after']}")
            if "tokens_before" in item:  # cls-prune reports the count it saw
                row.setdefault("in", item["tokens_before"])
        for item in r.get("details", {}).get("changed", []) if r["name"] == "window" else []:
            stride = "" if item["stride"] == item["window"] else f", stride {item['stride']}"
            rows.setdefault(item["layer"], {}).update(
                {"in": item["keys_before"],
                 "change": f"window {item['window']}×{item['window']}{stride}: {item['keys_per_patch_query']} keys"})
    if not rows:
        return
    search = plan.get("search") or {}
    errors = {i: e and next(iter(e.values())) for i, e in enumerate(search.get("layer_error") or [])}
    if search.get("embed_error"):
        errors["embed"] = next(iter(search["embed_error"].values()))
    metric = plan["budget"].split(">")[0].split("<")[0]
    t = Table(title="per layer")
    for col in ("layer", "tokens in", "after the block", f"{metric}, this layer alone"):
        t.add_column(col)
    for layer in sorted(rows, key=lambda k: -1 if k == "embed" else k):
        err = errors.get(layer)
        t.add_row(str(layer), str(rows[layer].get("in", "")), rows[layer].get("change", "unchanged"),
                  "" if err is None else f"{err:.4g}")
    out.print(t)


def print_profile(rep: dict, top: int = 12) -> None:
    lat = rep["latency"]
    where = f", remote {rep['remote']['address']}" + (f" ({rep['remote']['key']})" if rep["remote"]["key"] else "") if rep.get("remote") else ""
    t = Table(title=f"{rep['model']} on {rep['target']}{where}: {rep['runs']} runs, {rep.get('threads')} threads")
    for col in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "throughput /s", "peak RSS MB"):
        t.add_column(col, justify="right")
    rss = "-" if rep.get("peak_rss_mb") is None else f"{rep['peak_rss_mb']:.0f}"
    t.add_row(f"{lat['p50_ms']:.2f}", f"{lat['p90_ms']:.2f}", f"{lat['p99_ms']:.2f}", f"{lat['mean_ms']:.2f}",
              f"{rep['throughput_per_s']:.1f}", rss)
    out.print(t)
    if rep.get("remote"):
        r, chk = rep["remote"], rep["remote"]["check"]
        out.print(f"timed by {r['timer']}; upload {r['upload_s']:.2f} s; "
                  + (f"outputs vs {chk['against']}: max abs error {chk['max_abs_error']:.3g}, cosine {chk['cosine']:.6f}"
                     if isinstance(chk, dict) else escape(chk)))
    if rep.get("ops"):
        ops = Table(title="time per op type (profiled separately)")
        for col in ("op", "calls", "total ms", "%"):
            ops.add_column(col, justify="right" if col != "op" else "left")
        for row in _by_op_type(rep["ops"])[:top]:
            ops.add_row(row["op_type"], str(row["calls"]), f"{row['total_ms']:.2f}", f"{row['percent']:.1f}")
        out.print(ops)


def _by_op_type(rows: list[dict]) -> list[dict]:
    agg: dict[str, dict] = {}
    for r in rows:
        a = agg.setdefault(r["op_type"], {"op_type": r["op_type"], "calls": 0, "total_ms": 0.0, "percent": 0.0})
        a["calls"] += r.get("calls", 0)
        a["total_ms"] += r.get("total_ms", 0.0)
        a["percent"] += r.get("percent", 0.0)
    return sorted(agg.values(), key=lambda a: -a["total_ms"])


def print_bench(result: dict) -> None:
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in result["gemm_peak_gflops"].items())
    t = Table(title=f"{result['model']}: {result['gflop']:.2f} GFLOP, batch 1, {result['threads']} threads "
                    f"(GEMM peak GFLOP/s: {peaks})")
    rows = result["rows"]
    # optional columns: (header, row key, format), shown when some row has a value
    extra = [(h, k, fmt) for h, k, fmt in (("× exact", "speedup_vs_exact", ".2f"), ("× exact fp32", "speedup_vs_exact_fp32", ".2f"),
                                            ("top-1", "top1", ".4f"),
                                            ("emb cos", "embedding_cosine", ".5f"), ("NN agree", "nn_agreement", ".3f"))
             if any(r.get(k) is not None for r in rows)]
    cols = ("candidate", "prec", "best ms", "p50 ms", "p90 ms", "/s", "× torch", "× ORT plain", "GFLOP/s", "% peak",
            "max|err|", "cosine") + tuple(h for h, _, _ in extra)
    for c in cols:
        t.add_column(c, justify="left" if c in ("candidate", "prec") else "right")

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    for r in rows:
        t.add_row(r["candidate"], r["precision"], f(r["best_ms"], ".2f"), f(r["p50_ms"], ".2f"), f(r["p90_ms"], ".2f"),
                  f(r["throughput_per_s"], ".1f"), f(r["speedup_vs_torch"], ".2f"), f(r["speedup_vs_ort_plain"], ".2f"),
                  f(r["gflops_per_s"], ".0f"), f(r["fraction_of_peak"] and 100 * r["fraction_of_peak"], ".0f"),
                  f(r["max_abs_error"], ".1e"), f(r["cosine"], ".6f"), *(f(r.get(k), fmt) for _, k, fmt in extra))
    out.print(t)
    for r in result["rows"]:
        if r.get("plan"):
            out.print(f"{escape(r['candidate'])}: {escape(r['plan'])}")
    for n in result["notes"]:
        out.print(f"[yellow]note[/] {escape(n)}")


def print_remote_bench(result: dict) -> None:
    d = result["device"]
    where = d["address"] + (f" ({d['key']})" if d["key"] else "")
    t = Table(title=f"{result['model']} on the device at {where}: {result['gflop']:.2f} GFLOP, batch 1, {d['threads']} threads")
    for c in ("candidate", "best ms", "p50 ms", "p90 ms", "/s", "GFLOP/s", "× exact", "cosine (compile)", "device vs here"):
        t.add_column(c, justify="left" if c == "candidate" else "right")
    for r in result["rows"]:
        chk = r["device_check"]
        t.add_row(escape(r["candidate"]), f"{r['best_ms']:.2f}", f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}",
                  f"{r['throughput_per_s']:.1f}", f"{r['gflops_per_s']:.1f}",
                  "" if r["speedup_vs_exact"] is None else f"{r['speedup_vs_exact']:.2f}",
                  "" if r["cosine"] is None else f"{r['cosine']:.6f}",
                  f"{chk['max_abs_error']:.1e}" if isinstance(chk, dict) else "not compared")
    out.print(t)
    for n in result.get("notes") or []:
        out.print(f"[yellow]note[/] {escape(n)}")
