"""MetaSchedule support for the TVM CPU target: where tuning records live, and a builder that works here.

Records: one MetaSchedule JSON database per target key (`targets.tvm.target_key`: kind, CPU model,
cores) under `<root>/<key>/` (`database_workload.json` + `database_tuning_record.json`). The root
is `kernels/tvm_db/` when running from the source tree, otherwise a user cache dir (see
`DEFAULT_ROOT`); the target option `tuning_db` or the environment variable `EDGEATTN_TVM_DB`
moves it (tests use a temporary one so they never write into the repository).

Logs: MetaSchedule logs every step at INFO to stdout by default. `quiet_logs` sends them to files
under `<root>/logs/<key>/<run>/logs/` instead (the last few runs are kept), and `TuningMonitor`
follows the task scheduler's log lines to report which task is tuned and how many trials were sent.

Builder: MetaSchedule's default LocalBuilder build function imports `tvm.s_tir.tensor_intrin` in
every worker process (tens of seconds on a small CPU, so its 30 s build timeout expires and every
candidate fails). `build_candidate` does the same build (RemoveWeightLayoutRewriteBlock + tvm.build)
without that import: CPU schedules from the default LLVM rules use no registered tensor intrinsics.

Only imported by targets/tvm.py; tvm is imported lazily, inside functions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Callable

ENV_DB = "EDGEATTN_TVM_DB"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
_SOURCE_DB = Path(__file__).resolve().parent / "tvm_db"


def _default_root() -> Path:
    """Where tuning records go by default.

    Records are user-generated (per CPU model and core count; nothing but .gitkeep is committed under
    kernels/tvm_db), so they are not package data. From the source tree (a checkout or an editable
    install: kernels/ sits next to pyproject.toml) they go to kernels/tvm_db/, as before. An installed
    package's directory may be read-only and is replaced on upgrade, so there they go to the user
    cache dir: $XDG_CACHE_HOME/edgeattn/tvm_db (default ~/.cache/edgeattn/tvm_db).
    """
    if (_SOURCE_DB.parent.parent / "pyproject.toml").is_file():
        return _SOURCE_DB
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "edgeattn" / "tvm_db"


DEFAULT_ROOT = _default_root()
LOGS = "logs"
KEEP_LOG_RUNS = 5


def database_root(options: dict | None = None) -> Path:
    """options["tuning_db"], else $EDGEATTN_TVM_DB, else kernels/tvm_db/."""
    root = (options or {}).get("tuning_db") or os.environ.get(ENV_DB)
    return Path(root).expanduser() if root else DEFAULT_ROOT


def database_dir(key: str, options: dict | None = None) -> Path:
    return database_root(options) / key


def has_records(db_dir: Path) -> bool:
    f = Path(db_dir) / RECORDS
    return f.is_file() and f.stat().st_size > 0


def count_records(db_dir: Path) -> tuple[int, int]:
    """(tuning records, workloads) in the JSON database in `db_dir` (one JSON line each; 0 if absent)."""
    def lines(name: str) -> int:
        f = Path(db_dir) / name
        if not f.is_file():
            return 0
        with f.open("rb") as fh:
            return sum(1 for ln in fh if ln.strip())

    return lines(RECORDS), lines(WORKLOADS)


def open_database(db_dir: Path, create: bool = False):
    """The JSON database in `db_dir` (created with its folders when `create`)."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    db_dir = Path(db_dir)
    if create:
        db_dir.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(str(db_dir / WORKLOADS), str(db_dir / RECORDS), allow_missing=create)


def best_record(db, mod):
    """The best record of task module `mod` in `db`, or None (never adds a workload to `db`)."""
    if not db.has_workload(mod):
        return None
    top = db.get_top_k(db.commit_workload(mod), 1)
    return top[0] if top else None


def export_records(db, task_mods: list, out_dir: Path) -> int:
    """Write the best record of each task into a fresh JSON database in `out_dir`; returns how many."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    found = [(m, r) for m in task_mods if (r := best_record(db, m)) is not None]
    if not found:
        return 0
    out = open_database(out_dir, create=True)
    for mod, rec in found:
        out.commit_tuning_record(ms.database.TuningRecord(rec.trace, out.commit_workload(mod), rec.run_secs,
                                                          rec.target, rec.args_info))
    return len(found)


def build_candidate(mod, target, _params):
    """MetaSchedule f_build: the default build without importing tvm.s_tir.tensor_intrin."""
    from tvm.tirx import build as tvm_build  # noqa: PLC0415 - what tvm.driver.build (deprecated) calls
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # noqa: PLC0415

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


@contextlib.contextmanager
def without_tensor_intrin(target):
    """While MetaSchedule sets up its tasks, let `import tvm.s_tir.tensor_intrin` be a no-op.

    TuneContext imports that module (about a minute on a 2-core CPU) only to register tensor
    intrinsics; the LLVM space generator uses them only on AVX-512/VNNI x86 targets. So for other
    targets a placeholder stands in for the duration, and is removed again afterwards (a later real
    import still works). On AVX-512 targets the real module is imported.
    """
    import tvm  # noqa: PLC0415

    name = "tvm.s_tir.tensor_intrin"
    try:
        wide = bool(tvm.target.codegen.target_has_features("avx512f", target))
    except Exception:  # not an x86 LLVM target
        wide = False
    if wide or name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        if type(sys.modules.get(name)) is types.ModuleType and not hasattr(sys.modules[name], "__file__"):
            del sys.modules[name]


def make_builder(kind: str = "inprocess", workers: int = 1, timeout_sec: float = 120.0):
    """The candidate builder: "inprocess" (default) or "local" (MetaSchedule's LocalBuilder).

    "local" starts a fresh pool of worker processes for every batch of candidates, and each worker
    imports tvm (~5 s here), which dominates small tuning budgets; "inprocess" builds the batch in
    this process with the same f_build (no per-build timeout, but LLVM CPU builds do not hang).
    """
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    if kind == "local":
        return ms.builder.LocalBuilder(max_workers=max(1, int(workers)), timeout_sec=timeout_sec,
                                       f_build=build_candidate)
    if kind != "inprocess":
        raise ValueError(f"tvm tuning builder {kind!r} is unknown — use 'inprocess' or 'local'")
    from tvm.ir.utils import derived_object  # noqa: PLC0415
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder  # noqa: PLC0415
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export  # noqa: PLC0415

    @derived_object
    class _InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for b in build_inputs:
                try:
                    results.append(BuilderResult(default_export(build_candidate(b.mod, b.target, None)), None))
                except Exception as e:  # a candidate that does not build is a failed trial, not an error
                    msg = str(e).strip().splitlines()
                    results.append(BuilderResult(None, f"InProcessBuilder: {msg[-1] if msg else type(e).__name__}"))
            return results

    return _InProcessBuilder()


def counting_callback(progress: Callable[[int, int], None] | None, total: int):
    """A MeasureCallback counting measured trials (and failed ones), reporting (done, total) after each batch."""
    from tvm.ir.utils import derived_object  # noqa: PLC0415
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    @derived_object
    class _Count(ms.measure_callback.PyMeasureCallback):
        def __init__(self):
            super().__init__()
            self.done = 0
            self.failed = 0
            self.first_error = None

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            self.done += len(runner_results)
            for b, r in zip(builder_results, runner_results):
                err = b.error_msg or r.error_msg
                if err:
                    self.failed += 1
                    self.first_error = self.first_error or str(err).strip().splitlines()[-1][:300]
            if progress is not None:
                progress(min(self.done, total), total)

    return _Count()


def cost_model(kind: str | None, trials: int) -> str:
    """xgb when xgboost imports and the budget is worth a model; random otherwise (or as asked)."""
    if kind:
        return kind
    if trials < 32:
        return "random"
    try:
        import xgboost  # noqa: F401, PLC0415
    except ImportError:
        return "random"
    return "xgb"


# --- logs and progress ---------------------------------------------------------------------------

MS_LOGGER = "tvm.s_tir.meta_schedule"
# The task schedulers log through loggers under this one (task_scheduler.gradient_based, ...); a
# handler here sees their lines. Not on MS_LOGGER itself: MetaSchedule's create_loggers (run by
# extracted_tasks_to_tune_contexts) reconfigures it with dictConfig, which would reject a handler it
# does not know by name, and clears the handlers of its existing child loggers, this one included;
# so attach after that call (TuningMonitor.attached around tune_tasks).
SCHEDULER_LOGGER = MS_LOGGER + ".task_scheduler"


@contextlib.contextmanager
def quiet_logs(db_root: Path, key: str):
    """Yield a fresh MetaSchedule work dir under <db_root>/logs/<key>/ whose logs/ gets every log line.

    MetaSchedule's create_loggers gives its console handler the level of the MS_LOGGER as it finds
    it (NOTSET → DEBUG: the whole log on stdout); setting WARNING first keeps only warnings and errors
    on the terminal while the files still get everything. The file handlers are closed afterwards.
    Keeps the newest KEEP_LOG_RUNS run folders of the key.
    """
    parent = Path(db_root) / LOGS / key
    run = parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run.mkdir(parents=True, exist_ok=True)
    older = sorted(p for p in parent.iterdir() if p.is_dir() and p != run)  # names sort by time
    for old in older[:max(0, len(older) - (KEEP_LOG_RUNS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    logging.getLogger(MS_LOGGER).setLevel(logging.WARNING)
    try:
        yield run
    finally:
        root = str(run)
        for lg in [logging.getLogger(MS_LOGGER)] + [v for k, v in logging.root.manager.loggerDict.items()
                                                   if k.startswith(MS_LOGGER + ".") and isinstance(v, logging.Logger)]:
            for h in list(lg.handlers):
                if isinstance(h, logging.FileHandler) and h.baseFilename.startswith(root):
                    lg.removeHandler(h)
                    h.close()


class TuningMonitor(logging.Handler):
    """Tuning progress as a dict, reported to `on_update` after each change.

    State: phase ("init" while MetaSchedule sets up its tasks, "tune", "done"), task (1-based index
    of the task being tuned), tasks, task_name, sent (trials sent to the builder so far), measured
    and failed (trials measured so far, from the measure callback), total (the trial budget).
    Task and sent come from the task scheduler's log lines (apache-tvm 0.27's wording); if they
    ever stop matching, measured still advances.
    """

    _INIT = re.compile(r'Initializing Task #(\d+): "([^"]*)"')
    _PICK = re.compile(r'picks Task #(\d+): "([^"]*)"')
    _SENT = re.compile(r"Sending (\d+) sample\(s\) to builder")

    def __init__(self, on_update: Callable[[dict], None] | None, tasks: int, total: int):
        super().__init__(logging.DEBUG)
        self.on_update = on_update
        self.state = {"phase": "init", "task": 0, "tasks": tasks, "task_name": "", "sent": 0,
                      "measured": 0, "failed": 0, "total": total}

    def notify(self) -> None:
        if self.on_update is not None:
            try:
                self.on_update(dict(self.state))
            except Exception:  # a broken progress display must not stop tuning
                self.on_update = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            return
        st = self.state
        if m := self._PICK.search(msg):
            st.update(phase="tune", task=int(m.group(1)) + 1, task_name=m.group(2))
        elif m := self._INIT.search(msg):
            st.update(task=int(m.group(1)) + 1, task_name=m.group(2))
        elif m := self._SENT.search(msg):
            st["sent"] = min(st["total"], st["sent"] + int(m.group(1)))
        else:
            return
        self.notify()

    def measured(self, done: int, failed: int) -> None:
        self.state.update(measured=done, failed=failed, sent=max(self.state["sent"], min(done, self.state["total"])))
        self.notify()

    def finish(self) -> None:
        self.state["phase"] = "done"
        self.notify()

    @contextlib.contextmanager
    def attached(self):
        lg = logging.getLogger(SCHEDULER_LOGGER)
        lg.addHandler(self)
        try:
            yield self
        finally:
            lg.removeHandler(self)


def _use_threads(n: int) -> None:
    """Runner-worker initializer. TVM sizes a new process's thread pool at half the logical CPUs on
    x86 (it assumes SMT), so on a 2-vCPU VM MetaSchedule's workers timed every candidate and every
    default schedule on one thread while the artifact runs on two: records that parallelise badly
    won those comparisons and then ran 1.1–1.8× slower than the defaults in the model."""
    os.environ["TVM_NUM_THREADS"] = str(n)


# Candidates are timed the way the model runs them: weights cold. A model's weights (87 MB for
# deit-small) do not stay in cache between its kernels, but MetaSchedule's default evaluator reruns a
# kernel for 100 ms with everything hot. deit-small's tuned fc2 against the default schedule, timed
# together: hot 1.98 vs 1.71 ms, weights flushed 2.65 vs 1.32, in the model ~1.8 vs ~1.55 a call;
# qkv 0.51 vs 0.38 hot, 0.89 vs 0.64 flushed. So every run starts with the non-input arguments
# flushed (enable_cpu_cache_flush: all but the first argument), one run per repeat.
COLD_REPEATS = 10


def cold_evaluator():
    """The runners' EvaluatorConfig: COLD_REPEATS runs, each after flushing the weights from cache."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    return ms.runner.EvaluatorConfig(number=1, repeat=COLD_REPEATS, min_repeat_ms=0, enable_cpu_cache_flush=True)


def local_runner(target):
    """MetaSchedule's LocalRunner with its workers on the target's thread count (num-cores), each
    run timed with cold weights."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    return ms.runner.LocalRunner(timeout_sec=60, evaluator_config=cold_evaluator(),
                                 initializer=functools.partial(_use_threads, int(target.attrs["num-cores"])))


def measure_kernels(mods: list, target, runner=None) -> list[float | None]:
    """Mean run seconds of each scheduled kernel module, built and run by the MetaSchedule builder
    and runner that tuning uses, one after another in one worker. None: not measured."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    built = make_builder("inprocess", 1).build([ms.builder.BuilderInput(m, target) for m in mods])
    inputs, where = [], []
    for i, (m, b) in enumerate(zip(mods, built)):
        if b.error_msg is None:
            # the arguments as built: a weight the schedule packs (its layout-rewrite block, removed by
            # build_candidate as for the records) arrives packed, as FoldConstant leaves it in the model
            inputs.append(ms.runner.RunnerInput(b.artifact_path, "cpu", ms.arg_info.ArgInfo.from_entry_func(m, remove_preproc=True)))
            where.append(i)
    out: list[float | None] = [None] * len(mods)
    runner = runner or local_runner(target)
    for i, future in zip(where, runner.run(inputs)):
        r = future.result()
        if r.error_msg is None and r.run_secs:
            out[i] = sum(float(x) for x in r.run_secs) / len(r.run_secs)
    return out


def default_scheduled(task_mod, target):
    """A task kernel module under the default schedules (kernels/tvm_cpu_rules.py)."""
    import tvm  # noqa: PLC0415

    from edgeattn.kernels.tvm_cpu_rules import apply_default_schedules  # noqa: PLC0415

    with target:  # on a copy: the pass may update the module it is given in place (its DB key)
        return apply_default_schedules()(tvm.IRModule(dict(task_mod.functions_items())))


def record_scheduled(db, task_mod, target):
    """A task kernel module under its best record in `db`, or None."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    sch = ms.tir_integration.compile_tir(db, task_mod, target)
    return sch.mod if sch is not None else None


def records_against_defaults(db, task_mods: list, target, runner=None) -> list[tuple[float | None, float | None]]:
    """(record, default) mean run seconds of each task kernel, timed now, alternately, in one batch
    (cold weights, local_runner). Not the record's stored run_secs: those were timed during tuning,
    minutes or days earlier, and on a shared machine the drift between then and now decided the
    comparison (a record kept at 1.58 against a default timed at 1.71 ran 1.98 against 1.71 when
    both were timed together)."""
    pairs = [(record_scheduled(db, m, target), default_scheduled(m, target)) for m in task_mods]
    flat = [mod for pair in pairs for mod in pair if mod is not None]
    times = iter(measure_kernels(flat, target, runner))
    return [tuple(next(times) if mod is not None else None for mod in pair) for pair in pairs]
