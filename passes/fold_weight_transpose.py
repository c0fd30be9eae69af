"""A MatMul weight computed as Transpose(initializer) → the transposed initializer, exact.

GPT-2 ties its output projection to the token embedding: the export computes `lm_head` as
MatMul(x, Transpose(wte)), and a 38.6M-element Transpose is beyond the cleanup's folding limit, so
the weight is not a constant and int8 left `gpt2-small`'s largest GEMM (31% of its FLOPs) in
float. Run before quantization only: the transposed copy sits next to the embedding table the
Gather still reads (a float model would only grow on disk; its backends fold it at load anyway).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common  # noqa: F401 - ir.passes.common

from edgeattn.passes._linear import const, replace_const


def _transposed_weight(node: ir.Node) -> np.ndarray | None:
    producer = node.inputs[1].producer() if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if producer is None or producer.op_type != "Transpose":
        return None
    w = const(producer.inputs[0])
    perm = producer.attributes.get("perm")
    if w is None or w.ndim != 2 or (perm is not None and list(perm.as_ints()) != [1, 0]):
        return None
    return np.ascontiguousarray(w.T)


class FoldWeightTranspose(ir.passes.InPlacePass):
    """No settings. `sites_changed`: MatMuls whose weight became an initializer."""

    def __init__(self) -> None:
        super().__init__()
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        folded = []
        for node in [n for n in model.graph.all_nodes() if n.op_type == "MatMul"]:
            w = _transposed_weight(node)
            if w is not None:
                replace_const(model, node, 1, w)
                folded.append({"node": node.name, "shape": list(w.shape)})
        if folded:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        self.sites_changed = len(folded)
        self.details = {"folded": folded}
        return ir.passes.PassResult(model, modified=bool(folded))
