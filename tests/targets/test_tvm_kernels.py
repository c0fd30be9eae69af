"""The TVM CPU target's own kernels: register-tile choice, padded GEMMs with fused epilogues, and
the vectorisable GELU/softmax (kernels/tvm_cpu_rules.py, kernels/tvm_fast_math.py)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed — pip install 'edgeattn[tvm]'")

from edgeattn.kernels import tvm_cpu_rules as rules  # noqa: E402
from edgeattn.targets import tvm as tvm_target  # noqa: E402

AVX2 = rules._AVX2_TILES


def test_tile_choice_pads_rows_before_columns():
    assert rules._pick_tile(AVX2, 200, 1536) == ((4, 24), False, False)
    assert rules._pick_tile(AVX2, 197, 1536) == ((4, 24), True, False)  # deit's 197 tokens: rows padded
    # N=64: 24 does not divide it, 16 does: a 5×16 tile with padded rows, not padded columns
    assert rules._pick_tile(AVX2, 197, 64) == ((5, 16), True, False)
    tile, pad_m, pad_n = rules._pick_tile(AVX2, 197, 197)  # attention scores: both edges ragged
    assert pad_n and pad_m and tile in AVX2
    assert rules._pick_tile(AVX2, None, 64) == (AVX2[0], False, False)  # dynamic extents: no padding


def test_register_file_follows_the_target_features():
    from tvm.target.codegen import target_has_features

    host = tvm_target.host_target()
    regs, lanes = rules._register_file(host)
    assert lanes == (16 if target_has_features("avx512f", host) else 8 if target_has_features("avx", host) else 4)
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"})
    assert rules._register_file(arm) == (32, 4)
    tiles = rules._tiles(arm)
    assert all(r * c // 4 <= 24 for r, c in tiles)  # accumulators fit three quarters of NEON's 32 registers


def _gemm_gelu(m: int, k: int, n: int, seed: int = 0):
    from tvm import relax
    from tvm.script import relax as R

    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((m, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(w)), relax.const(b)))
            o = bb.emit_output(bb.emit(relax.op.nn.gelu(y)))
        bb.emit_func_output(o)
    return bb.get(), w, b


@pytest.mark.parametrize("m,k,n", [(8, 16, 48), (37, 16, 64), (37, 24, 37)])
def test_padded_gemm_with_fused_gelu_matches_numpy(m, k, n):
    """Whole tiles, padded rows, and padded rows and columns (epilogue in its own loop), each with a
    bias + GELU epilogue computed through fast_erf: within 1e-5 of the exact GELU."""
    from math import erf

    mod, w, b = _gemm_gelu(m, k, n)
    target = tvm_target.host_target()
    fused = tvm_target._fused(mod, target)
    names = [gv.name_hint for gv in fused.functions]
    assert any("fast_gelu" in name for name in names), names  # libm's scalar erff is not called
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    y = (x.astype(np.float64) @ w + b)
    ref = y * 0.5 * (1 + np.vectorize(erf)(y / np.sqrt(2)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [48, 20])
def test_gemv_gets_column_strips_not_a_packed_gemm(n):
    """One token times a weight (the readout-pruned last block): the Matmul rule's GEMV path (no
    padded rows, no packed copy of B, columns over the threads) with the bias + GELU epilogue."""
    from math import erf

    mod, w, b = _gemm_gelu(1, 24, n)
    target = tvm_target.host_target()
    fused = tvm_target._fused(mod, target)
    (gemv,) = [f for gv, f in fused.functions_items() if "matmul" in gv.name_hint]
    with target:
        sch = rules.rules()[0].apply(gemv, target, False)
    assert sch is not None  # the Matmul rule took it (dlight's Reduction rule ran it at 2 GFLOP/s)
    text = sch.mod.script()
    assert "T.parallel" in text and "_pad" not in text and "_global" not in text  # no padding, no packed B
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    x = np.random.default_rng(2).standard_normal((1, 24)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    y = x.astype(np.float64) @ w + b
    np.testing.assert_allclose(got, y * 0.5 * (1 + np.vectorize(erf)(y / np.sqrt(2))), rtol=1e-5, atol=1e-5)


def test_layer_norm_reductions_are_vectorised_partial_sums():
    """LayerNorm's mean and variance as `lanes` partial sums (rfactor) under one parallel row loop,
    not one scalar add chain per row (0.09 → 0.02 ms for 198 × 384 on AVX2), and still exact."""
    from tvm import relax
    from tvm.script import relax as R

    rng = np.random.default_rng(3)
    g, b = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 7, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            o = bb.emit_output(bb.emit(relax.op.nn.layer_norm(x, relax.const(g), relax.const(b), axes=[-1])))
        bb.emit_func_output(o)
    mod, target = bb.get(), tvm_target.host_target()
    (ln,) = [f for gv, f in tvm_target._fused(mod, target).functions_items() if "layer_norm" in gv.name_hint]
    (rule,) = [r for r in rules.rules() if type(r).__name__ == "RowReductions"]
    with target:
        sch = rule.apply(ln, target, False)
    text = sch.mod.script()
    assert text.count("_rf") >= 2 and "T.parallel" in text  # mean and variance partials, rows in parallel
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    xa = rng.standard_normal((1, 7, 64)).astype(np.float32) * 3 + 1
    got = vm["main"](tvm.runtime.tensor(xa)).numpy()
    ref = (xa - xa.mean(-1, keepdims=True)) / np.sqrt(xa.var(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_softmax_uses_fast_exp_and_matches_torch():
    import torch
    from tvm import relax
    from tvm.script import relax as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((2, 37, 37), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            o = bb.emit_output(bb.emit(relax.op.nn.softmax(x, -1)))
        bb.emit_func_output(o)
    mod, target = bb.get(), tvm_target.host_target()
    prims = [f.script() for _, f in tvm_target._fused(mod, target).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert prims and all("T_fast_exp" in s and "T.exp(" not in s for s in prims)
    a = (np.random.default_rng(3).standard_normal((2, 37, 37)) * 5).astype(np.float32)
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(a)).numpy(), torch.softmax(torch.from_numpy(a), -1).numpy(),
                               rtol=1e-5, atol=1e-6)
