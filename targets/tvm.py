"""TVM CPU target: the canonical graph → Relax (ONNX frontend) → LLVM for the host CPU → `model.so`.

Legalization, checked against apache-tvm 0.27:
- Relax's ONNX frontend has no ONNX `Attention`-23 converter. Its converter table is keyed by
  op name only (the domain is ignored) and the one `Attention` entry is com.microsoft's packed-QKV
  op, so an opset-23 node would be misread; every canonical `Attention` is therefore expanded by
  `decompose-attention` first (a site it cannot expand exactly is an error, not a silent misread).
- The frontend cannot import the symbolic batch dim through every op (e.g. `Expand` of a
  `(batch,1,1,S)` mask fails), and MetaSchedule tunes static shapes only. So the graph keeps its
  symbolic dims (the manifest's specs are unchanged) but is compiled with every named symbolic
  input dim fixed to `STATIC_DIM` (1), recorded as `backend_options.static_dims`; the runtime
  backend runs a larger batch as a loop of batch-1 calls (see runtime/backends/tvm.py).

Untuned, LegalizeOps' TIR is plain loops (no schedule, no threading): 8.1 s on deit-small; the
default schedules bring that to ~160 ms (ORT: ~65). `tune()` runs MetaSchedule
(s_tir.meta_schedule) on the fused Relax module's TIR tasks and commits records to a JSON
database per target key (kernels/tvm_tuning.py says where; MetaSchedule's log goes to files
beside it, reported as "log_dir");
`build()` tunes first when options["tune_trials"] > 0, and whenever that database holds records for
the module's tasks it compiles with them (MetaScheduleApplyDatabase after the same fusion tasks are
extracted from) and ships those records in the artifact under tuning/. Kernels without a record,
and every kernel of an untuned build, get the default CPU schedules of kernels/tvm_cpu_rules.py.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from edgeattn.runtime.checks import cores as _default_threads  # all the cores this process may use

NAME = "tvm"
DESCRIPTION = "Apache TVM (Relax VM), LLVM for the host CPU, shared-library payload"
RUNTIME_BACKEND = "tvm"
PAYLOAD = "model.so"
PRECISIONS = ("fp32",)
ENTRY = "main"
# Size given to every named symbolic input dim (the frontend's "batch").
STATIC_DIM = 1


def _import_tvm():
    import tvm  # noqa: PLC0415 - lazy: a user of another target never needs tvm
    from tvm import relax  # noqa: F401, PLC0415

    return tvm


def available() -> tuple[bool, str]:
    try:
        tvm = _import_tvm()
    except ImportError:
        return False, "apache-tvm is not installed — pip install 'edgeattn[tvm]'"
    try:
        if not tvm.runtime.enabled("llvm"):
            return False, f"apache-tvm {tvm.__version__} was built without LLVM; it cannot compile for the CPU"
    except Exception as e:  # a broken install
        return False, f"apache-tvm {tvm.__version__} cannot start: {str(e).splitlines()[0] if str(e) else e!r}"
    return True, f"apache-tvm {tvm.__version__}"


def _attention_nodes(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph.all_nodes() if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]


def _symbol(d) -> str | None:
    if isinstance(d, int) or d is None:
        return None
    name = getattr(d, "value", None)
    return None if name is None else str(name)


def static_dims(model: ir.Model, size: int = STATIC_DIM) -> dict[str, int]:
    """The size each named symbolic dim of the graph inputs is compiled for."""
    return {s: size for v in model.graph.inputs for s in map(_symbol, v.shape or ()) if s is not None}


def legalize(model: ir.Model) -> dict:
    """Expand every ONNX Attention: Relax's ONNX frontend cannot read Attention-23. The patch
    embedding's Conv becomes a MatMul (TVM's default GEMM schedule beats its naive conv2d)."""
    from edgeattn import passes  # noqa: PLC0415 - targets may call passes (legalization)

    patchify = passes.create("patchify-conv")
    patchify(model)
    total = len(_attention_nodes(model))
    out = {"attention_native": 0, "attention_decomposed": 0, "conv_patchified": patchify.sites_changed}
    if total:
        p = passes.create("decompose-attention")
        p(model)
        left = _attention_nodes(model)
        if left:
            reasons = "; ".join(s["reason"] for s in p.details.get("skipped", [])) or "not matched"
            raise ValueError(f"tvm cannot run {len(left)} ONNX Attention node(s) that decompose-attention "
                             f"cannot expand ({reasons}) — compile for --target ort or openvino instead")
        out["attention_decomposed"] = total
    return out


def host_target(options: dict | None = None):
    """`Target` for this machine's CPU (LLVM's host CPU name); options may override mcpu/num_cores."""
    tvm = _import_tvm()
    options = options or {}
    mcpu = options.get("mcpu") or tvm.target.codegen.llvm_get_system_cpu()
    cores = options.get("num_cores")
    cores = _default_threads() if cores is None else cores
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise ValueError(f"tvm num_cores {cores!r} is not a positive integer — pass e.g. num_cores=4 or leave it out")
    # TVM 0.27 rejects the "llvm -mcpu=..." string form: a dict it is.
    return tvm.target.Target({"kind": "llvm", "mcpu": str(mcpu), "num-cores": int(cores)})


def target_key(target) -> str:
    """Key of a target's tuning records (kernels/tvm_db/<key>/): kind, CPU model, cores."""
    return f"{target.kind.name}-{target.attrs['mcpu']}-{int(target.attrs['num-cores'])}c"


def import_relax(model: ir.Model, sizes: dict[str, int] | None = None):
    """The legalized graph as a static-shape Relax IRModule (weights bound as constants); `sizes`
    overrides the size of named symbolic dims (default STATIC_DIM each).

    A copy of the graph gets those sizes on its inputs and is constant-folded first (onnxscript's
    folder): shape arithmetic on the batch (HF's mask building: Shape → Range → Expand) otherwise
    reaches Relax as an unknown `range_len` dim that every later op carries, and kernels that need
    static shapes (the fused attention of kernels/tvm_attention.py) then do not apply."""
    _import_tvm()
    import onnx_ir.passes.common  # noqa: PLC0415
    import onnxscript.optimizer  # noqa: PLC0415
    from tvm.relax.frontend.onnx import from_onnx  # noqa: PLC0415

    dims = {**static_dims(model), **(sizes or {})}
    static = ir.from_proto(ir.to_proto(model))
    shapes = {}
    for v in static.graph.inputs:
        if v.shape is None:
            continue
        shape = [d if isinstance(d, int) else dims.get(_symbol(d)) for d in v.shape]
        if any(d is None for d in shape):
            raise ValueError(f"input {v.name!r} has an unnamed dynamic dim {v.shape}; tvm compiles static "
                             "shapes — export the model with named or fixed dims")
        shapes[v.name] = shape
        v.shape = ir.Shape(shape)
    onnxscript.optimizer.fold_constants(static)
    # the folder writes small Constant nodes with value_int(s)/value_float(s), which the frontend rejects
    ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(static)
    return from_onnx(ir.to_proto(static), shape_dict=shapes, keep_params_in_input=False)


TUNING_DIR = "tuning"
DEFAULT_TRIALS = 64
# This target tunes kernels: the CLI accepts --tune-trials/--tuning-db for it (and `edgeattn tune`).
TUNABLE = True


def _graph_kernels(target) -> list:
    """Relax passes before LegalizeOps: gathers that cannot read out of bounds, attention chains into one fused kernel
    (kernels/tvm_attention.py), then vectorisable GELU/softmax/exp (kernels/tvm_fast_math.py)."""
    from edgeattn.kernels.tvm_attention import fuse_attention  # noqa: PLC0415
    from edgeattn.kernels.tvm_fast_math import fast_math  # noqa: PLC0415

    return [_clamped_take(), fuse_attention(target), fast_math()]


def _clamped_take():
    """Relax pass: every `take` (ONNX Gather) in clip mode instead of the frontend's fast mode, which
    reads out of bounds on a bad index (a segfault on a token id past the vocabulary) and warns so at
    every compile. The runtime refuses such feeds first (runtime.spec.check_index_bounds); this keeps
    model.so safe where it is called without our runtime. The frontend has already made negative
    indices positive, so in-range results are unchanged; the clamp costs two compares per index."""
    import tvm  # noqa: PLC0415
    from tvm import relax  # noqa: PLC0415
    from tvm.relax.expr_functor import PyExprMutator, mutator  # noqa: PLC0415

    from edgeattn.kernels.tvm_fast_math import rewrite_relax_functions  # noqa: PLC0415

    @mutator
    class _Clip(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.take" or call.attrs.mode != "fast":
                return call
            return relax.op.take(call.args[0], call.args[1], call.attrs.axis, mode="clip")

    @tvm.transform.module_pass(opt_level=0, name="EdgeattnClampedTake")
    def _pass(mod, _ctx):
        return rewrite_relax_functions(mod, _Clip(mod))

    return _pass


def _fused(mod, target):
    """The module as the CPU pipeline fuses it before lowering: the form tasks are extracted from."""
    tvm = _import_tvm()
    from tvm import relax  # noqa: PLC0415
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # noqa: PLC0415

    with target, tvm.transform.PassContext(opt_level=3):
        seq = cpu.library_dispatch_passes(target) + _graph_kernels(target) + [
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()] + _layout_free()
        return tvm.transform.Sequential(seq)(mod)


def _layout_free() -> list:
    """Mark each kernel's constant (weight) parameters layout-free, so a schedule may choose their
    layout (_weight_prepack). The pass leaves the unmarked originals behind: removed, so they are
    neither compiled nor extracted as tasks of their own."""
    from tvm import relax  # noqa: PLC0415

    return [relax.transform.AttachAttrLayoutFreeBuffers(), relax.transform.DeadCodeElimination()]


def _weight_prepack() -> list:
    """Weight layouts chosen by the schedules (tuned records' RewriteLayout, kernels/tvm_cpu_rules.py's
    GEMM strips), applied to the constant weights while compiling: the packing blocks split out of
    each kernel into functions of their own, which FoldConstant then evaluates on the weights. The
    artifact carries the packed weights and runs no packing."""
    from tvm import relax  # noqa: PLC0415

    return [_split_layout_rewrite_preproc(), relax.transform.FoldConstant()]


def _packs_weights(func) -> bool:
    """Whether a PrimFunc's root holds a layout-rewrite (weight packing) block."""
    from tvm import s_tir  # noqa: PLC0415

    from edgeattn.kernels.tvm_cpu_rules import PREPACK  # noqa: PLC0415

    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # no block named root (cumsum's hand-written IR): nothing packed there
        return False
    return any(PREPACK in sch.get(b).annotations for b in blocks)


def _split_layout_rewrite_preproc():
    """relax's SplitLayoutRewritePreproc, shown only the kernels that pack weights: it visits every
    PrimFunc and stops on one whose body is not a root block of blocks (TOPI's cumsum, in RoBERTa's
    position ids: "There should be a compute block if there is only one subtree under the root").
    The others are taken out for the pass and put back after it."""
    import tvm  # noqa: PLC0415
    from tvm import relax, tirx  # noqa: PLC0415

    @tvm.transform.module_pass(opt_level=0, name="EdgeattnSplitLayoutRewritePreproc")
    def _pass(mod, _ctx):
        aside = {gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and not _packs_weights(f)}
        shown = tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv not in aside}, attrs=mod.attrs)
        out = relax.transform.SplitLayoutRewritePreproc()(shown)
        for gv, f in aside.items():
            out.update_func(gv, f)
        return out

    return _pass


def compile_default(mod, target, database=None):
    """tvm.compile with the CPU pipeline, vectorisable GELU/softmax (kernels/tvm_fast_math.py), and
    default schedules (kernels/tvm_cpu_rules.py) for every kernel the tuning `database` (if any) has
    no record for: 50× faster than LegalizeOps' serial
    loops on deit-small. The fusion is the one tasks are extracted from, so records match."""
    import contextlib  # noqa: PLC0415

    tvm = _import_tvm()
    from tvm import relax  # noqa: PLC0415
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # noqa: PLC0415

    from edgeattn.kernels.tvm_cpu_rules import apply_default_schedules  # noqa: PLC0415

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(m, _ctx):
        with target:  # MetaScheduleApplyDatabase reads the target when it is constructed
            tuned = [relax.transform.MetaScheduleApplyDatabase(enable_warning=False)] if database is not None else []
            return tvm.transform.Sequential(
                cpu.library_dispatch_passes(target) + _graph_kernels(target) + cpu.legalize_passes(target)
                + _layout_free() + tuned + [apply_default_schedules()]
                + _weight_prepack() + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))(m)

    with database if database is not None else contextlib.nullcontext():
        return tvm.compile(mod, target, relax_pipeline=pipeline)


def _scheduled(task) -> bool:
    """A kernel that arrives scheduled (kernels/tvm_attention.py's): not a tuning task."""
    funcs = [f for _, f in task.dispatched[0].functions_items()] + [task.mod]
    return any(f.attrs is not None and bool(f.attrs.get("tirx.is_scheduled", False)) for f in funcs)


def _tasks(mod, target) -> list:
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    return [t for t in ms.relax_integration.extract_tasks(_fused(mod, target), target) if not _scheduled(t)]


def _count(options: dict, key: str, default: int) -> int:
    v = options.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"tvm {key} {v!r} is not a non-negative integer — pass e.g. {key}=64 (0 = no tuning)")
    return v


def _runner(options: dict, target):
    """Measure candidates here (on the target's thread count), or (options["rpc"] = {"tracker":
    "HOST:PORT", "key": KEY}) on the device behind a TVM RPC tracker: builds stay here, so the device
    must be the same CPU kind."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    from edgeattn.kernels.tvm_tuning import cold_evaluator, local_runner  # noqa: PLC0415

    rpc = options.get("rpc")
    if not rpc:
        return local_runner(target)
    from edgeattn.runtime.remote import parse_address  # noqa: PLC0415

    host, port = parse_address(rpc["tracker"])
    return ms.runner.RPCRunner(ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=rpc["key"],
                                                   session_timeout_sec=int(rpc.get("timeout_s", 60))),
                               evaluator_config=cold_evaluator())


def tune_relax_module(mod, target, options: dict) -> dict:
    """MetaSchedule over `mod`'s tasks that have no record yet in the target key's database."""
    import time  # noqa: PLC0415

    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    from edgeattn.kernels import tvm_tuning  # noqa: PLC0415

    trials = _count(options, "trials", DEFAULT_TRIALS)
    progress = options.get("progress")
    t0 = time.perf_counter()
    key = target_key(target)
    db_dir = tvm_tuning.database_dir(key, options)
    if trials or (db_dir / tvm_tuning.RECORDS).is_file():
        db = tvm_tuning.open_database(db_dir, create=True)
    else:  # 0 trials only report: no empty database written into a folder that had none
        db = ms.database.MemoryDatabase()
    tasks = _tasks(mod, target)
    todo = tasks if options.get("retune") else [t for t in tasks if tvm_tuning.best_record(db, t.dispatched[0]) is None]
    report = {"tuned": True, "trials": 0, "tasks": len(tasks), "tasks_tuned": len(todo),
              "tasks_reused": len(tasks) - len(todo), "budget": trials, "database": str(db_dir),
              "target_key": key, **({"measured_on": f"{options['rpc']['key']} via tracker {options['rpc']['tracker']}"}
                                    if options.get("rpc") else {})}
    if todo and trials:
        per_iter = max(1, min(64, -(-trials // len(todo))))
        cores = int(target.attrs["num-cores"])
        # tuning_progress: callable(state dict) with the task being tuned and trials sent/measured
        # (TuningMonitor); progress: callable(measured, budget), as before.
        monitor = tvm_tuning.TuningMonitor(options.get("tuning_progress"), len(todo), trials)

        def measured(done: int, total: int) -> None:
            monitor.measured(counter.done, counter.failed)
            if callable(progress):
                progress(done, total)

        counter = tvm_tuning.counting_callback(measured, trials)
        callbacks = list(ms.measure_callback.MeasureCallback.create("default")) + [counter]
        # MetaSchedule's own log goes to files under <db root>/logs/<key>/<run>/logs/, not the terminal.
        with tvm_tuning.quiet_logs(tvm_tuning.database_root(options), key) as work_dir:
            monitor.notify()
            with tvm_tuning.without_tensor_intrin(target):  # this also configures MetaSchedule's loggers
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    todo, work_dir=str(work_dir), num_threads=cores, seed=options.get("seed", 0))
            with monitor.attached():
                ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
                              num_trials_per_iter=per_iter, builder=tvm_tuning.make_builder(options.get("builder", "inprocess"), min(cores, per_iter)),
                              runner=_runner(options, target), database=db,
                              cost_model=tvm_tuning.cost_model(options.get("cost_model"), trials),
                              measure_callbacks=callbacks, task_scheduler="gradient")
            monitor.finish()
        report["trials"], report["failed_trials"] = counter.done, counter.failed
        report["log_dir"] = str(work_dir / "logs")
        if counter.first_error:
            report["first_error"] = counter.first_error
    elif not todo:
        report["reason"] = "every task already has a record in the database (retune=True, or `edgeattn tune --retune`, tunes them again)"
    report["records_found"] = sum(tvm_tuning.best_record(db, t.dispatched[0]) is not None for t in tasks)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def build(model: ir.Model, workdir: Path, options: dict) -> dict:
    """Relax import, (tune,) CPU pipeline with the tuning database if it has records, export a shared library."""
    tvm = _import_tvm()
    precision = str(options.get("precision", "fp32")).lower()
    if precision not in PRECISIONS:
        raise ValueError(f"tvm precision {precision!r} is not supported — use one of {', '.join(PRECISIONS)}")
    target = host_target(options)
    trials = _count(options, "tune_trials", 0)
    apply = options.get("apply_tuning", True)
    if apply not in (True, False, "all"):
        raise ValueError(f"tvm apply_tuning {apply!r} is unknown — use True (records that beat the default "
                         "schedules, timed while compiling), 'all' (every record, untimed) or False")
    mod = import_relax(model)
    tuning = None
    if trials:
        tuning = tune_relax_module(mod, target, {**options, "trials": trials})
    from edgeattn.kernels import tvm_tuning  # noqa: PLC0415

    payload = {"model": PAYLOAD}
    applied = {"records": 0}
    db_dir = tvm_tuning.database_dir(target_key(target), options)
    executable = None
    if apply and tvm_tuning.has_records(db_dir):
        db = tvm_tuning.open_database(db_dir)
        tasks = _tasks(mod, target)
        if apply == "all":  # e.g. records measured on a remote device, which this host cannot time
            better, beaten = [t.dispatched[0] for t in tasks], []  # export_records skips tasks without one
        else:
            better, beaten = _records_that_beat_the_defaults(db, tasks, target)
        shipped = tvm_tuning.export_records(db, better, Path(workdir) / TUNING_DIR)
        applied = {"records": shipped, "tasks": len(tasks), "database": str(db_dir), "slower_than_default": beaten,
                   "selection": "all" if apply == "all" else "faster than the default schedule, timed with cold weights"}
        if shipped:  # compiled from the shipped subset: tasks without a (better) record get the defaults
            executable = compile_default(mod, target, tvm_tuning.open_database(Path(workdir) / TUNING_DIR))
            payload["tuning_records"] = f"{TUNING_DIR}/{tvm_tuning.RECORDS}"
            payload["tuning_workloads"] = f"{TUNING_DIR}/{tvm_tuning.WORKLOADS}"
    if executable is None:
        executable = compile_default(mod, target) if options.get("default_schedules", True) else tvm.compile(mod, target)
    # export_library links the LLVM objects with the system compiler (gcc/cc must be on PATH).
    executable.export_library(str(Path(workdir) / PAYLOAD))
    opts = {"entry": ENTRY, "static_dims": static_dims(model), "target_key": target_key(target),
            "tuned": applied["records"] > 0,
            "target": {"kind": "llvm", "mcpu": str(target.attrs["mcpu"]), "num_cores": int(target.attrs["num-cores"])}}
    if applied["records"] or tuning or applied.get("slower_than_default"):
        opts["tuning"] = {"applied": applied, **({"run": {k: v for k, v in tuning.items()}} if tuning else {})}
    return {"backend": RUNTIME_BACKEND, "payload": payload, "backend_options": opts}


def _records_that_beat_the_defaults(db, tasks: list, target) -> tuple[list, list[str]]:
    """Task modules whose best record ran faster than the default schedule, both timed now, in one
    batch, with cold weights (kernels/tvm_tuning.records_against_defaults); a short tuning run, or
    one timed under other load, can leave records that are slower."""
    from edgeattn.kernels.tvm_tuning import best_record, records_against_defaults  # noqa: PLC0415

    found = [t for t in tasks if best_record(db, t.dispatched[0]) is not None]
    better, beaten = [], []
    for t, (tuned, default) in zip(found, records_against_defaults(db, [t.dispatched[0] for t in found], target)):
        if tuned is not None and (default is None or tuned < default):
            better.append(t.dispatched[0])
        else:
            beaten.append(t.task_name)
    return better, beaten


def tune(model: ir.Model, options: dict) -> dict:
    """MetaSchedule-tune a legalized graph for this CPU; records go to the target key's JSON database.

    options: trials (default 64), progress (callable(done, total)), tuning_progress (callable(state):
    see kernels/tvm_tuning.TuningMonitor), tuning_db (database root), retune (tune tasks that already have records), cost_model ("xgb"/"random"), seed,
    mcpu/num_cores (as for build). Returns {"tuned", "trials", "tasks", "database", "seconds", ...};
    "trials" counts the measurements made now (0 when every task already had a record).
    """
    if model is None:
        raise ValueError("tvm tune needs a model — pass the legalized onnx_ir.Model (targets.tvm.legalize first)")
    if _attention_nodes(model):
        raise ValueError("tvm tune got a graph with ONNX Attention nodes — run targets.tvm.legalize(model) first")
    target = host_target(options)
    return tune_relax_module(import_relax(model), target, options)
