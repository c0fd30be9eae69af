"""Default CPU schedules for the TVM target's untuned kernels (dlight rules, applied before lowering).

Without tuning, LegalizeOps' TIR is plain serial loops: deit-small ran 8.1 s on the 2-vCPU dev VM
against ~70 ms on ONNX Runtime. TVM 0.27's dlight has CPU rules for GEMV and reductions only, and
they left these graphs unchanged. These rules give every kernel a reasonable schedule:

- `Matmul`: one reduction block over its last axis (A[..., i, k] · B[..., k, j], with elementwise
  producers and epilogues fused by FuseOps): a register tile sized to the ISA's register file
  (4×24 on AVX2) accumulated in a local buffer over k, the GEMM padded to whole tiles, the
  epilogue applied on the tile's write-back, the outer tiles in parallel; a constant B is packed
  into column strips at compile time (`_prepack`).
- `Transpose`: a layout change of the last axis (kᵀ): lanes × lanes tiles, vector reads.
- `Injective`: elementwise/layout kernels: all loops fused, chunks of VEC lanes vectorised,
  the outer part in parallel.
- reductions (softmax, LayerNorm) keep dlight's CPU `Reduction` rule; any other single reduction
  (the patch-embedding conv2d) gets its spatial loops in parallel (`ParallelReduction`).

MetaSchedule's tuned records, where the database has them, replace all of this (kernels/tvm_tuning.py).
"""

from __future__ import annotations


def _vector_lanes(target) -> int:
    """f32 lanes of the target's vector registers (from its features: LLVM's vector-width query
    answers 512 for znver3, which has no AVX-512)."""
    return _register_file(target)[1]


def _register_file(target) -> tuple[int, int]:
    """(vector registers, f32 lanes in each) of the target's ISA."""
    from tvm.target.codegen import target_has_features

    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith(("aarch64", "arm64")):
        return 32, 4  # NEON
    try:
        if target_has_features("avx512f", target):
            return 32, 16
        if target_has_features("avx", target):
            return 16, 8
    except Exception:  # an LLVM without the query
        pass
    return 16, 4


# (rows, columns) register tiles of the GEMM micro-kernel, best first. AVX2 (16 ymm) was measured on
# the dev VM (200×384×1536 + bias, 2 threads, GFLOP/s): 4×24 97–119, 5×16 73–95, 12×8 61–63,
# 6×16 53 (LLVM spills one of its 12 accumulators: two broadcasts live at once), 2×48 65, 3×32 45.
# Other register files get the same shape by rule, unmeasured: 3 vectors a row, accumulators in
# three quarters of the registers.
_AVX2_TILES = ((4, 24), (5, 16), (12, 8))


def _tiles(target) -> tuple[tuple[int, int], ...]:
    regs, lanes = _register_file(target)
    if (regs, lanes) == (16, 8):
        return _AVX2_TILES
    acc = regs * 3 // 4
    return tuple((acc // v, v * lanes) for v in (3, 2, 1))


def _pick_tile(tiles, m: int | None, n: int | None) -> tuple[tuple[int, int], bool, bool]:
    """(tile, pad M, pad N). A tile whose width divides N comes first (padded columns cost more than
    their share: the tile's write-back goes scalar; 6×200×64×197 batched: 0.38 ms with N padded to
    216, 0.29 with N=192), then the least padded work (a later tile's work counts more: it runs slower)."""
    if m is None or n is None:
        return tiles[0], False, False
    ranked = list(enumerate(tiles))
    whole = [(rank, t) for rank, t in ranked if n % t[1] == 0]

    def work(rank_tile):
        rank, (r, c) = rank_tile
        return -(-m // r) * r * -(-n // c) * c * (1 + 0.25 * rank)

    tile = min(whole or ranked, key=work)[1]
    return tile, m % tile[0] != 0, n % tile[1] != 0


def _extent(sch, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if hasattr(ext, "value") or isinstance(ext, int) else None


def _try_vectorize(sch, loop) -> None:
    """Vectorise where the loop allows it (a ragged tail's predicate does not): else leave it to LLVM."""
    try:
        sch.vectorize(loop)
    except Exception:  # tvm raises ScheduleError subclasses; the loop stays scalar
        pass


def _blocks(func, target):
    """(schedule, normalized block infos) of an LLVM-target PrimFunc, else (None, None)."""
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
        return None, None
    sch = s_tir.Schedule(func)
    return sch, normalize_prim_func(sch) or None


def _parallel_vectorized(sch, block, lanes: int) -> None:
    """An elementwise block's loops fused, in chunks of 16 vectors over the threads, each vectorised."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    outer, inner = sch.split(fused, [None, lanes * 16])
    sch.parallel(outer)
    _, vec = sch.split(inner, [None, lanes])
    sch.vectorize(vec)


def _rows_parallel(sch, block, lanes: int) -> None:
    """A copy-like block (padding, unpadding, a ragged epilogue): its outer loops fused over the
    threads, the contiguous last loop vectorised when whole vectors fill it, else left to LLVM's
    vectoriser (it adds a scalar tail). Fusing the last loop in too would index each lane by div/mod
    of a ragged extent (197): a gather, 2× slower on deit's attention."""
    *outer, last = sch.get_loops(block)
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    ext = _extent(sch, last)
    if ext and ext % lanes == 0:
        sch.vectorize(sch.split(last, [None, lanes])[1])


def _numel(sch, block) -> int:
    """Elements a block writes (its output buffer's size)."""
    n = 1
    for d in sch.get(block).writes[0].source.shape:
        n *= int(d)
    return n


def _b_operand(sch, block):
    """Index of the update block's read buffer indexed [..., k, j] (B), else None."""
    blk = sch.get(block)
    ivars = [iv.var for iv in blk.iter_vars]
    j, k = ivars[-2], ivars[-1]
    for n, region in enumerate(blk.reads):
        if len(region.region) >= 2 and region.region[-1].min.same_as(j) and region.region[-2].min.same_as(k):
            return n
    return None


def _inline_epilogue(sch, epilogue: list) -> list:
    """One epilogue block, not a chain of full-size intermediates (unpad, +bias, GELU's parts) each
    written and read back: all but the last are inlined into their consumers. Returns the blocks
    left (any that would not inline, then the last)."""
    kept = []
    for b in epilogue[:-1]:
        try:
            sch.compute_inline(b)
        except Exception:  # tvm's ScheduleError: keep it as a block of its own
            kept.append(b)
    return kept + epilogue[-1:]


PREPACK = "meta_schedule.layout_rewrite_preproc"


def _prepack(sch, block, operand: int, cols: int) -> bool:
    """Pack a weight B [..., K, N] into column strips [..., N/cols, K, cols] once, at compile time.

    Only for a buffer the Relax caller marks layout-free (a constant: relax.transform.
    AttachAttrLayoutFreeBuffers): the packing block gets MetaSchedule's layout-rewrite annotation,
    so relax.transform.SplitLayoutRewritePreproc moves it into a function of its own that
    FoldConstant then runs on the weight while compiling (targets/tvm.py). Each thread's strip of B
    is then contiguous in the weight itself, as ORT's MLAS has it from its pre-packing at session
    creation, instead of copied from the row-major weight on every call. Returns False (nothing
    changed) for a B that is not a layout-free parameter, or whose N is not whole strips."""
    from tvm.tirx import IndexMap

    func = sch.mod["main"]
    free = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    buf = sch.get(block).reads[operand].source  # TVM 0.27: a buffer is the parameter Var itself
    if not free or not any(func.params[int(i)].same_as(buf) for i in free):
        return False
    n = buf.shape[-1]
    if not (isinstance(n, int) or hasattr(n, "value")) or int(n) % cols:
        return False
    packed = sch.cache_read(block, operand, "global")
    strips = IndexMap.from_func(lambda *ix: (*ix[:-2], ix[-1] // cols, ix[-2], ix[-1] % cols), ndim=len(buf.shape))
    sch.transform_layout(packed, ("write", 0), strips)
    sch.annotate(packed, PREPACK, True)
    return True


def _gemv(sch, block, epilogue: list, lanes: int):
    """One row times a [K, N] weight (the unit row loop normalised away: loops (..., j, k)), as with
    one token (deit-small's readout-pruned last block, its classifier): column strips of up to 4
    vectors over the threads, B read in place. Before, dlight's Reduction rule took these (its GEMV
    rule wants B as [N, K]): 0.66–0.71 ms for 1×384×1536 (2 GFLOP/s); now 0.09 (AVX2 VM)."""
    *outer, j, k = sch.get_loops(block)
    n = _extent(sch, j) or lanes
    cols = next((c * lanes for c in (4, 2, 1) if n % (c * lanes) == 0), lanes)
    jo, ji = sch.split(j, [None, cols])
    sch.reorder(*outer, jo, k, ji)
    local = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(local, jo, preserve_unit_loops=True)
    tail = [local]
    for b in _inline_epilogue(sch, epilogue):
        try:
            sch.reverse_compute_at(b, jo, preserve_unit_loops=True)
            tail.append(b)
        except Exception:  # tvm's ScheduleError: a separate elementwise pass
            _rows_parallel(sch, b, lanes)
    sch.parallel(sch.fuse(*outer, jo) if outer else jo)
    sch.decompose_reduction(block, k)
    _try_vectorize(sch, ji)
    for t in tail:
        _try_vectorize(sch, sch.get_loops(t)[-1])
    return sch


def _inline(sch, infos) -> bool:
    """compute_inline every block of `infos` (producers feeding the block that gets the schedule)."""
    try:
        for b in infos:
            sch.compute_inline(b.block_rv)
    except Exception:  # tvm's ScheduleError: this rule does not apply
        return False
    return True


def _injective_blocks(func, target):
    """(schedule, block infos) of an all-elementwise/layout kernel with its producers inlined into
    the last block, else (None, None)."""
    sch, infos = _blocks(func, target)
    if not infos or not all(b.is_injective() for b in infos) or not _inline(sch, infos[:-1]):
        return None, None
    return sch, infos


def rules():
    """The rules, in the order dlight tries them."""
    from tvm.s_tir.dlight import cpu as dl_cpu
    from tvm.s_tir.dlight.base import ScheduleRule

    class Matmul(ScheduleRule):
        TILES = None  # (rows, columns) register tiles, best first; None: _tiles(target)

        def apply(self, func, target, _tunable):
            sch, infos = _blocks(func, target)
            if not infos:
                return None
            reductions = [b for b in infos if not b.is_injective()]
            if len(reductions) != 1 or reductions[0].dom_kind().count("R") != 1:
                return None
            red = reductions[0]
            gemv = not red.dom_kind().endswith("SSR")
            if gemv and not (red.dom_kind().endswith("SR") and _b_operand(sch, red.block_rv) is not None):
                return None  # a row reduction (softmax's sum, LayerNorm's mean): not a GEMV
            position = infos.index(red)
            if not _inline(sch, infos[:position]):  # e.g. a cast or transpose feeding the GEMM
                return None
            block, lanes = red.block_rv, _vector_lanes(target)
            epilogue = [b.block_rv for b in infos[position + 1:]]
            if gemv:
                return _gemv(sch, block, epilogue, lanes)
            *outer, i, j, k = sch.get_loops(block)
            produced = _numel(sch, block)
            (rows, cols), pad_m, pad_n = _pick_tile(self.TILES or _tiles(target), _extent(sch, i), _extent(sch, j))
            if pad_m or pad_n:
                # A ragged tile edge keeps the tile's rows scalar (the predicate blocks vectorising):
                # pad the GEMM to whole tiles instead; the padding copies are small next to it.
                # (deit-small's 197 tokens: its qkv GEMM ran 28 GFLOP/s ragged, 39 padded.)
                try:
                    sch.pad_einsum(block, [1] * len(outer) + [rows, cols, 1])
                    for copy in sch.get_producers(block):  # the padded operand copies: serial loops otherwise
                        _rows_parallel(sch, copy, lanes)
                    epilogue = [*sch.get_consumers(block), *epilogue]  # the unpadding copy first
                    *outer, i, j, k = sch.get_loops(block)
                except Exception:  # tvm's ScheduleError: stay ragged
                    pass
            epilogue = _inline_epilogue(sch, epilogue)
            # An epilogue that writes more than the GEMM produces (ToMe's size column: x padded
            # from 32 to 33 columns with ones) cannot run on the tile: reverse_compute_at covers
            # only what the tile produced, and the extra column was never written (NaN out).
            own_loops = pad_n or any(_numel(sch, b) > produced for b in epilogue)
            io, ii = sch.split(i, [None, rows])
            jo, ji = sch.split(j, [None, cols])
            # Column strips outside row tiles: a thread walks down one strip of B across every row tile.
            sch.reorder(*outer, jo, io, k, ii, ji)
            local = sch.cache_write(block, 0, "local")
            sch.reverse_compute_at(local, io, preserve_unit_loops=True)
            tail = [local]
            if own_loops:  # a ragged column edge (or the above): the epilogue in loops of its own, vectorised over whole rows
                for b in epilogue:
                    _rows_parallel(sch, b, lanes)
                epilogue = []
            for b in epilogue:  # bias, residual, GELU (or the unpadding copy): on the tile, after its write-back
                sch.reverse_compute_at(b, io, preserve_unit_loops=True)
                tail.append(b)
            # (parallel before decompose_reduction: the check wants the update block to keep its init)
            operand = _b_operand(sch, block)
            if operand is not None:
                # Each thread takes whole column strips and runs every row tile down its strip of B
                # (K × cols), contiguous: a weight packed so at compile time (_prepack), any other B
                # copied into a buffer per call. Read in place, B's rows are N floats apart: at
                # N=1536 (6 KB) every k step lands in the same two L1 sets, so the strip streamed
                # from L2 for each row tile. deit-small's GEMMs, 2 threads: ~95 → 120–135 GFLOP/s
                # packed per call, 5–10% more packed at compile time.
                sch.parallel(sch.fuse(*outer, jo))
                if not _prepack(sch, block, operand, cols):
                    packed = sch.cache_read(block, operand, "global")
                    sch.compute_at(packed, sch.get_loops(block)[0], preserve_unit_loops=True)
                    _try_vectorize(sch, sch.get_loops(packed)[-1])
            else:
                sch.parallel(sch.fuse(*outer, jo, io))
            sch.decompose_reduction(block, k)
            sch.unroll(ii)
            _try_vectorize(sch, ji)
            for t in tail:
                _try_vectorize(sch, sch.get_loops(t)[-1])
            return sch

    class Injective(ScheduleRule):
        def apply(self, func, target, _tunable):
            sch, infos = _injective_blocks(func, target)
            if not infos or not sch.get_loops(infos[-1].block_rv):
                return None
            _parallel_vectorized(sch, infos[-1].block_rv, _vector_lanes(target))
            return sch

    class Transpose(ScheduleRule):
        """A layout change whose output's last axis is not its input's (kᵀ for the fused attention:
        (1, 197, 384) → (1, 6, 64, 200) with padding). The Injective rule's vectorised output
        chunks read a strided gather, lane by lane, with div/mod index arithmetic: 211 µs for
        deit-small's kᵀ, 2.9 GB/s (AVX2 VM). Here, `lanes`×`lanes` tiles: a vector read along the
        input's contiguous axis for each of `lanes` output columns (unrolled): 22 µs."""

        def apply(self, func, target, _tunable):
            sch, infos = _injective_blocks(func, target)
            if not infos:
                return None
            info, lanes = infos[-1], _vector_lanes(target)
            blk = sch.get(info.block_rv)
            iters = info.iters
            if len(iters) < 2 or len(blk.reads) != 1 or len(blk.writes) != 1:
                return None
            if not blk.writes[0].region[-1].min.same_as(iters[-1].var):
                return None
            from tvm.tirx.analysis import undefined_vars

            used = undefined_vars(blk.reads[0].region[-1].min)
            inner = [n for n, it in enumerate(iters[:-1]) if any(v.same_as(it.var) for v in used)]
            if any(v.same_as(iters[-1].var) for v in used) or not inner:
                return None  # the read is contiguous along the output's last axis (or a broadcast)
            c, s_ = iters[inner[-1]], iters[-1]
            if not all(isinstance(it.dom, int) and it.dom >= lanes for it in (c, s_)):
                return None
            co, ci = sch.split(c.loop_rv, [None, lanes])
            so, si = sch.split(s_.loop_rv, [None, lanes])
            others = [it.loop_rv for it in iters if it is not c and it is not s_]
            sch.reorder(*others, co, so, si, ci)
            sch.parallel(sch.fuse(*others, co) if others else co)
            sch.unroll(si)
            _try_vectorize(sch, ci)
            return sch

    class ParallelReduction(ScheduleRule):
        """Any other single reduction (e.g. the patch-embedding conv2d): its spatial loops in parallel."""

        def apply(self, func, target, _tunable):
            sch, infos = _blocks(func, target)
            if not infos or infos[-1].is_injective() or not all(b.is_injective() for b in infos[:-1]):
                return None
            if not _inline(sch, infos[:-1]):  # e.g. conv2d's padding copy
                return None
            kinds = infos[-1].dom_kind()
            spatial = len(kinds) - len(kinds.lstrip("S"))
            if spatial == 0:
                return None
            loops = sch.get_loops(infos[-1].block_rv)
            sch.parallel(sch.fuse(*loops[:spatial]) if spatial > 1 else loops[0])
            return sch

    class RowReductions(ScheduleRule):
        """LayerNorm-like chains: row reductions over the last axis ("SR": sum, mean, variance) and
        an elementwise output over the same rows. Each reduction runs as `lanes` vectorised partial
        sums (rfactor), all stages under one parallel row loop. dlight's Reduction rule kept one
        scalar accumulator per row (a latency-bound add chain): deit-small's 198 × 384 LayerNorm
        0.09 ms, as ORT's; MetaSchedule had found 0.03."""

        def apply(self, func, target, _tunable):
            sch, infos = _blocks(func, target)
            if not infos or len(infos) < 2 or not infos[-1].is_injective():
                return None
            reds = [b for b in infos if not b.is_injective()]
            if not reds or any(b.dom_kind() != "SR" for b in reds) or infos[-1].dom_kind() != "SS":
                return None
            lanes = _vector_lanes(target)
            widths = [_extent(sch, sch.get_loops(b.block_rv)[-1]) for b in reds]
            if any(not w or w % lanes for w in widths):
                return None
            try:
                return self._schedule(sch, infos, reds, lanes)
            except Exception:  # tvm's ScheduleError (e.g. a stage that will not inline): not this rule's
                return None

        @staticmethod
        def _schedule(sch, infos, reds, lanes: int):
            for b in infos[:-1]:
                if b.is_injective():
                    sch.compute_inline(b.block_rv)
            parts = []
            for b in reds:  # rfactor wants the reductions unmoved
                r = sch.get_loops(b.block_rv)[-1]
                parts.append(sch.rfactor(sch.split(r, [None, lanes])[1], factor_axis=1))
            out = infos[-1].block_rv
            row, col = sch.get_loops(out)
            sch.parallel(row)
            for b, p in reversed(list(zip(reds, parts))):  # consumers first: compute_at's rule
                sch.compute_at(b.block_rv, row, preserve_unit_loops=True)
                sch.compute_at(p, row, preserve_unit_loops=True)
            for p in parts:  # (row, lane, r, unit row) after compute_at: lanes innermost, vectorised
                lane, *rest = sch.get_loops(p)[1:]
                sch.reorder(*rest, lane)
                _try_vectorize(sch, lane)
            _try_vectorize(sch, sch.split(col, [None, lanes])[1])
            return sch

    return [Matmul(), dl_cpu.GEMV(), RowReductions(), dl_cpu.Reduction(), Transpose(), Injective(), ParallelReduction()]


def apply_default_schedules():
    """A module pass: dlight with the rules above (kernels already scheduled are left alone)."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(*rules())

