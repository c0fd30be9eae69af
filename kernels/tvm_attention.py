"""One fused attention kernel for the TVM CPU target: softmax(q·kᵀ [+ bias])·v in a single TIR function.

`decompose-attention` leaves MatMul → [Add bias] → Softmax → MatMul, which TVM ran as three kernels:
the q·kᵀ GEMM wrote the whole B·H·S·S score tensor, softmax read and wrote it again, the second GEMM
read it once more. On minilm-l6@512 those took ~55 of ~126 ms (Zen 4 VM, 2 threads; softmax alone 23);
with this kernel the model runs in 89.
Here each thread takes a tile of query rows of one head and keeps their scores in a small buffer
(rows × padded kv length) while the q·kᵀ tile, max, exp (a vectorisable polynomial), sum and the
·v tile run over it in cache: the score tensor never exists.

`fuse_attention()` is the Relax pass that rewrites the decomposed chain into a `call_tir` of this
kernel, already scheduled, so dlight's rules and MetaSchedule leave it alone. kᵀ gets zero columns
up to whole vector tiles in Relax (fused with the transpose that already makes it); the padded
columns are masked out of the softmax. v gets zero rows up to a multiple of 4, for the ·v tile's
unroll. Query rows run in whole row tiles: the last tile reads the last query row again for its
extra rows, which are not stored. The buffer holds whole kv rows
(rows × kv floats, twice): fine to a few thousand tokens; longer sequences would want an online
(flash-style) softmax over kv blocks, not done.
"""

from __future__ import annotations

from edgeattn.kernels.tvm_cpu_rules import _try_vectorize
from edgeattn.kernels.tvm_fast_math import exp_nonpositive

# The float32 lowest: what a masked (padded) column contributes to the row max.
NEG = -3.4028234663852886e38


def geometry(lanes: int, dv: int, registers: int) -> tuple[int, int, int]:
    """(query rows per tile, score columns per tile, output columns per tile): 2-vector score tiles;
    6 query rows on a 16-register ISA (12 accumulators), 4 on 32 registers; output tiles that divide
    the head dim, at most 32 floats, with their accumulators in registers - 4 (16 registers) or half
    the registers (32): AVX2 6/16/16, AVX-512 4/32/32, NEON 4/8/16.
    Measured (2 threads, ms; deit's 6 heads × 197 × 64, minilm's 12 × 512 × 32 with a mask):
    AVX-512 (Zen 4) rows/score/output 4/32/32 0.46 and 2.99, 4/16/32 0.47 and 3.51, 4/32/64 0.74,
    2/32/64 0.57, 6/32/32 0.50, 8/16/32 0.83 and 3.99 (all with a scalar exp, see attention_func);
    AVX2 (Zen 3, vectorised exp) 4/16/16 0.57–0.70 and 5.1–5.4, 4/16/32 (16 accumulators on 16
    registers) 0.67–0.71 and 5.7, 4/8/32 0.72 and 6.9, 8/8/16 0.80 and 5.7, 4/24/16 2.1 and 16 (spills).
    6/16/16 against 4/16/16 on AVX2, interleaved in one process (session 15, best of 10–25 rounds):
    deit 0.44 vs 0.51 and 0.58 vs 0.69, deit@384's 6 × 577 × 64 3.97 vs 4.96, minilm@128's
    12 × 128 × 32 0.23 vs 0.28; minilm@512 level (4.47 vs 4.37, 4.70 vs 5.05, 5.57 vs 4.37)."""
    rows = 6 if registers <= 16 else 4
    budget = registers - 4 if registers <= 16 else registers // 2
    most = min(32, (budget // rows) * lanes)
    dcols = next((n * lanes for n in range(most // lanes, 0, -1) if dv % (n * lanes) == 0), dv)
    return rows, 2 * lanes, dcols


def _bias_reader(bias, skv: int, last_row: int):
    """bias(b, h, i, j) for a bias that broadcasts to (B, H, S, skv); padded rows/columns read the last."""
    from tvm import tirx

    if bias is None:
        return None
    dims = [int(x) for x in bias.shape]

    def at(b, h, i, j):
        full = (b, h, tirx.min(i, last_row), tirx.min(j, skv - 1))
        return bias(*[0 if n == 1 else ax for ax, n in zip(full[4 - len(dims):], dims)])

    return at


def attention_func(q_shape, kt_cols: int, v_shape, bias_shape, dtype: str, rows: int, skv: int | None = None):
    """The unscheduled PrimFunc (q, kt, v[, bias]) → o of softmax(q·kt + bias)·v over `skv` keys.

    q (B, H, S, D); kt (B, H, D, kt_cols), columns ≥ skv zero; v (B, H, skv or more, Dv), rows ≥ skv
    zero (at most kt_cols rows; the ·v tile runs over all of them, their weights are 0); bias
    broadcasts to (B, H, S, skv). Every stage but the output runs over S rounded up to whole row tiles."""
    from tvm import te, tirx, topi

    b_, h_, s_, d_ = q_shape
    vrows, dv = v_shape[2], v_shape[3]
    skv = vrows if skv is None else skv
    assert skv <= vrows <= kt_cols, (skv, vrows, kt_cols)
    sp = -(-s_ // rows) * rows
    q = te.placeholder(q_shape, dtype, name="q")
    kt = te.placeholder((b_, h_, d_, kt_cols), dtype, name="kt")
    v = te.placeholder(v_shape, dtype, name="v")
    bias = te.placeholder(bias_shape, dtype, name="bias") if bias_shape is not None else None
    bias_at = _bias_reader(bias, skv, s_ - 1)
    k = te.reduce_axis((0, d_), name="k")
    s = te.compute((b_, h_, sp, kt_cols), lambda b, h, i, j: te.sum(q[b, h, tirx.min(i, s_ - 1), k] * kt[b, h, k, j], axis=k), name="s")

    def logit(b, h, i, j):
        return s[b, h, i, j] if bias_at is None else s[b, h, i, j] + bias_at(b, h, i, j)

    neg = tirx.const(NEG, dtype)
    r = te.reduce_axis((0, kt_cols), name="r")
    # Select, not if_then_else: the condition depends on the vector lane, and TVM's vectoriser
    # scalarises a whole loop around an if_then_else on a lane (the exp ran one float at a time).
    m = te.compute((b_, h_, sp), lambda b, h, i: te.max(tirx.Select(r < skv, logit(b, h, i, r), neg), axis=r), name="m")
    diff = te.compute((b_, h_, sp, kt_cols), lambda b, h, i, j: logit(b, h, i, j) - m[b, h, i], name="diff")
    ex = exp_nonpositive(diff) if dtype == "float32" else topi.exp(diff)  # diff <= 0: the row's max is out
    zero = tirx.const(0, dtype)
    e = te.compute((b_, h_, sp, kt_cols), lambda b, h, i, j: tirx.Select(j < skv, ex[b, h, i, j], zero), name="e")
    r2 = te.reduce_axis((0, kt_cols), name="r2")
    z = te.compute((b_, h_, sp), lambda b, h, i: te.sum(e[b, h, i, r2], axis=r2), name="z")
    r3 = te.reduce_axis((0, vrows), name="r3")
    ou = te.compute((b_, h_, sp, dv), lambda b, h, i, d: te.sum(e[b, h, i, r3] * v[b, h, r3, d], axis=r3), name="ou")
    o = te.compute((b_, h_, s_, dv), lambda b, h, i, d: ou[b, h, i, d] / z[b, h, i], name="o")
    args = [q, kt, v] + ([bias] if bias is not None else []) + [o]
    return te.create_prim_func(args)


def _unroll_factor(extent: int) -> int:
    """How many k steps the ·v tile unrolls in TIR: 4 where it divides k (else 2, else 1)."""
    return next(f for f in (4, 2, 1) if extent % f == 0)


def _tile(sch, block, cols: int, rows: int, unroll: int = 1) -> None:
    """A GEMM-like block's (rows, columns, k) loops as a register tile accumulated over k; `unroll`
    k steps unrolled in TIR (see schedule())."""
    ii, j, kk = sch.get_loops(block)[-3:]
    jo, ji = sch.split(j, [None, cols])
    sch.reorder(jo, kk, ii, ji)
    acc = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(acc, jo, preserve_unit_loops=True)
    # Vectorise before decompose_reduction: after it, the update block shares its output with the
    # init block and the check refuses the loop (LLVM then got a scalar loop of `cols` FMAs).
    _try_vectorize(sch, ji)
    sch.unroll(ii)
    if unroll > 1:
        kk, ku = sch.split(kk, [None, unroll])
        sch.unroll(ku)
    sch.decompose_reduction(block, kk)
    _try_vectorize(sch, sch.get_loops(acc)[-1])


def _lanes_reduce(sch, block, lanes: int):
    """A row reduction over whole vectors as `lanes` partial reductions (vectorised after compute_at)."""
    r = sch.get_loops(block)[-1]
    _, ri = sch.split(r, [None, lanes])
    return sch.rfactor(ri, factor_axis=3)


def _vectorize_partials(sch, part) -> None:
    lane, *rest = sch.get_loops(part)[-5:]  # rfactor put the lane loop first: (lane, b, h, i, r)
    sch.reorder(*rest, lane)
    _try_vectorize(sch, lane)


def schedule(func, lanes: int, rows: int, cols: int, dcols: int):
    """The scheduled PrimFunc: (batch, head, row tile) in parallel, every stage of a row tile under it."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    named = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
    for name, blk in named.items():  # the exp and the logit difference: into `e`
        if name not in ("s", "m", "e", "z", "ou", "o"):
            sch.compute_inline(blk)
    partials = {f"{n}_rf": _lanes_reduce(sch, named[n], lanes) for n in ("m", "z")}  # rfactor wants them unmoved
    named.update(partials)
    out = named["o"]
    b, h, i, d = sch.get_loops(out)
    io, _ = sch.split(i, [None, rows])
    tile = sch.fuse(b, h, io)
    sch.parallel(tile)
    for name in ("ou", "z", "z_rf", "e", "m", "m_rf", "s"):
        sch.compute_at(named[name], tile, preserve_unit_loops=True)
    _tile(sch, named["s"], cols, rows)
    for part in partials.values():
        _vectorize_partials(sch, part)
    # The ·v tile's k loop unrolled 4 steps in TIR: left to LLVM (which unrolled it by 2), the 6×16
    # AVX2 tile spilled its 12 accumulators to the stack on every step (minilm-l6@512's 12 × 512
    # × 32 with its mask, AVX2 VM, 30-40 interleaved rounds: 5.3 → 4.4 ms; deit level).
    _tile(sch, named["ou"], dcols, rows, _unroll_factor(int(sch.get(sch.get_loops(named["ou"])[-1]).extent)))
    _try_vectorize(sch, sch.split(sch.get_loops(named["e"])[-1], [None, lanes])[1])
    _try_vectorize(sch, sch.split(sch.get_loops(out)[-1], [None, lanes])[1] if dcols % lanes == 0 else sch.get_loops(out)[-1])
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _static(expr) -> tuple[int, ...] | None:
    shape = getattr(expr.ty, "shape", None)
    vals = getattr(shape, "values", None)
    if vals is None or any(not hasattr(d, "value") for d in vals):
        return None
    return tuple(int(d.value) for d in vals)


def _broadcasts(bias: tuple[int, ...], to: tuple[int, ...]) -> bool:
    return len(bias) <= len(to) and all(n in (1, t) for n, t in zip(reversed(bias), reversed(to)))


def fuse_attention(target):
    """The Relax module pass: `matmul(softmax(matmul(q, kt) [+ bias], axis=-1), v)` on static 4-D
    float32 tensors becomes one `call_tir` of the scheduled kernel (op_pattern opaque: FuseOps must
    not merge it into a function the default rules would then reschedule). Run it before the fast
    math pass, which would turn the softmax into fast_softmax."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from edgeattn.kernels.tvm_cpu_rules import _register_file
    from edgeattn.kernels.tvm_fast_math import rewrite_relax_functions

    registers, lanes = _register_file(target)
    kernels: dict = {}

    def op(expr, name):
        return isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == name

    @mutator
    class _Fuse(PyExprMutator):
        def bound(self, expr):
            return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

        def match(self, call):
            """(q, kt, v, bias or None) of an attention chain ending in `call`, else None."""
            if not op(call, "relax.matmul"):
                return None
            soft = self.bound(call.args[0])
            if not op(soft, "relax.nn.softmax") or int(soft.attrs.axis) not in (-1, 3):
                return None
            logits, bias = self.bound(soft.args[0]), None
            if op(logits, "relax.add"):
                a, b = (self.bound(x) for x in logits.args)
                scores, bias = (a, logits.args[1]) if op(a, "relax.matmul") else (b, logits.args[0])
                logits = scores
            if not op(logits, "relax.matmul"):
                return None
            q, kt, v = logits.args[0], logits.args[1], call.args[1]
            shapes = [_static(x) for x in (q, kt, v)]
            if any(s is None or len(s) != 4 for s in shapes) or any(x.ty.dtype != "float32" for x in (q, kt, v)):
                return None
            (b_, h_, s_, d_), kts, vs = shapes
            if kts != (b_, h_, d_, vs[2]) or vs[:2] != (b_, h_):
                return None
            if bias is not None and (_static(bias) is None or bias.ty.dtype != "float32"
                                     or not _broadcasts(_static(bias), (b_, h_, s_, vs[2]))):
                return None
            return q, kt, v, bias

        def visit_call_(self, call):
            call = super().visit_call_(call)
            found = self.match(call)
            if found is None:
                return call
            q, kt, v, bias = found
            qs, vs = _static(q), _static(v)
            rows, cols, dcols = geometry(lanes, vs[3], registers)
            skv = vs[2]
            padded = -(-skv // cols) * cols
            if padded != skv:
                kt = self.builder_.emit(relax.op.nn.pad(kt, [0, 0, 0, 0, 0, 0, 0, padded - skv]))
            # v gets zero rows up to a multiple of 4 so the ·v tile's k loop unrolls by 4 (see
            # schedule()) at any length, deit's prime 197 and 577 included; cols is a multiple of 4,
            # so these rows stay within kt's padded columns, whose softmax weights are 0.
            vrows = -(-skv // 4) * 4
            if vrows != skv:
                v = self.builder_.emit(relax.op.nn.pad(v, [0, 0, 0, 0, 0, vrows - skv, 0, 0]))
            vshape = (*vs[:2], vrows, vs[3])
            bshape = _static(bias) if bias is not None else None
            key = (qs, padded, vshape, skv, bshape)
            if key not in kernels:
                func = schedule(attention_func(qs, padded, vshape, bshape, "float32", rows, skv), lanes, rows, cols, dcols)
                # no global_symbol ("main" from te): an exported symbol would keep the original alive
                # beside the copies later module passes make (AttachAttrLayoutFreeBuffers)
                func = func.without_attr("global_symbol").with_attr("op_pattern", 8)
                kernels[key] = self.builder_.add_func(func, "edgeattn_attention")
            args = [q, kt, v] + ([bias] if bias is not None else [])
            return relax.call_tir(kernels[key], args, relax.TensorType((*qs[:3], vs[3]), "float32"))

    @tvm.transform.module_pass(opt_level=0, name="EdgeattnFuseAttention")
    def _pass(mod, _ctx):
        if target.kind.name != "llvm":
            return mod
        return relax.transform.DeadCodeElimination()(rewrite_relax_functions(mod, _Fuse(mod)))

    return _pass
