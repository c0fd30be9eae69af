"""Cleanup: constant folding, dead-code elimination and shape inference (onnxscript's optimizer)."""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnxscript import optimizer

# Larger than onnxscript's defaults so that mask-building subgraphs (e.g. a causal mask of
# seq×seq booleans) fold into constants that the attention rules can inspect.
FOLD_INPUT_LIMIT = 1 << 20
FOLD_OUTPUT_LIMIT = 1 << 22

# onnxscript's folder (here, and inside the rewriter and the exporter) tries onnx's reference ops
# on shape subgraphs and logs each one that cannot run ("Evaluation failed"); those nodes simply
# stay unfolded, so the warnings are noise on our users' terminals. The exporter runs the folder
# too, before any pass of ours is imported: frontend calls this as well.
def quiet_folder() -> None:
    logging.getLogger("onnxscript.optimizer._constant_folding").setLevel(logging.ERROR)


quiet_folder()


class Cleanup(ir.passes.InPlacePass):
    """Fold constants and remove dead nodes; `sites_changed` is the number of nodes removed."""

    def __init__(self) -> None:
        super().__init__()
        self.sites_changed = 0
        self.details: dict = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for _ in model.graph.all_nodes())
        optimizer.optimize(model, input_size_limit=FOLD_INPUT_LIMIT, output_size_limit=FOLD_OUTPUT_LIMIT)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        ir.passes.common.RemoveInitializersFromInputsPass()(model)
        after = sum(1 for _ in model.graph.all_nodes())
        self.sites_changed = max(before - after, 0)
        self.details = {"nodes_before": before, "nodes_after": after}
        return ir.passes.PassResult(model, modified=before != after)
