"""The `edgeattn` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from edgeattn.compiler.cli_report import (out, print_bench, print_compile_summary, print_remote_bench, print_profile, print_quant_layers,
                                          print_tuning_log)
from edgeattn.compiler.cli_checks import check_int8_options, check_threads
from edgeattn.compiler.errors import CompileError
from edgeattn.runtime.checks import check_output_file, cores

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="edgeattn: compile attention models into edge artifacts, run and profile them.")
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug


def _fail(e: BaseException, code: int = 2) -> None:
    if _state["debug"]:
        raise e
    text = e.args[0] if type(e) is KeyError and e.args else str(e)  # a KeyError's str() quotes its message
    msg = str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn):
    """Turn our errors (and bad user input) into one line on stderr and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from edgeattn.runtime.errors import EdgeAttnError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (EdgeAttnError, KeyError, ValueError, FileNotFoundError) as e:
            _fail(e)
        except ModuleNotFoundError as e:  # a runtime-only install asked for a compiler command
            _fail(EdgeAttnError(f"missing Python package '{e.name}' for this command",
                                "install the compiler: pip install 'edgeattn[compiler]'"))
        except OSError as e:  # a path the user gave that cannot be read or written
            _fail(EdgeAttnError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), "check the path"))
        except Exception as e:  # a bug: still one line, the traceback behind --debug
            _fail(EdgeAttnError(f"internal error ({type(e).__name__}: {str(e).strip()[:200]})",
                                "rerun with edgeattn --debug ... and report the traceback"), code=1)

    return wrapper


@app.command("compile")
@_guard
def compile_cmd(
    model: str = typer.Argument(..., help="Zoo name (deit-small, deit-small@384, ...), an .onnx file, or a local HF folder (FOLDER@N: a text model at N tokens)."),
    target: str = typer.Option("ort", "--target", "-t", help="Target backend (see `edgeattn targets`)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Artifact directory (default: artifacts/MODEL-TARGET)."),
    pipeline: str = typer.Option("default", "--pipeline", "-p", help="Pass pipeline (see `edgeattn pipelines`)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing artifact directory."),
    precision: str = typer.Option("fp32", "--precision", help="fp32; bf16 or int8 where the target supports it (see `edgeattn targets`)."),
    rewrite: List[str] = typer.Option([], "--rewrite", "-r", help="Approximate rewrite NAME:key=val,... (repeatable; see `edgeattn pipelines`)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Accuracy budget for --rewrite and --precision int8, one or more comma-separated, quoted for the shell: \"cosine>=0.99\" (default), top1-drop<=0.5, top1-agree>=0.99, max-abs<=1e-3, embedding-cosine>=0.99, nn-agree>=0.98."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="int8: calibration inputs, an .npz with one array per model input (first axis = samples); default: the model's own calibration set."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="int8: activation ranges by minmax (the default), percentile (99.999), entropy, or auto (minmax and percentile each through the fallback; keeps the one with more MatMuls in int8)."),
    smooth: float = typer.Option(0.5, "--smooth", help="int8: SmoothQuant migration strength alpha (0 = off)."),
    outliers: float = typer.Option(2.0, "--outliers", help="int8: split off MatMul input channels whose range exceeds this × the 9th largest channel's into a small float MatMul (LLM.int8()-style; 0 = off)."),
    device: Optional[str] = typer.Option(None, "--device", help="mobile: the ARM64 CPU preset of the TVM bundle: generic-arm64 (default), rpi4, rpi5, jetson-orin."),
    arch: Optional[str] = typer.Option(None, "--arch", help="tvm-cuda: GPU architecture, sm_90 (H100, the default), sm_87 (Jetson Orin), sm_89, sm_80."),
    batches: Optional[str] = typer.Option(None, "--batches", help="tvm-cuda: batch sizes compiled into the executable, e.g. 1,32 (default 1)."),
    tune_trials: Optional[int] = typer.Option(None, "--tune-trials", help="tvm: MetaSchedule trial budget for kernels not yet in the tuning database (0 = only apply records already there)."),
    tuning_db: Optional[Path] = typer.Option(None, "--tuning-db", help="tvm: tuning database root (see `edgeattn tune --help` for the default)."),
):
    """Compile MODEL for a target into an artifact directory.

    Examples:

        edgeattn compile deit-small -o out/deit

        edgeattn compile minilm-l6@512 --target ort -o out/minilm

        edgeattn compile model.onnx -o out/mine --force

        edgeattn compile deit-small --target openvino --precision bf16 -o out/deit-ov

        edgeattn compile gpt2-small --rewrite sink-window:sink=4,window=64 --budget "cosine>=0.98" -o out/gpt2

        edgeattn compile digits-vit --target tvm --tune-trials 64 -o out/digits-tvm

        edgeattn compile digits-vit --precision int8 --budget "top1-drop<=0.5" -o out/digits-int8

        edgeattn compile deit-small --target mobile --device rpi5 -o out/deit-mobile

        edgeattn compile deit-small --target tvm-cuda --precision fp16 --batches 1,32 -o out/deit-cuda
    """
    from edgeattn.compiler.compile import compile_model
    from edgeattn.compiler.calib import load_calibration

    check_int8_options(precision, calib=calib, calib_method=calib_method, smooth=smooth, outliers=outliers)
    quant = {"method": calib_method, "smooth": smooth, "outliers": outliers}
    extra = {}
    if device is not None:
        if target != "mobile":
            raise CompileError("--device applies to --target mobile only", "drop --device or add --target mobile")
        from edgeattn.targets.mobile_tvm import check_device

        extra["device"] = check_device(device)
    if (arch or batches) and target != "tvm-cuda":
        raise CompileError("--arch/--batches apply to --target tvm-cuda only", "drop them or add --target tvm-cuda")
    extra.update({k: v for k, v in (("arch", arch), ("batches", batches)) if v})
    if calib is not None:
        quant["calibration"] = load_calibration(calib)

    tuning = _tuning_options(target, tune_trials, tuning_db)
    output = output or Path("artifacts") / f"{model.replace('@', '_').replace('/', '_').rstrip('_')}-{target}"
    with _progress() as bar:
        task = bar.add_task(f"compile {model}", total=None, count="")
        if tuning:
            tuning["tuning_progress"] = _tuning_display(bar)
        manifest = compile_model(model, target, output, pipeline=pipeline, force=force,
                                 target_options={"precision": precision, **tuning, **extra}, rewrites=rewrite,
                                 budget=budget, quant=quant, progress=lambda m: bar.update(task, description=f"compile {model}: {m}"))
    print_compile_summary(manifest, output)
    print_tuning_log(manifest.get("backend_options", {}).get("tuning", {}).get("run"))


class _BarIfTotal(BarColumn):
    """A bar only on lines with a total (tuning); spinner-only lines (compile steps) get none."""

    def render(self, task):
        return Text("") if task.total is None else super().render(task)


def _progress() -> Progress:
    """Compile-step spinner line, plus a tuning line with a bar while tuning runs (see _tuning_display)."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), _BarIfTotal(), TextColumn("{task.fields[count]}"),
                    TimeElapsedColumn(), console=err, transient=True)


def _check_trials(flag: str, n: int, zero: str) -> None:
    if n < 0:
        raise CompileError(f"{flag} {n} is negative", f"give a trial budget of 0 or more (0 = {zero})")


def _tuning_options(target: str, trials: Optional[int], db: Optional[Path]) -> dict:
    """target_options for --tune-trials/--tuning-db; an error for a target that does not tune."""
    if trials is None and db is None:
        return {}
    from edgeattn import targets

    flag = "--tune-trials" if trials is not None else "--tuning-db"
    if not getattr(targets.get(target), "TUNABLE", False):
        raise CompileError(f"target '{target}' does not tune kernels, so {flag} does not apply",
                           f"drop {flag}, or compile with --target tvm")
    opts: dict = {}
    if trials is not None:
        _check_trials("--tune-trials", trials, "no tuning, only apply records already in the database")
        opts["tune_trials"] = trials
    if db is not None:
        opts["tuning_db"] = str(db)
    return opts


def _tuning_display(bar: Progress):
    """A `tuning_progress` callback (kernels/tvm_tuning.TuningMonitor state) drawing a tuning line on `bar`."""
    ids: dict = {}

    def show(st: dict) -> None:
        if "tune" not in ids:
            ids["tune"] = bar.add_task("tune", total=max(1, st["total"]), count="")
        tid = ids["tune"]
        if st["phase"] == "done":
            bar.update(tid, visible=False)
            return
        if st["phase"] == "init":
            desc = f"tune: set up task {st['task']}/{st['tasks']} {st['task_name']}" if st["task"] else f"tune: set up {st['tasks']} tasks"
        else:
            desc = f"tune task {st['task']}/{st['tasks']} {st['task_name']}"
        count = f"{st['sent']}/{st['total']} trials, {st['measured']} measured" + (f", {st['failed']} failed" if st["failed"] else "")
        bar.update(tid, description=escape(desc), completed=st["sent"], count=count)

    return show


@app.command("tune")
@_guard
def tune_cmd(
    model: str = typer.Argument(..., help="Zoo name, .onnx file or local HF folder."),
    trials: int = typer.Option(64, "--trials", "-n", help="Trial budget (measured candidates) over the tasks without records (0 = only report)."),
    tuning_db: Optional[Path] = typer.Option(None, "--tuning-db", help="Database root (default: $EDGEATTN_TVM_DB, else kernels/tvm_db in a source checkout, else ~/.cache/edgeattn/tvm_db)."),
    pipeline: str = typer.Option("default", "--pipeline", "-p", help="Pass pipeline, as for compile (the tasks depend on it)."),
    retune: bool = typer.Option(False, "--retune", help="Also tune tasks that already have records."),
    remote: Optional[str] = typer.Option(None, "--remote", help="HOST:PORT of a TVM RPC tracker: measure candidates on the device registered there under --key (same CPU kind as this machine)."),
    key: Optional[str] = typer.Option(None, "--key", help="--remote: the device kind's key at the tracker."),
):
    """Tune MODEL's TVM kernels for this CPU with MetaSchedule; no artifact is written.

    Records go to the tuning database under a key of target, CPU model and cores; a later
    `edgeattn compile MODEL --target tvm` (same --tuning-db) applies them and ships them in the
    artifact. Tasks that already have records are skipped unless --retune. MetaSchedule's own log
    goes to a file beside the database (its path is printed).

    Examples:

        edgeattn tune digits-vit --trials 64

        edgeattn tune model.onnx --trials 200 --tuning-db ~/tvm-db

        edgeattn tune digits-vit --trials 64 --remote 10.0.0.5:9190 --key epyc   # measured on the device
    """
    from edgeattn import targets
    from edgeattn.compiler.frontend import load_source
    from edgeattn.compiler.pipeline import check_pipeline, run_pipeline
    from edgeattn.kernels import tvm_tuning

    _check_trials("--trials", trials, "no tuning, only report what the database holds")
    check_pipeline(pipeline)
    tgt = targets.get("tvm")
    ok, reason = tgt.available()
    if not ok:
        raise CompileError(f"target 'tvm' is unavailable: {reason}")
    if bool(remote) != bool(key):
        raise CompileError("tune --remote and --key go together", "pass both: --remote TRACKER_HOST:PORT --key DEVICE_KEY")
    options = {"trials": trials, "retune": retune, **({"tuning_db": str(tuning_db)} if tuning_db else {}),
               **({"rpc": {"tracker": remote, "key": key}} if remote else {})}
    with _progress() as bar:
        task = bar.add_task(f"tune {model}", total=None, count="")

        def say(msg: str) -> None:
            bar.update(task, description=f"tune {model}: {msg}")

        say("load" if model.endswith(".onnx") else "export")
        src = load_source(model)
        run_pipeline(src.model, pipeline, on_pass=lambda p: say(f"pass {p}"))  # the graph compile would build
        run_pipeline(src.model, pipeline, on_pass=lambda p: say(f"pass {p}"), finish=True)
        say("legalize for tvm")
        tgt.legalize(src.model)
        say("extract tasks, tune")
        rep = tgt.tune(src.model, {**options, "tuning_progress": _tuning_display(bar)})
    db_dir = Path(rep["database"])
    records, workloads = tvm_tuning.count_records(db_dir)
    where = f" on {rep['measured_on']}" if rep.get("measured_on") else ""
    line = (f"tuned {model} for {rep['target_key']}{where}: {rep['trials']} trials (budget {rep['budget']}) for the "
            f"{rep['tasks_tuned']} of {rep['tasks']} tasks without records, in {rep['seconds']:.0f} s")
    if rep.get("failed_trials"):
        line += f", [yellow]{rep['failed_trials']} failed[/] ({escape(rep.get('first_error', ''))})"
    out.print(line, highlight=False)
    if rep.get("reason"):
        out.print(f"  {escape(rep['reason'])}", highlight=False)
    out.print(f"this model's tasks with a record: {rep['records_found']} of {rep['tasks']}", highlight=False)
    out.print(f"database: {records} tuning records for {workloads} workloads in {escape(str(db_dir))}", highlight=False)
    print_tuning_log(rep)
    db_flag = f" --tuning-db {tuning_db}" if tuning_db else ""
    out.print(f"next: edgeattn compile {escape(model)} --target tvm{escape(db_flag)}", highlight=False)


@app.command("explain")
@_guard
def explain_cmd(artifact: Path = typer.Argument(..., help="Artifact directory."),
                layers: bool = typer.Option(False, "--layers", help="int8: each MatMul's output error (SNR, cosine) against the float model."),
                csv: Optional[Path] = typer.Option(None, "--csv", help="With --layers: also write the table to this CSV file.")):
    """Show an artifact's passes, rewrite plan (with its measured accuracy) and final accuracy.

    Examples:

        edgeattn explain out/gpt2

        edgeattn explain out/digits-int8 --layers --csv digits-int8-layers.csv
    """
    from edgeattn.runtime.artifact import verify_artifact

    if csv is not None and not layers:
        raise CompileError("--csv writes the --layers table", "add --layers")
    check_output_file("--csv", csv)
    m = verify_artifact(artifact)
    print_compile_summary(m, artifact)
    if not m.get("plan") and not m.get("quantization"):
        out.print("no rewrite plan: the exact graph (only exact passes ran)")
    if layers:
        q = m.get("quantization") or {}
        if q and not q.get("accepted"):
            raise CompileError(f"{artifact} ships the float graph: int8 missed its budget ({q.get('reason', '')})",
                               "no int8 layers to report; loosen --budget (e.g. cosine>=0.99) and recompile")
        if not q.get("layers"):
            raise CompileError(f"{artifact} has no int8 layer report", "compile with --precision int8 first")
        print_quant_layers(q, csv)


@app.command("run")
@_guard
def run_cmd(
    artifact: Path = typer.Argument(..., help="Artifact directory."),
    input: List[str] = typer.Option([], "--input", "-i", help="NAME=FILE.npy; omit to use random example inputs."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write outputs to this .npz file."),
):
    """Run an artifact once and print its outputs.

    Examples:

        edgeattn run out/deit --input pixel_values=img.npy

        edgeattn run out/deit --save outputs.npz
    """
    import numpy as np

    from edgeattn import runtime
    from edgeattn.runtime.npyfiles import load_input_files, npz_target, save_npz

    save = npz_target(save) if save else None  # the real name (numpy appends .npz), checked before running
    sess = runtime.load(artifact)
    feeds = load_input_files(input) if input else sess.example_feeds()
    outputs = sess.run(feeds)
    for name, value in outputs.items():
        flat = value.ravel()
        out.print(f"{name}: shape {tuple(value.shape)} {value.dtype}, first values {np.array2string(flat[:6], precision=5)}")
    if save:
        save_npz(save, outputs)
        out.print(f"saved {save}")


@app.command("profile")
@_guard
def profile_cmd(
    artifact: Path = typer.Argument(..., help="Artifact directory."),
    runs: int = typer.Option(50, "--runs", "-n", min=1, help="Timed runs."),
    warmup: int = typer.Option(5, "--warmup", "-w", min=0, help="Untimed warm-up runs."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Backend threads (default: all cores)."),
    top: int = typer.Option(12, "--top", min=0, help="Per-op rows to show."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the full report as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the report as CSV."),
    remote: Optional[str] = typer.Option(None, "--remote", help="HOST:PORT of a TVM RPC tracker (with --key) or server: profile on that device."),
    key: Optional[str] = typer.Option(None, "--key", help="--remote: the device kind's key at the tracker."),
):
    """Measure latency percentiles, throughput, peak memory and per-op time of an artifact.

    Examples:

        edgeattn profile out/deit --runs 100

        edgeattn profile out/deit --json prof.json --csv prof.csv

        edgeattn profile out/deit-tvm --remote 10.0.0.5:9190 --key rpi5   # on a device, via a TVM RPC tracker
    """
    from edgeattn import runtime
    from edgeattn.runtime import report as report_io

    check_output_file("--json", json_path)
    check_output_file("--csv", csv_path)
    if remote or key:
        if not remote:
            raise CompileError("--key needs --remote HOST:PORT", "add --remote with the tracker's address")
        from edgeattn.runtime.remote import profile_remote

        with err.status(f"profile on {remote}" + (f" ({key})" if key else "")):
            rep = profile_remote(artifact, remote, key=key, runs=runs, warmup=warmup)
    else:
        check_threads("--threads", threads)
        sess = runtime.load(artifact, threads=threads)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("profile", total=warmup + runs)
            rep = sess.benchmark(runs=runs, warmup=warmup, per_op=True,
                                 progress=lambda i, total: bar.update(task, completed=i, total=total))
    print_profile(rep, top)
    if json_path:
        report_io.write_json(rep, json_path)
    if csv_path:
        report_io.write_csv(rep, csv_path)


@app.command("check")
@_guard
def check_cmd(artifact: Path = typer.Argument(..., help="Artifact directory (one that carries check.npz).")):
    """Check an artifact on the device it was built for, against the reference outputs made at compile.

    Example (on the GPU machine; needs numpy, apache-tvm-ffi and the driver only):

        edgeattn check out/deit-cuda
    """
    from edgeattn import runtime
    from edgeattn.runtime.check import check_artifact

    rows = check_artifact(runtime.load(artifact))
    for r in rows:
        mark = "[green]pass[/]" if r["passed"] else "[red]FAIL[/]"
        out.print(f"batch {r['batch']}: max abs error {r['max_abs_error']:.3g}, cosine {r['cosine']:.6f}  {mark}")
    if not all(r["passed"] for r in rows):
        raise typer.Exit(1)


@app.command("inspect")
@_guard
def inspect_cmd(
    model: str = typer.Argument(..., help="Zoo name, .onnx file, HF folder, or artifact directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """List the attention sites of a model or artifact with their shapes and FLOPs.

    Examples:

        edgeattn inspect deit-small

        edgeattn inspect out/deit --json
    """
    from edgeattn.compiler.inspect_sites import inspect_target

    with err.status(f"inspecting {model}"):
        info = inspect_target(model)
    if as_json:
        out.print_json(json.dumps(info))
        return
    t = Table(title=f"attention sites of {info['model']}")
    for col in ("#", "q (B,H,S,d)", "k", "v", "mask", "causal", "scale", "GFLOP"):
        t.add_column(col)
    for i, s in enumerate(info["sites"]):
        gf = f"{s['flops'] / 1e9:.3f}" if s["flops"] is not None else "?"
        t.add_row(str(i), _shape(s["q"]), _shape(s["k"]), _shape(s["v"]), s["mask"], "yes" if s["causal"] else "no",
                  f"{s['scale']:.4g}" if s["scale"] else "default", gf)
    out.print(t)
    for u in info["unmatched"]:
        out.print(f"[yellow]unmatched[/] {escape(u['node'])}: {escape(u['reason'])}")


def _shape(dims: list) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


@app.command("targets")
def targets_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List compile targets, the precisions each builds, whether each is available here, and why not.

    Examples:

        edgeattn targets

        edgeattn targets --json
    """
    from edgeattn import targets

    rows = targets.describe_all()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table(title="targets")
    for col in ("target", "available", "precisions", "detail", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], "[green]yes[/]" if r["available"] else "[red]no[/]", ", ".join(r["precisions"]),
                  escape(r["reason"]), escape(r["description"]))
    out.print(t)


@app.command("pipelines")
def pipelines_cmd():
    """List the pass pipelines and the passes they run.

    Example:

        edgeattn pipelines
    """
    from edgeattn import passes
    from edgeattn.compiler.pipeline import FINISH, PIPELINES

    t = Table(title="pipelines")
    t.add_column("pipeline")
    t.add_column("passes (→ the --rewrite plan → the finishing passes)")
    for name, plist in PIPELINES.items():
        steps = plist + (["[plan]"] + FINISH[name] if FINISH.get(name) else [])
        t.add_row(name, escape(" → ".join(steps)) or "(export as is)")  # escaped: rich reads [plan] as a tag
    out.print(t)
    p = Table(title="passes")
    p.add_column("pass")
    p.add_column("what it does")
    for name, desc in passes.DESCRIPTIONS.items():
        p.add_row(name, desc)
    out.print(p)


@app.command("models")
def models_cmd():
    """List the built-in zoo models.

    Example:

        edgeattn models
    """
    from edgeattn.models.zoo import ZOO

    t = Table(title="zoo (name@N selects resolution or sequence length)")
    t.add_column("model")
    t.add_column("builder")
    for name, path in ZOO.items():
        t.add_row(name, path)
    out.print(t)


@app.command("bench")
@_guard
def bench_cmd(
    model: str = typer.Argument(..., help="Zoo name, .onnx file or HF folder."),
    targets_: str = typer.Option("ort", "--targets", help="Comma-separated targets to compile and time."),
    precision: str = typer.Option("fp32", "--precision", help="Comma-separated precisions (fp32, bf16, int8)."),
    baselines: bool = typer.Option(False, "--baselines", help="Also time ORT's transformers optimizer and OpenVINO on the plain export."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report directory (default: bench/MODEL)."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Interleaved rounds."),
    runs: int = typer.Option(10, "--runs", min=1, help="Runs per candidate per round."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads per backend (default: 2, or 1 on a 1-core machine)."),
    rewrite: List[str] = typer.Option([], "--rewrite", "-r", help="Also time each target with this rewrite plan (as for compile; `auto` searches once)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Accuracy budget for --rewrite and int8 (as for compile)."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="int8: activation ranges (as for compile)."),
    outliers: float = typer.Option(2.0, "--outliers", help="int8: outlier-channel split ratio (as for compile; 0 = off)."),
    remote: Optional[str] = typer.Option(None, "--remote", help="HOST:PORT of a TVM RPC tracker (with --key) or server: time the TVM-library targets (tvm, mobile) on that device."),
    key: Optional[str] = typer.Option(None, "--key", help="--remote: the device kind's key at the tracker."),
):
    """Compile MODEL for several targets and time them against torch eager and plain ORT.

    Each candidate runs in its own process; rounds are interleaved so machine drift hits all
    alike. Writes bench.json, bench.csv and a self-contained bench.html with plots.

    Examples:

        edgeattn bench deit-small --targets ort

        edgeattn bench minilm-l6@512 --targets ort,openvino --precision fp32,bf16 --baselines

        edgeattn bench digits-vit --targets ort,openvino --rewrite auto --budget "top1-drop<=0.5"

        edgeattn bench deit-small --targets mobile --remote 10.0.0.5:9190 --key rpi5   # timed on the device
    """
    from edgeattn.compiler.bench import run_bench

    check_threads("--threads", threads)
    threads = threads or min(2, cores())
    check_int8_options("int8" if "int8" in precision.split(",") else "fp32", calib=None, calib_method=calib_method,
                       smooth=0.5, outliers=outliers)
    output = output or Path("bench") / model.replace("@", "_").replace("/", "_")
    if remote or key:
        if not remote:
            raise CompileError("--key needs --remote HOST:PORT", "add --remote with the tracker's address")
        from edgeattn.compiler.bench_remote import run_remote_bench

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task(f"bench {model}", total=None)
            result = run_remote_bench(model, [t.strip() for t in targets_.split(",") if t.strip()], output, remote=remote,
                                      key=key, rounds=rounds, per_round=runs, rewrites=rewrite, budget=budget,
                                      say=lambda m: bar.update(task, description=f"bench {model}: {m}"))
        print_remote_bench(result)
        out.print(f"wrote {output / 'bench.json'}")
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(f"bench {model}", total=None)
        result = run_bench(model, [t.strip() for t in targets_.split(",") if t.strip()],
                           [p.strip() for p in precision.split(",") if p.strip()], output, baselines=baselines,
                           rounds=rounds, per_round=runs, threads=threads, rewrites=rewrite, budget=budget,
                           quant={"method": calib_method, "outliers": outliers},
                           say=lambda m: bar.update(task, description=f"bench {model}: {m}"))
    print_bench(result)
    out.print(f"wrote {output / 'bench.json'}, bench.csv, bench.html")


def main() -> None:
    # typer 0.2x runs on its own copy of click: its base exception is found through a public subclass
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        rc = app(prog_name="edgeattn", standalone_mode=False)
    except click_error as e:  # a usage error: one line like ours, not typer's boxed panel
        if type(e).__name__ == "NoArgsIsHelpError":  # the help was printed
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        where = f" — see `{ctx.command_path} --help`" if ctx is not None else ""
        err.print(f"[bold red]error:[/] {escape(e.format_message())}{escape(where)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
