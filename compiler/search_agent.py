"""`--rewrite auto`, family `agent` (opt-in): per layer, the number of agent tokens of
training-free agent attention, searched as compiler/search_levels.py does. The ladder is the
prefix tokens plus a×a pooled agents, from a quarter of the patch tokens down to 2×2: a site
costs 4·N·n·d instead of 4·N²·d, so only n well below N saves work."""

from __future__ import annotations

import math

import onnx_ir as ir

from edgeattn.compiler.search_levels import LevelFamily
from edgeattn.compiler.search_window import patch_grid


def _ladder(model: ir.Model, n_sites: int) -> tuple[list[int], dict]:
    grid, prefix, reason = patch_grid(model, n_sites)
    if not grid:
        return [], {"reason": reason}
    options = [prefix + a * a for a in range(math.isqrt(grid * grid // 4), 1, -1)]
    return (options, {}) if options else ([], {"reason": f"a {grid}×{grid} grid is too small for agents"})


FAMILY = LevelFamily("agent", "agents", "agents", _ladder)
search, steps_of, safer = FAMILY.search, FAMILY.steps_of, FAMILY.safer
