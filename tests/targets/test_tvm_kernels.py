"""The TVM CPU target's own kernels: register-tile choice, padded GEMMs with fused epilogues, and
the vectorisable GELU/softmax (kernels/tvm_cpu_rules.py, kernels/tvm_fast_math.py)."""

from __future__ import annotations

import re

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


def _prepacked_module(mod, target):
    """The module as compile_default has it after its schedules and the weight prepacking."""
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = rules.apply_default_schedules()(tvm_target._fused(mod, target))
        return tvm.transform.Sequential(tvm_target._weight_prepack())(scheduled)


def test_constant_weight_is_packed_into_column_strips_at_compile_time():
    """A GEMM whose B is a constant reads it as [N/cols, K, cols] strips that FoldConstant computed
    while compiling: main calls no packing kernel, the kernel makes no copy of B, and the result
    is still the GEMM's (deit-small's GEMMs 5–10% faster than packing on every call, AVX2 VM)."""
    from math import erf

    m, k, n = 37, 16, 48
    mod, w, b = _gemm_gelu(m, k, n)
    target = tvm_target.host_target()
    (rows, cols), _, _ = rules._pick_tile(rules._tiles(target), m, n)
    packed = _prepacked_module(mod, target)
    kernels = {gv.name_hint: f for gv, f in packed.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    (name,) = [nm for nm in kernels if nm.endswith("_prepacked")]
    assert [tuple(int(d) for d in p.shape) for p in kernels[name].params][1] == (n // cols, k, cols)
    assert not re.search(r'sblock\("\w+_global"\)', kernels[name].script())  # no per-call copy of B
    assert "weight_prepack" not in packed["main"].script()  # folded into a constant
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    x = np.random.default_rng(4).standard_normal((m, k)).astype(np.float32)
    y = x.astype(np.float64) @ w + b
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, y * 0.5 * (1 + np.vectorize(erf)(y / np.sqrt(2))), rtol=1e-5, atol=1e-5)


def test_activation_times_activation_keeps_the_per_call_packing():
    """B computed at run time (attention's scores·V, x·xᵀ) is not layout-free: no prepacked kernel;
    each thread still packs its strip of B on every call."""
    from tvm import relax
    from tvm.script import relax as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((24, 48), "float32"))
    y = relax.Var("y", R.Tensor((48, 48), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            o = bb.emit_output(bb.emit(relax.op.matmul(x, y)))
        bb.emit_func_output(o)
    mod, target = bb.get(), tvm_target.host_target()
    packed = _prepacked_module(mod, target)
    names = [gv.name_hint for gv, f in packed.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert names and not any(nm.endswith(("_prepacked", "_weight_prepack")) for nm in names), names
    assert any(re.search(r'sblock\("\w+_global"\)', f.script()) for _, f in packed.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc))
    rng = np.random.default_rng(5)
    xa, ya = rng.standard_normal((24, 48)).astype(np.float32), rng.standard_normal((48, 48)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(xa), tvm.runtime.tensor(ya)).numpy(), xa @ ya,
                               rtol=1e-5, atol=1e-5)


def _heads(s: int, h: int, d: int, key: bool):
    """(1, s, h·d) → heads: kᵀ padded to whole vectors (1, h, d, s') as the fused attention takes it,
    or q/v's (1, h, s, d)."""
    from tvm import relax
    from tvm.script import relax as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, s, h * d), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.reshape(x, (1, s, h, d)))
            if key:
                y = bb.emit(relax.op.permute_dims(y, [0, 2, 3, 1]))
                y = bb.emit(relax.op.nn.pad(y, [0, 0, 0, 0, 0, 0, 0, 3]))
            else:
                y = bb.emit(relax.op.permute_dims(y, [0, 2, 1, 3]))
            o = bb.emit_output(y)
        bb.emit_func_output(o)
    return bb.get()


@pytest.mark.parametrize("key", [True, False])
def test_transpose_rule_tiles_only_a_change_of_the_last_axis(key):
    """kᵀ (the output's last axis is the input's token axis): lanes × lanes tiles with vector reads
    along the input's rows (211 → 22 µs for deit-small's kᵀ + pad, AVX2 VM). q/v's head split keeps
    the last axis contiguous: left to the Injective rule. Both exact."""
    s, h, d = 13, 2, 16
    mod, target = _heads(s, h, d, key), tvm_target.host_target()
    (func,) = [f for _, f in tvm_target._fused(mod, target).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    (rule,) = [r for r in rules.rules() if type(r).__name__ == "Transpose"]
    with target:
        sch = rule.apply(func, target, False)
    if key:
        text = sch.mod.script()
        assert "T.unroll" in text and "T.vectorized" in text and "T.parallel" in text
    else:
        assert sch is None
    x = np.random.default_rng(6).standard_normal((1, s, h * d)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(tvm_target.compile_default(mod, target), tvm.cpu())
    want = x.reshape(1, s, h, d).transpose(0, 2, 3, 1) if key else x.reshape(1, s, h, d).transpose(0, 2, 1, 3)
    if key:
        want = np.pad(want, [(0, 0), (0, 0), (0, 0), (0, 3)])
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)


@pytest.mark.parametrize("vectorized", [False, True])
def test_exp_of_nonpositive_scores_is_exact_to_float_rounding(vectorized):
    """The attention kernel's exp (kernels/tvm_fast_math.exp_nonpositive): within float rounding of
    exp on [-87, 0], -inf → exactly 0 (masked scores), NaN stays NaN (a fully masked row)."""
    from tvm import te

    from edgeattn.kernels.tvm_fast_math import exp_nonpositive

    x = np.concatenate([-np.geomspace(1e-8, 87.0, 4000), np.linspace(-87.0, 0.0, 4000), [0.0, -88.5, -np.inf, np.nan]])
    x = np.pad(x, (0, -len(x) % 8)).astype(np.float32)
    xs = te.placeholder((len(x),), "float32", name="x")
    sch = tvm.s_tir.Schedule(te.create_prim_func([xs, exp_nonpositive(xs)]))
    if vectorized:
        (i,) = sch.get_loops(sch.get_sblock("exp_nonpositive"))
        sch.vectorize(sch.split(i, [None, 8])[1])
    f = tvm.compile(sch.mod, target=tvm_target.host_target())
    out = tvm.runtime.tensor(np.zeros_like(x))
    f(tvm.runtime.tensor(x), out)
    got, want = out.numpy(), np.exp(x.astype(np.float64))
    rel = np.abs(got / want - 1)
    # TOPI's fast_exp: 6.6e-8 on [-1, 0], 1.0e-7 to -17, 3.0e-7 below (where a term is < 4e-8 of the
    # row's largest, 1); this one 1.4e-7, 1.9e-7, 3.7e-7
    assert rel[x >= -17.0].max() <= 2e-7 and rel[(x >= -87.0) & (x < -17.0)].max() <= 5e-7
    assert got[x == -np.inf] == 0 and got[x == np.float32(-88.5)] == 0
    assert np.isnan(got[np.isnan(x)]).all()
