"""Which integer inputs index a table, and the index range that table allows.

A graph input that a Gather uses as indices into a constant (input_ids into the word embeddings)
may only hold values in [-rows, rows-1] (ONNX allows negative indices). ORT refuses others with a
clear error; TVM's `take` (the Relax frontend's fast mode) reads out of bounds and the process
segfaults. So the manifest records the bounds and the runtime checks feeds against them before any
backend runs (runtime.spec.check_index_bounds): one clear error on every target.
"""

from __future__ import annotations

import onnx_ir as ir


def _table_rows(node: ir.Node) -> int | None:
    data = node.inputs[0]
    if data is None or data.const_value is None or data.shape is None:
        return None
    axis = node.attributes.get_int("axis", 0)
    dims = list(data.shape)
    axis = axis + len(dims) if axis < 0 else axis
    return dims[axis] if 0 <= axis < len(dims) and isinstance(dims[axis], int) else None


def index_bounds(model: ir.Model) -> dict[str, list[int]]:
    """{input name: [lowest, highest]} (inclusive) for graph inputs used as Gather indices into a
    constant; an input indexing several tables gets the tightest bounds."""
    inputs = {id(v): v.name for v in model.graph.inputs}
    out: dict[str, list[int]] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        name = inputs.get(id(node.inputs[1]))
        rows = _table_rows(node) if name is not None else None
        if rows is None:
            continue
        lo, hi = out.get(name, [-rows, rows - 1])
        out[name] = [max(lo, -rows), min(hi, rows - 1)]
    return out
