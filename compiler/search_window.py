"""`--rewrite auto`, family `window`: the per-layer blocked-window schedule (tile-aligned
neighborhood attention) with the fewest GEMM FLOPs inside the accuracy budget.

Each site's ladder is the window sides that divide its patch grid, largest first (level 0 =
full attention, each level a smaller window: fewer keys per query, more error), searched as in
compiler/search_levels.py. Blocked windows are chosen over strided or sliding ones here because
they are cut by Reshape/Transpose alone: the work they skip is real on every backend, without
the key copies a gathered window needs.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from edgeattn.compiler.search_base import clone, skip_reasons
from edgeattn.compiler.search_levels import LevelFamily
from edgeattn.passes._tokens import site_blocks


def window_options(grid: int) -> list[int]:
    """Window sides below `grid` that tile it, largest first (2 at least: a 1×1 window is no attention)."""
    return [w for w in range(grid - 1, 1, -1) if grid % w == 0]


def patch_grid(model: ir.Model, n_sites: int) -> tuple[int | None, int, str]:
    """(grid side, prefix tokens, reason): the one square patch grid every site shares, or None."""
    blocks, skipped = site_blocks(clone(model), None, None)
    grids = {math.isqrt(b.tokens - p) for b, p in blocks if math.isqrt(b.tokens - p) ** 2 == b.tokens - p}
    if len(grids) == 1 and len(blocks) == n_sites:
        return grids.pop(), blocks[0][1], ""
    reasons = skip_reasons(skipped) or "the patch tokens of every site are not one square grid"
    return None, 0, reasons


def _ladder(model: ir.Model, n_sites: int) -> tuple[list[int], dict]:
    grid, _, reason = patch_grid(model, n_sites)
    options = window_options(grid) if grid else []
    return (options, {}) if options else ([], {"reason": reason or f"the {grid}×{grid} grid has no divisor"})


FAMILY = LevelFamily("window", "window", "windows", _ladder)
search, steps_of, safer = FAMILY.search, FAMILY.steps_of, FAMILY.safer
