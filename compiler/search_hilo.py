"""`--rewrite auto`, family `hilo` (opt-in): per layer, the Hi-Fi window of HiLo attention
(half the heads in windows, half on K/V pooled over the grid's smallest divisor), searched as
compiler/search_levels.py does; the ladder is the window sides that tile the patch grid."""

from __future__ import annotations

import onnx_ir as ir

from edgeattn.compiler.search_levels import LevelFamily
from edgeattn.compiler.search_window import patch_grid, window_options


def _ladder(model: ir.Model, n_sites: int) -> tuple[list[int], dict]:
    grid, _, reason = patch_grid(model, n_sites)
    options = window_options(grid) if grid else []
    if not options:
        return [], {"reason": reason or f"the {grid}×{grid} grid has no divisor"}
    pool = next(d for d in range(2, grid + 1) if grid % d == 0)  # the finest pooling that tiles the grid
    return options, {"pool": pool, "alpha": 0.5}


FAMILY = LevelFamily("hilo", "window", "windows", _ladder)
search, steps_of, safer = FAMILY.search, FAMILY.steps_of, FAMILY.safer
