"""Every approximate rewrite, compiled for every CPU target that runs here: the plan fires and the
artifact computes the rewritten graph (the compile's own check against that graph on ONNX Runtime
with optimizations off, `accuracy.vs_graph`). Found by this sweep: TVM's GEMM schedule wrote NaN
into ToMe's size column (an epilogue wider than the GEMM, session 16)."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from edgeattn import targets
from edgeattn.compiler.compile import compile_model
from edgeattn.runtime.check import within_marks

from ..passes.conftest import canonical_tiny_deit

TARGET_ROWS = {row["name"]: row for row in targets.describe_all()}
# tiny DeiT: 4×4 patches + class + distillation tokens, 2 blocks
PLANS = ["tome:r=2", "tome:r=3,prop_attn=0", "cls-prune:keep=0.5,layers=0", "pool:layers=-1,0", "window:window=2",
         "window:window=2,stride=1", "agent:agents=4", "hilo:window=2,pool=2", "head-prune:ratio=0.5"]
SELECTING = ("tome", "cls-prune")  # graphs that pick tokens by value: held to cosine >= 0.99 (near ties)


@pytest.fixture(scope="module")
def tiny_deit(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewrites") / "tiny_deit.onnx"
    ir.save(canonical_tiny_deit(), path)
    return path


# mobile: its ORT-format payload, and where the cross toolchain is here its TVM aarch64 bundle, run
# under qemu against the same graph (~15-25 s a compile: slow). Found by it: the bundle lacked the
# runtime's top-k for ToMe and cls-prune (session 17).
@pytest.mark.parametrize("target", ["ort", "openvino", "tvm", pytest.param("mobile", marks=pytest.mark.slow)])
@pytest.mark.parametrize("plan", PLANS)
def test_rewrite_compiles_and_the_artifact_computes_its_graph(target, plan, tiny_deit, tmp_path):
    row = TARGET_ROWS[target]
    if not row["available"]:
        pytest.skip(f"target {target} unavailable: {row['reason']}")
    m = compile_model(str(tiny_deit), target, tmp_path / "art", rewrites=[plan], budget="cosine>=-1")  # any plan ships: the check is the point
    assert m["plan"]["accepted"] and m["plan"]["rewrites"][0]["count"] >= 1  # the rewrite fired
    check = m["accuracy"]["vs_graph"]
    assert check["reference"] == "this graph on ONNX Runtime, optimizations off"
    if plan.startswith(SELECTING):
        assert check["cosine"] >= 0.99 and "selects by value" in check["note"]
    else:
        assert within_marks(check, "fp32"), check
    verified = m.get("mobile", {}).get("tvm", {}).get("verified")
    if isinstance(verified, dict):
        assert verified["max_abs_error"] <= 1e-4, verified
