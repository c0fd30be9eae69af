"""Bench report writers: bench.json, bench.csv and a self-contained bench.html (plots inlined)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

COLUMNS = ["candidate", "kind", "target", "precision", "best_ms", "p50_ms", "p90_ms", "throughput_per_s",
           "speedup_vs_torch", "speedup_vs_ort_plain", "gflops_per_s", "fraction_of_peak", "max_abs_error",
           "cosine", "top1", "embedding_cosine", "nn_agreement", "peak_rss_mb", "samples", "speedup_vs_exact",
           "speedup_vs_exact_fp32", "plan",
           "held_out_cosine"]


# What each column means, in the HTML report (and the README's bench section says the same).
COLUMN_HELP = {
    "candidate": "what was timed: an edgeattn artifact, or a baseline a user would run instead",
    "kind": "edgeattn or baseline", "target": "the backend that runs it",
    "precision": "the arithmetic it was built for (fp32, bf16, int8)",
    "best_ms": "latency, ms: the smallest of the rounds' medians (rounds interleave all candidates)",
    "p50_ms": "median over every timed run", "p90_ms": "90th percentile over every timed run",
    "throughput_per_s": "inferences per second at batch 1 (1000 / best_ms)",
    "speedup_vs_torch": "torch eager's best_ms / this best_ms", "speedup_vs_ort_plain": "plain ORT's best_ms / this best_ms",
    "gflops_per_s": "the GEMM FLOPs the candidate computes (a plan's own, else the model's) / best_ms",
    "fraction_of_peak": "gflops_per_s / this machine's measured GEMM peak at the candidate's precision (0-1)",
    "max_abs_error": "largest |difference| of the outputs from the reference (torch eager) on the example inputs",
    "cosine": "cosine similarity of the outputs to the reference's",
    "top1": "top-1 accuracy on the labelled held-out split (labelled models only)",
    "embedding_cosine": "mean cosine of sentence embeddings to the reference's over the text set",
    "nn_agreement": "fraction of texts whose nearest neighbour is the reference's",
    "peak_rss_mb": "peak resident memory of the candidate's worker process, MiB",
    "samples": "timed runs in all", "speedup_vs_exact": "a plan: its exact artifact's best_ms / its own",
    "speedup_vs_exact_fp32": "a plan or reduced precision: the target's exact fp32 best_ms / its own",
    "plan": "the rewrite plan's --rewrite specs", "held_out_cosine": "a plan's output cosine on inputs no choice measured",
}

# 1 − cosine below this is float rounding: plot exact candidates on one line.
EXACT_FLOOR = 1e-9


def write_all(result: dict, out: Path) -> None:
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    with open(out / "bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in result["rows"]:
            w.writerow({k: row.get(k) for k in COLUMNS})
    (out / "bench.html").write_text(render_html(result))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(rows: list[dict]) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['candidate']}\n{r['precision']}" for r in rows]
    colors = ["#1f77b4" if r["kind"] == "edgeattn" else "#999999" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 3.6))
    ax.bar(labels, [r["best_ms"] for r in rows], color=colors)
    ax.set_ylabel("latency, ms (batch 1)")
    ax.set_title("latency (edgeattn in blue, baselines in grey)")
    ax.tick_params(axis="x", labelsize=8)
    bar = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (r, c) in enumerate(zip(rows, colors), 1):  # numbered points, names in the legend: labels overlapped
        err = max(1.0 - (r["cosine"] if r["cosine"] is not None else 1.0), EXACT_FLOOR)
        ax.scatter(r["best_ms"], err, color=c, s=40, label=f"{i}  {r['candidate']} {r['precision']}")
        ax.annotate(str(i), (r["best_ms"], err), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, handletextpad=0.3)
    ax.set_yscale("log")
    ax.set_ylim(bottom=EXACT_FLOOR / 3)
    ax.set_xlabel("latency, ms")
    ax.set_ylabel(f"1 − cosine to the reference (floor {EXACT_FLOOR:g} = exact)")
    ax.set_title("accuracy versus latency")
    scatter = _png(fig)
    plt.close(fig)
    return bar, scatter


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render_html(result: dict) -> str:
    rows = result["rows"]
    bar, scatter = _plots(rows)
    head = "".join(f'<th title="{html.escape(COLUMN_HELP.get(c, c))}">{c}</th>' for c in COLUMNS)
    glossary = "".join(f"<dt>{c}</dt><dd>{html.escape(COLUMN_HELP[c])}</dd>" for c in COLUMNS if c in COLUMN_HELP)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in COLUMNS) + "</tr>" for r in rows)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.get("notes", []))
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["gemm_peak_gflops"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgeattn bench: {html.escape(result['model'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}</style></head><body>
<h1>edgeattn bench: {html.escape(result['model'])}</h1>
<p>{result['gflop']:.2f} GFLOP per inference at batch 1; {result['threads']} threads; GEMM peak here: {peaks}.
Timing: {html.escape(result['method'])}; {result['rounds']} rounds × {result['per_round']} runs.</p>
<table><tr>{head}</tr>{body}</table><ul>{notes}</ul>
<img alt="latency" src="data:image/png;base64,{bar}"><br>
<img alt="accuracy versus latency" src="data:image/png;base64,{scatter}">
<h2>Columns</h2><dl>{glossary}</dl>
</body></html>"""
