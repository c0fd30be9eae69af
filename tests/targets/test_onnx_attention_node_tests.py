"""The ONNX backend node tests for `Attention` (shipped inside the onnx package), each wrapped
into an artifact and run through edgeattn.runtime's ORT path (load → SHA-256 check → run)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeattn import runtime
from edgeattn.runtime.artifact import write_artifact

# Cases ORT's CPU Attention kernel rejects or computes differently: listed so that the day
# ORT fixes one, the strict xfail turns red and the entry gets removed.
_BF16 = "ORT's CPU Attention kernel has no bfloat16 implementation (NOT_IMPLEMENTED at load)"
_QK_OUT = "ORT returns the qk_matmul_output (mode 1) without the causal -inf mask that the reference applies"
KNOWN_ORT_GAPS: dict[str, str] = {
    "test_attention_3d_causal_bf16": _BF16,
    "test_attention_4d_attn_mask_causal_bf16": _BF16,
    "test_attention_4d_causal_bf16": _BF16,
    "test_attention_4d_causal_padded_kv_bf16": _BF16,
    "test_attention_4d_padded_kv_bf16": _BF16,
    "test_attention_4d_causal_fp16": "ORT's fp16 causal path rounds one element 1 ulp off (rel. error 1.2e-3 > 1e-3)",
    "test_attention_4d_diff_heads_mask4d_padded_kv": "ORT rejects nonpad_kv_seqlen with a 4-D mask of a different head count",
    "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_causal": _QK_OUT,
    "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask_causal": _QK_OUT,
}


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    cases = [c for c in collect_testcases("Attention") if c.model is not None]
    # Only the op itself: the "_expanded" variants are its function body, not our lowering path.
    return sorted((c for c in cases if not c.name.endswith("_expanded")), key=lambda c: c.name)


CASES = _cases()


def _spec(vi) -> dict:
    t = vi.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "d") for d in t.shape.dim]
    return {"name": vi.name, "dtype": dtype, "shape": shape}


def _to_numpy(x):
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_attention_node_case(case, tmp_path, request):
    if case.name in KNOWN_ORT_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_ORT_GAPS[case.name], strict=True))
    model = case.model
    graph_inputs = [vi for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
    manifest = {"model": case.name, "target": "ort", "backend": "ort", "payload": {"model": "model.onnx"},
                "backend_options": {"graph_optimization_level": "all"},
                "inputs": [_spec(vi) for vi in graph_inputs if vi.name],
                "outputs": [_spec(vi) for vi in model.graph.output]}
    art = write_artifact(tmp_path / "a", manifest, {"model.onnx": model.SerializeToString()})
    sess = runtime.load(art)
    for inputs, expected in case.data_sets:
        names = [vi.name for vi in graph_inputs]
        feeds = {n: _to_numpy(x) for n, x in zip(names, inputs) if n}
        got = sess.run(feeds)
        for spec, want in zip(manifest["outputs"], expected):
            np.testing.assert_allclose(got[spec["name"]], _to_numpy(want), rtol=case.rtol, atol=case.atol)
