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

Untuned builds are LegalizeOps' plain TIR loops (no schedule, no threading): correct, but far
slower than ORT. `tune()` is the place for MetaSchedule; it is not implemented yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx_ir as ir

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
    """Expand every ONNX Attention: Relax's ONNX frontend cannot read Attention-23."""
    total = len(_attention_nodes(model))
    out = {"attention_native": 0, "attention_decomposed": 0}
    if total:
        from edgeattn import passes  # noqa: PLC0415 - targets may call passes (legalization)

        p = passes.create("decompose-attention")
        p(model)
        left = _attention_nodes(model)
        if left:
            reasons = "; ".join(s["reason"] for s in p.details.get("skipped", [])) or "not matched"
            raise ValueError(f"tvm cannot run {len(left)} ONNX Attention node(s) that decompose-attention "
                             f"cannot expand ({reasons}) — compile for --target ort or openvino instead")
        out["attention_decomposed"] = total
    return out


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


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


def import_relax(model: ir.Model):
    """The legalized graph as a static-shape Relax IRModule (weights bound as constants)."""
    _import_tvm()
    from tvm.relax.frontend.onnx import from_onnx  # noqa: PLC0415

    dims = static_dims(model)
    shapes = {}
    for v in model.graph.inputs:
        if v.shape is None:
            continue
        shape = [d if isinstance(d, int) else dims.get(_symbol(d)) for d in v.shape]
        if any(d is None for d in shape):
            raise ValueError(f"input {v.name!r} has an unnamed dynamic dim {v.shape}; tvm compiles static "
                             "shapes — export the model with named or fixed dims")
        shapes[v.name] = shape
    return from_onnx(ir.to_proto(model), shape_dict=shapes, keep_params_in_input=False)


def build(model: ir.Model, workdir: Path, options: dict) -> dict:
    """Relax import, default CPU pipeline (untuned), export a shared library with the system C compiler."""
    tvm = _import_tvm()
    precision = str(options.get("precision", "fp32")).lower()
    if precision not in PRECISIONS:
        raise ValueError(f"tvm precision {precision!r} is not supported — use one of {', '.join(PRECISIONS)}")
    target = host_target(options)
    mod = import_relax(model)
    executable = tvm.compile(mod, target)
    # export_library links the LLVM objects with the system compiler (gcc/cc must be on PATH).
    executable.export_library(str(Path(workdir) / PAYLOAD))
    return {"backend": RUNTIME_BACKEND, "payload": {"model": PAYLOAD},
            "backend_options": {"entry": ENTRY, "static_dims": static_dims(model),
                                "target_key": target_key(target), "tuned": False,
                                "target": {"kind": "llvm", "mcpu": str(target.attrs["mcpu"]),
                                           "num_cores": int(target.attrs["num-cores"])}}}


def tune(model: ir.Model, options: dict) -> dict:
    return {"tuned": False, "reason": "not implemented yet: MetaSchedule tuning (records under "
            "kernels/tvm_db/<target-key>/) is the next step; builds are untuned LegalizeOps loops"}
