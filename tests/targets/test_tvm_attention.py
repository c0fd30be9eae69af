"""The TVM CPU target's fused attention kernel (kernels/tvm_attention.py): the Relax pass finds the
decomposed chain, and the one kernel that replaces it matches numpy (ragged rows, padded kv columns,
cross attention, broadcast and full additive biases, fully masked rows)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed — pip install 'edgeattn[tvm]'")

from edgeattn.kernels import tvm_attention  # noqa: E402
from edgeattn.targets import tvm as tvm_target  # noqa: E402


def _chain(b, h, s, skv, d, dv, bias_shape, axis=-1):
    """Relax: softmax(q·kᵀ [+ bias], axis)·v, written the way the ONNX frontend imports decompose-attention's output."""
    from tvm import relax
    from tvm.script import relax as R

    bb = relax.BlockBuilder()
    params = [relax.Var("q", R.Tensor((b, h, s, d), "float32")), relax.Var("k", R.Tensor((b, h, skv, d), "float32")),
              relax.Var("v", R.Tensor((b, h, skv, dv), "float32"))]
    if bias_shape is not None:
        params.append(relax.Var("bias", R.Tensor(bias_shape, "float32")))
    with bb.function("main", params):
        with bb.dataflow():
            q, k, v = params[:3]
            scores = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
            if bias_shape is not None:
                scores = bb.emit(relax.op.add(scores, params[3]))
            p = bb.emit(relax.op.nn.softmax(scores, axis=axis))
            out = bb.emit_output(bb.emit(relax.op.matmul(p, v)))
        bb.emit_func_output(out)
    return bb.get()


def _reference(q, k, v, bias, axis=-1):
    s = q.astype(np.float64) @ np.swapaxes(k, -1, -2)
    if bias is not None:
        s = s + bias
    with np.errstate(invalid="ignore"):
        p = np.exp(s - s.max(axis, keepdims=True))
        p /= p.sum(axis, keepdims=True)
    return p @ v


CASES = {
    "ragged-rows": (1, 2, 13, 13, 16, 16, None),
    "cross-attention-padding-mask": (1, 3, 9, 21, 8, 24, "mask"),
    "full-bias-batch-2": (2, 2, 7, 7, 16, 8, "full"),
    "masked-row": (1, 2, 6, 11, 8, 8, "masked-row"),
    "kv-multiple-of-4": (1, 2, 9, 24, 8, 16, "mask"),  # the ·v loop unrolled by 4 in TIR
    "kv-even": (1, 1, 5, 10, 8, 8, None),  # by 2
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_attention_replaces_the_chain_and_matches_numpy(case):
    b, h, s, skv, d, dv, kind = CASES[case]
    rng = np.random.default_rng(0)
    q, k = (rng.standard_normal((b, h, n, d)).astype(np.float32) / 3 for n in (s, skv))
    v = rng.standard_normal((b, h, skv, dv)).astype(np.float32)
    bias_shape = {None: None, "mask": (b, 1, 1, skv), "full": (1, h, s, skv), "masked-row": (1, 1, s, skv)}[kind]
    bias = None
    if bias_shape is not None:
        bias = np.where(rng.random(bias_shape) < 0.3, -np.inf, rng.standard_normal(bias_shape)).astype(np.float32)
        if kind == "masked-row":
            bias[..., 2, :] = -np.inf  # softmax of an all -inf row is NaN, as Relax's softmax gives
    mod = _chain(b, h, s, skv, d, dv, bias_shape)
    target = tvm_target.host_target()
    fused = tvm_target._fused(mod, target)
    kernels = [gv.name_hint for gv in fused.functions if gv.name_hint.startswith("edgeattn_attention")]
    assert len(kernels) == 1, sorted(gv.name_hint for gv in fused.functions)
    assert "softmax" not in fused.script()  # the chain is gone, not computed beside the kernel
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    args = [q, k, v] + ([bias] if bias is not None else [])
    got = vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()
    want = _reference(q, k, v, bias)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), atol=2e-5, rtol=1e-5)


def test_softmax_over_another_axis_is_left_to_the_default_kernels():
    mod = _chain(1, 2, 8, 8, 8, 8, None, axis=2)
    target = tvm_target.host_target()
    fused = tvm_target._fused(mod, target)
    assert not [gv for gv in fused.functions if gv.name_hint.startswith("edgeattn_attention")]
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, 8, 8)).astype(np.float32) for _ in range(3))
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(a) for a in (q, k, v)]).numpy()
    np.testing.assert_allclose(got, _reference(q, k, v, None, axis=2), atol=2e-5)


def test_geometry_divides_the_head_dim():
    assert tvm_attention.geometry(8, 64, 16) == (6, 16, 16)  # AVX2: 12 accumulators of 16 ymm
    assert tvm_attention.geometry(16, 64, 32) == (4, 32, 32)  # AVX-512
    assert tvm_attention.geometry(8, 24, 16) == (6, 16, 8)
    assert tvm_attention.geometry(4, 32, 32) == (4, 8, 16)  # NEON
    assert tvm_attention.geometry(8, 12, 16) == (6, 16, 12)  # no whole vector: the head dim in one piece


def test_masked_columns_use_select_so_the_exp_vectorises():
    # if_then_else on a lane-dependent condition makes TVM scalarise the whole loop: the exp of
    # every score then ran one float at a time (deit-small's kernel 1.2 → 0.6 ms on AVX2).
    func = tvm_attention.schedule(tvm_attention.attention_func((1, 2, 13, 8), 16, (1, 2, 13, 8), None, "float32", 4),
                                  8, 4, 16, 8)
    text = func.script()
    assert "T.Select(" in text and "if_then_else" not in text
    # the score tile's columns in its init, update and write-back (vectorised before
    # decompose_reduction; after it only the write-back passed the check): 0.87 → 0.67 ms
    assert text.count("T.vectorized(16)") == 3


def test_the_v_tile_unrolls_k_steps_that_divide_the_kv_length():
    # left to LLVM, the AVX2 6×16 ·v tile spilled its accumulators on every k step (minilm-l6@512's
    # kernel 5.3 → 4.4 ms with 4 steps unrolled in TIR)
    def script(skv):
        return tvm_attention.schedule(tvm_attention.attention_func((1, 1, 7, 8), 16 * -(-skv // 16), (1, 1, skv, 8),
                                                                   None, "float32", 6), 8, 6, 16, 8).script()
    assert "T.unroll(4)" in script(24) and "T.unroll(2)" not in script(24)
    assert "T.unroll(2)" in script(10) and "T.unroll(4)" not in script(10)
    assert "T.unroll(2)" not in script(13) and "T.unroll(4)" not in script(13)


def test_the_relax_pass_pads_v_so_any_kv_length_unrolls_by_4():
    # deit's 197 and 577 tokens are prime: v gets 3 zero rows, whose softmax weights are 0
    # (the numerical cases above with 13 and 21 keys run through this padding)
    fused = tvm_target._fused(_chain(1, 1, 7, 13, 8, 8, None), tvm_target.host_target())
    kernel = next(f for gv, f in fused.functions.items() if gv.name_hint.startswith("edgeattn_attention"))
    assert "T.unroll(4)" in kernel.script()
    assert 'v: T.Buffer((1, 1, 16, 8), "float32")' in kernel.script()
