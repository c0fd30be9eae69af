"""`edgeattn bench`: compile a model for several targets, check each against the reference,
time each in its own process with interleaved rounds, and report against torch eager, plain
ONNX Runtime on the unmodified export, and the machine's GEMM peak."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeattn import targets
from edgeattn.compiler import baselines as baselines_mod
from edgeattn.compiler.compile import calibration_feeds, compile_source, parse_plan
from edgeattn.compiler.errors import CompileError
from edgeattn.compiler.flops import graph_flops
from edgeattn.compiler.frontend import Source, load_source
from edgeattn.compiler.pipeline import run_pipeline
from edgeattn.compiler.timing import time_interleaved
from edgeattn.runtime.artifact import staging_dir, swap_into_place

Say = Callable[[str], None]


@dataclass
class Candidate:
    label: str
    target: str
    precision: str
    cmd: list[str]
    kind: str = "edgeattn"  # "edgeattn" | "baseline"
    accuracy: dict = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    note: str = ""
    plan: dict | None = None
    quantization: dict | None = None
    gemm_flops: int | None = None  # what the artifact computes (manifest); None for baselines
    # For a plan candidate: the exact artifact (same target and precision) it is compared with. The
    # object, not its label: labels repeat across precisions.
    exact: "Candidate | None" = None


def _worker_cmd(artifact: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "edgeattn.runtime.worker", str(artifact), "--threads", str(threads)]


def _artifact(src: Source, target: str, out: Path, pipeline: str, options: dict, label: str, kind: str,
              threads: int, rewrites: list[str] | None = None, budget: str | None = None,
              quant: dict | None = None) -> Candidate:
    m = compile_source(src.clone(), target, out, pipeline=pipeline, force=True, target_options=options,
                       rewrites=rewrites, budget=budget, quant=quant)
    cand = Candidate(label, target, m["precision"], _worker_cmd(out, threads), kind, m["accuracy"],
                     note=m.get("precision_note", ""))
    cand.plan = m.get("plan")
    cand.gemm_flops = m.get("gemm_flops")
    cand.quantization = m.get("quantization")
    return cand


def step_specs(plan: dict) -> list[str]:
    """An accepted plan's rewrites as --rewrite specs (so one search serves every target)."""
    def value(v):
        return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)

    return [r["name"] + ":" + ",".join(f"{k}={value(v)}" for k, v in r["settings"].items()) for r in plan["rewrites"]]


def _plan_candidate(src: Source, t: str, p: str, work: Path, threads: int, rewrites: list[str], budget: str | None,
                    exact: Candidate, notes: list[str]) -> tuple[Candidate | None, list[str]]:
    """The target compiled with the rewrite plan; an `auto` search runs once and is reused."""
    cand = _artifact(src, t, work / f"{t}-{p}-plan", "default", {"precision": p}, f"edgeattn {t} + plan", "edgeattn",
                     threads, rewrites, budget)
    plan = cand.plan or {}
    if not plan.get("accepted"):
        notes.append(f"{t} {p} + plan: not timed ({plan.get('reason', 'no plan')})")
        return None, rewrites
    cand.exact = exact
    return cand, step_specs(plan)


def plan_candidates(src: Source, spec: str, target_names: list[str], precisions: list[str], work: Path,
                    baselines: bool, threads: int, say: Say, rewrites: list[str] | None = None,
                    budget: str | None = None, quant: dict | None = None) -> tuple[list[Candidate], list[str]]:
    """Compile everything to time; returns the candidates and notes on what was skipped and why."""
    cands, notes = [], []
    if src.zoo_model is not None or src.kind == "hf-folder":
        cands.append(Candidate("torch eager", "torch", "fp32",
                               [sys.executable, "-m", "edgeattn.compiler.torch_worker", spec, "--threads", str(threads)],
                               "baseline", {"max_abs_error": 0.0, "cosine": 1.0, "reference": "itself"}))
    say("baseline: ORT on the plain export")
    cands.append(_artifact(src, "ort", work / "ort-plain", "none", {}, "ORT plain export", "baseline", threads))
    for t in target_names:
        mod = targets.get(t)
        ok, reason = mod.available()
        if not ok:
            notes.append(f"{t}: skipped ({reason})")
            continue
        supported = getattr(mod, "PRECISIONS", ("fp32",))
        for p in precisions:
            if p not in supported:
                notes.append(f"{t} {p}: skipped (target supports {', '.join(supported)})")
                continue
            say(f"compile for {t} {p}")
            cand = _artifact(src, t, work / f"{t}-{p}", "default", {"precision": p}, f"edgeattn {t}", "edgeattn", threads,
                             budget=budget if p == "int8" else None, quant=quant)
            if p == "int8" and not (cand.quantization or {}).get("accepted"):
                notes.append(f"{t} int8: not timed ({(cand.quantization or {}).get('reason', 'not quantized')})")
                continue
            if cand.note:  # e.g. bf16 asked on a CPU without it: timing it would mislabel fp32 numbers
                notes.append(f"{t} {p}: skipped ({cand.note})")
                continue
            cands.append(cand)
            if rewrites:
                say(f"compile for {t} {p} with the rewrite plan")
                planned, rewrites = _plan_candidate(src, t, p, work, threads, rewrites, budget, cand, notes)
                if planned is not None:
                    cands.append(planned)
    if baselines:
        say("baseline: ORT transformers optimizer")
        try:
            cands.append(baselines_mod.ort_transformers_optimizer(src, work / "ort-optimizer", threads, _artifact))
        except Exception as e:  # the optimizer is a best-effort baseline: say why it is missing
            notes.append(f"ORT transformers optimizer: skipped ({str(e).splitlines()[0]})")
        if "openvino" in targets.TARGETS and targets.get("openvino").available()[0]:
            say("baseline: OpenVINO on the plain export")
            cands.append(_artifact(src, "openvino", work / "openvino-plain", "none", {"precision": "fp32"},
                                   "OpenVINO plain export", "baseline", threads))
            if "bf16" in precisions:  # OpenVINO's own bf16 (its inference-precision hint) is the bf16 peer
                say("baseline: OpenVINO on the plain export, bf16")
                peer = _artifact(src, "openvino", work / "openvino-plain-bf16", "none", {"precision": "bf16"},
                                 "OpenVINO plain export", "baseline", threads)
                if peer.note:  # a CPU without BF16: the plugin would run fp32 under a bf16 label
                    notes.append(f"OpenVINO plain export bf16: skipped ({peer.note})")
                else:
                    cands.append(peer)
            if "int8" in precisions:
                say("baseline: OpenVINO + NNCF int8")
                cands.append(baselines_mod.openvino_nncf_int8(src, work / "openvino-nncf", threads, _artifact,
                                                              calibration_feeds(src)))
    return cands, notes


def summarize(cands: list[Candidate], flops: int, peaks: dict[str, float], batch: int) -> list[dict]:
    by_label = {c.label: c for c in cands}
    torch_best = min(by_label["torch eager"].round_medians) if "torch eager" in by_label else None
    ort_best = min(by_label["ORT plain export"].round_medians)
    # Each target's exact fp32 artifact: what a plan or a reduced precision is ultimately measured against.
    fp32 = {c.target: min(c.round_medians) for c in cands
            if c.kind == "edgeattn" and c.precision == "fp32" and c.exact is None}
    # torch eager is the reference: its top-1 is the reference top-1 the other rows were measured against
    ref_top1 = next((c.accuracy["reference_top1"] for c in cands if c.accuracy.get("reference_top1") is not None), None)
    rows = []
    for c in cands:
        best = min(c.round_medians)
        vs_fp32 = fp32.get(c.target) if c.kind == "edgeattn" and (c.precision != "fp32" or c.exact is not None) else None
        # A plan or readout pruning does less work than the model; a baseline does the model's work
        # (its own manifest counts the plain export, whose attention MatMuls can have unknown shapes).
        done = (c.gemm_flops if c.kind == "edgeattn" else None) or flops
        gflops = done / (best / 1e3) / 1e9
        peak = peaks.get(c.precision)
        rows.append({
            "candidate": c.label, "kind": c.kind, "target": c.target, "precision": c.precision,
            "best_ms": best, "p50_ms": float(np.percentile(c.times_ms, 50)), "p90_ms": float(np.percentile(c.times_ms, 90)),
            "throughput_per_s": batch * 1e3 / best,
            "speedup_vs_torch": torch_best / best if torch_best else None, "speedup_vs_ort_plain": ort_best / best,
            "gflops_per_s": gflops, "fraction_of_peak": gflops / peak if peak else None,
            "max_abs_error": c.accuracy.get("max_abs_error"), "cosine": c.accuracy.get("cosine"),
            "top1": c.accuracy.get("top1", ref_top1 if c.accuracy.get("reference") == "itself" else None),
            "embedding_cosine": c.accuracy.get("embedding_cosine"),
            "nn_agreement": c.accuracy.get("nn_agreement"), "peak_rss_mb": c.peak_rss_mb, "samples": len(c.times_ms),
            "speedup_vs_exact": (min(c.exact.round_medians) / best) if c.exact is not None else None,
            "speedup_vs_exact_fp32": vs_fp32 / best if vs_fp32 else None,
            "plan": ", ".join(step_specs(c.plan)) if c.plan and c.plan.get("accepted") else None,
            "held_out_cosine": ((c.plan or {}).get("held_out") or {}).get("cosine"),
        })
    return rows


def check_request(target_names: list[str], precisions: list[str], out: Path, rewrites: list[str] | None = None,
                  budget: str | None = None) -> None:
    """A bad request fails in one line here, before the export and the first compile."""
    if not target_names or not precisions:
        raise CompileError("no targets or no precisions to bench", "e.g. --targets ort,openvino --precision fp32,int8")
    built = {t: getattr(targets.get(t), "PRECISIONS", ("fp32",)) for t in target_names}  # unknown name: one line
    for p in precisions:
        if not any(p in ps for ps in built.values()):
            known = sorted({q for ps in built.values() for q in ps})
            raise CompileError(f"precision '{p}' is built by none of the targets {', '.join(target_names)}",
                               f"use {', '.join(known)} (or add a target that builds it: see `edgeattn targets`)")
    parse_plan(rewrites, budget, "int8" in precisions)
    parent = next((q for q in [out, *out.absolute().parents] if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CompileError(f"cannot write the bench report to {out}: {parent} is a file", "choose a directory for -o")
    if out.is_dir() and any(out.iterdir()) and not (out / "bench.json").is_file():
        raise CompileError(f"{out} is not an earlier bench report (no bench.json), so bench will not replace it",
                           "choose a new or empty directory for -o")


def run_bench(spec: str, target_names: list[str], precisions: list[str], out: Path, *, baselines: bool = False,
              rounds: int = 5, per_round: int = 10, warmup: int = 3, threads: int = 2, say: Say | None = None,
              rewrites: list[str] | None = None, budget: str | None = None, quant: dict | None = None) -> dict:
    check_request(target_names, precisions, out, rewrites, budget)
    # Built in a folder beside `out` and swapped in whole at the end: a failed bench leaves the
    # earlier report as it was, a finished one leaves none of the earlier run's artifacts behind.
    work = staging_dir(out)
    try:
        result = _run_bench(spec, target_names, precisions, work, baselines, rounds, per_round, warmup, threads,
                            say or (lambda _m: None), rewrites, budget, quant)
        swap_into_place(work, out, overwrite=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return result


def _run_bench(spec, target_names, precisions, out, baselines, rounds, per_round, warmup, threads, say, rewrites,
               budget, quant) -> dict:
    from edgeattn.compiler.peak import measure_gemm_peak

    say(f"load {spec}")
    src = load_source(spec)
    dims = {**src.example_dims, "batch": 1}
    # Counted on the canonical graph: the plain export's attention MatMuls can have unknown shapes.
    canonical = src.clone()
    run_pipeline(canonical.model, "default")
    flops = graph_flops(canonical.model, dims)
    out.mkdir(parents=True, exist_ok=True)
    cands, notes = plan_candidates(src, spec, target_names, precisions, out / "artifacts", baselines, threads, say,
                                   rewrites, budget, quant)
    say("measure GEMM peak")
    peaks = measure_gemm_peak(threads)
    time_interleaved(cands, rounds, per_round, warmup, say)
    result = {"model": spec, "threads": threads, "batch": 1, "gflop": flops / 1e9, "gemm_peak_gflops": peaks,
              "rounds": rounds, "per_round": per_round, "method": "min over rounds of each round's median; "
              "one process per candidate, interleaved", "rows": summarize(cands, flops, peaks, 1), "notes": notes}
    if rewrites:
        result["rewrites"], result["budget"] = rewrites, budget
    if "int8" in precisions:
        result["budget"], result["quant"] = budget, quant or {}
    from edgeattn.compiler.bench_report import write_all

    write_all(result, out)
    return result
