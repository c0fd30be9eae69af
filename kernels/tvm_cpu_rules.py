"""Default CPU schedules for the TVM target's untuned kernels (dlight rules, applied before lowering).

Without tuning, LegalizeOps' TIR is plain serial loops: deit-small ran 8.1 s on the 2-vCPU dev VM
against ~70 ms on ONNX Runtime. TVM 0.27's dlight has CPU rules for GEMV and reductions only, and
they left these graphs unchanged. These rules give every kernel a reasonable schedule:

- `Matmul`: one reduction block over its last axis (A[..., i, k] · B[..., k, j], with elementwise
  producers and epilogues fused by FuseOps): a 4×VEC register tile (VEC = the target's f32
  lanes) accumulated in a local buffer over k, the epilogue applied on the tile's write-back,
  the outer tiles in parallel.
- `Injective`: elementwise/layout kernels: all loops fused, chunks of VEC lanes vectorised,
  the outer part in parallel.
- reductions (softmax, LayerNorm) keep dlight's CPU `Reduction` rule; any other single reduction
  (the patch-embedding conv2d) gets its spatial loops in parallel (`ParallelReduction`).

MetaSchedule's tuned records, where the database has them, replace all of this (kernels/tvm_tuning.py).
"""

from __future__ import annotations


def _vector_lanes(target) -> int:
    from tvm.target.codegen import llvm_get_vector_width

    try:
        return max(4, int(llvm_get_vector_width(target)) // 32)
    except Exception:  # an LLVM without the query: SSE width
        return 4


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


def _inline(sch, infos) -> bool:
    """compute_inline every block of `infos` (producers feeding the block that gets the schedule)."""
    try:
        for b in infos:
            sch.compute_inline(b.block_rv)
    except Exception:  # tvm's ScheduleError: this rule does not apply
        return False
    return True


def rules():
    """The rules, in the order dlight tries them."""
    from tvm.s_tir.dlight import cpu as dl_cpu
    from tvm.s_tir.dlight.base import ScheduleRule

    class Matmul(ScheduleRule):
        ROWS = 6

        def apply(self, func, target, _tunable):
            sch, infos = _blocks(func, target)
            if not infos:
                return None
            reductions = [b for b in infos if not b.is_injective()]
            if len(reductions) != 1 or not reductions[0].dom_kind().endswith("SSR"):
                return None
            red = reductions[0]
            if red.dom_kind().count("R") != 1:
                return None
            position = infos.index(red)
            if not _inline(sch, infos[:position]):  # e.g. a cast or transpose feeding the GEMM
                return None
            block = red.block_rv
            lanes = _vector_lanes(target)
            epilogue = [b.block_rv for b in infos[position + 1:]]
            *outer, i, j, k = sch.get_loops(block)
            ext_i, ext_j = _extent(sch, i), _extent(sch, j)
            if not epilogue and ext_j is not None and ext_i is not None and (ext_j % lanes or ext_i % self.ROWS):
                # A ragged tile edge would keep the whole row scalar (the predicate blocks vectorising):
                # pad the GEMM to whole tiles instead; the padding copies are small next to it.
                try:
                    sch.pad_einsum(block, [1] * len(outer) + [self.ROWS, lanes, 1])
                except Exception:
                    return None
                epilogue = list(sch.get_consumers(block))
                *outer, i, j, k = sch.get_loops(block)
            io, ii = sch.split(i, [None, self.ROWS])
            jo, ji = sch.split(j, [None, lanes])
            # Column strips outside row tiles: a thread walks down one strip of B (K × VEC floats,
            # ~100 KB at K=1536) across every row tile, so it stays in L2 instead of coming from
            # memory once per tile.
            sch.reorder(*outer, jo, io, k, ii, ji)
            local = sch.cache_write(block, 0, "local")
            sch.reverse_compute_at(local, io, preserve_unit_loops=True)
            tail = [local]
            for b in epilogue:  # bias, residual, GELU (or the unpadding copy): on the tile, after its write-back
                sch.reverse_compute_at(b, io, preserve_unit_loops=True)
                tail.append(b)
            # parallel before decompose_reduction: the check wants the update block to keep its init
            sch.parallel(sch.fuse(*outer, jo, io))
            sch.decompose_reduction(block, k)
            sch.unroll(ii)
            _try_vectorize(sch, ji)
            for t in tail:
                _try_vectorize(sch, sch.get_loops(t)[-1])
            return sch

    class Injective(ScheduleRule):
        def apply(self, func, target, _tunable):
            sch, infos = _blocks(func, target)
            if not infos or not all(b.is_injective() for b in infos) or not _inline(sch, infos[:-1]):
                return None
            loops = sch.get_loops(infos[-1].block_rv)
            if not loops:
                return None
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            lanes = _vector_lanes(target)
            outer, inner = sch.split(fused, [None, lanes * 16])
            sch.parallel(outer)
            _, vec = sch.split(inner, [None, lanes])
            sch.vectorize(vec)
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

    return [Matmul(), dl_cpu.GEMV(), dl_cpu.Reduction(), Injective(), ParallelReduction()]


def apply_default_schedules():
    """A module pass: dlight with the rules above (kernels already scheduled are left alone)."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(*rules())

