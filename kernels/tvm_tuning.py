"""MetaSchedule support for the TVM CPU target: where tuning records live, and a builder that works here.

Records: one MetaSchedule JSON database per target key (`targets.tvm.target_key`: kind, CPU model,
cores) under `kernels/tvm_db/<key>/` (`database_workload.json` + `database_tuning_record.json`).
The root can be moved with the target option `tuning_db` or the environment variable
`EDGEATTN_TVM_DB` (tests use a temporary one so they never write into the repository).

Builder: MetaSchedule's default LocalBuilder build function imports `tvm.s_tir.tensor_intrin` in
every worker process (tens of seconds on a small CPU, so its 30 s build timeout expires and every
candidate fails). `build_candidate` does the same build (RemoveWeightLayoutRewriteBlock + tvm.build)
without that import: CPU schedules from the default LLVM rules use no registered tensor intrinsics.

Only imported by targets/tvm.py; tvm is imported lazily, inside functions.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from pathlib import Path
from typing import Callable

ENV_DB = "EDGEATTN_TVM_DB"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
DEFAULT_ROOT = Path(__file__).resolve().parent / "tvm_db"


def database_root(options: dict | None = None) -> Path:
    """options["tuning_db"], else $EDGEATTN_TVM_DB, else kernels/tvm_db/."""
    root = (options or {}).get("tuning_db") or os.environ.get(ENV_DB)
    return Path(root).expanduser() if root else DEFAULT_ROOT


def database_dir(key: str, options: dict | None = None) -> Path:
    return database_root(options) / key


def has_records(db_dir: Path) -> bool:
    f = Path(db_dir) / RECORDS
    return f.is_file() and f.stat().st_size > 0


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
