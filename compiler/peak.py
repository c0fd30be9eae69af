"""This machine's measured GEMM peak (2048³ matmul), for roofline fractions in `edgeattn bench`.

fp32 through ONNX Runtime's MLAS (torch's CPU build here dispatches only AVX2 on this AMD
CPU), bf16 through OpenVINO's oneDNN path (AVX512-BF16) when OpenVINO is installed. Each
runs in its own process so its thread pool is alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeattn.compiler.errors import CompileError

N = 2048

_SCRIPT = """
import json, sys, time
import numpy as np

path, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
out = {}
def best(fn):
    for _ in range(2):
        fn()
    ts = []
    for _ in range(20):  # the best of many: 7 gave 138-189 GFLOP/s fp32 on one shared Zen 4 VM in an hour
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(ts) / 1e9
import onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
out["fp32"] = best(lambda: s.run(None, {"a": x}))
try:
    import openvino as ov
    core = ov.Core()
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        c = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads,
                                             "PERFORMANCE_HINT": "LATENCY"})
        req = c.create_infer_request()
        out["bf16"] = best(lambda: req.infer({0: x}))
except ImportError:
    pass
print(json.dumps(out))
"""


def _matmul_model(path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    b = numpy_helper.from_array(np.random.default_rng(1).standard_normal((N, N)).astype(np.float32), "b")
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [N, N])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [N, N])], [b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    save(m, str(path))


def measure_gemm_peak(threads: int = 2) -> dict[str, float]:
    """GFLOP/s of the best of 7 timed 2048³ matmuls per precision ('bf16' only with OpenVINO)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        _matmul_model(path)
        r = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(threads), str(N)],
                           capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()[-1:] or ["no output"]
        raise CompileError(f"GEMM peak measurement failed: {tail[0]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
