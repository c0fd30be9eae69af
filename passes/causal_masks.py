"""Shape-only attention masks → `is_causal` (exact).

With a symbolic batch, exporters build the causal mask at run time (arange → Expand → GatherND
→ LessOrEqual → And …), so it is no constant the canonicalization can inspect. Such a mask
depends on the inputs only through their shapes; this pass evaluates it (ONNX Runtime, at two
batch sizes) and, when it is exactly lower-triangular for every batch entry, replaces it by
`is_causal=1` — which backends run with a causal kernel instead of reading a B×S×S mask.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_SHAPE_ONLY_READERS = {"Shape", "Size"}


def _shape_only_cone(value: ir.Value, graph_inputs: set[int]) -> set[str] | None:
    """Names of the values `value` is computed from, or None if it reads a graph input's
    contents (not only its shape through Shape/Size)."""
    seen: set[int] = set()
    names: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        names.add(v.name)
        node = v.producer()
        if node is None:
            continue
        for i in node.inputs:
            if i is None:
                continue
            if id(i) in graph_inputs:
                if node.op_type not in _SHAPE_ONLY_READERS:
                    return None  # the mask reads an input's contents
                names.add(i.name)
            else:
                stack.append(i)
    return names


def evaluate_cone(model: ir.Model, names: list[str], cone: set[str], batch: int, feeds: dict | None = None) -> list[np.ndarray]:
    """Run only the masks' subgraph (nodes and initializers of the cone) on ONNX Runtime; inputs
    not in `feeds` are ones of the given batch size."""
    import onnxruntime as ort

    proto = ir.to_proto(model)
    g = proto.graph
    keep = [n for n in g.node if any(o in cone for o in n.output)]
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in cone]
    del g.initializer[:]
    g.initializer.extend(inits)
    ins = [i for i in g.input if i.name in cone]
    del g.input[:]
    g.input.extend(ins)
    del g.output[:]
    for name in names:
        g.output.add().name = name
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = dict(feeds or {})
    for i in sess.get_inputs():
        if i.name in feeds:
            continue
        shape = [d if isinstance(d, int) else batch for d in i.shape]
        dtype = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                 "tensor(bool)": np.bool_, "tensor(float16)": np.float16}.get(i.type, np.float32)
        feeds[i.name] = np.ones(shape, dtype)
    return sess.run(names, feeds)


def _is_causal(mask: np.ndarray) -> bool:
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]:
        return False
    tril = np.tril(np.ones(mask.shape[-2:], bool))
    if mask.dtype == np.bool_:
        return bool(np.all(mask == tril))
    finite_zero = np.isclose(mask, 0.0)
    very_negative = mask <= -1e4
    return bool(np.all(np.where(tril, finite_zero, very_negative)))


class FoldCausalMasks(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.sites_changed, self.details = 0, {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        inputs = {id(v) for v in model.graph.inputs}
        candidates, cone = [], set()
        for n in model.graph:
            if (n.op_type != "Attention" or len(n.inputs) != 4 or n.inputs[3] is None
                    or (n.attributes.get("is_causal") and n.attributes["is_causal"].value)):
                continue
            names_n = _shape_only_cone(n.inputs[3], inputs)
            if names_n is not None:
                candidates.append(n)
                cone |= names_n
        names = sorted({n.inputs[3].name for n in candidates})
        causal: set[str] = set()
        if names:
            one, two = evaluate_cone(model, names, cone, 1), evaluate_cone(model, names, cone, 2)
            causal = {n for n, a, b in zip(names, one, two) if _is_causal(a) and _is_causal(b)}
        changed = 0
        for node in candidates:
            if node.inputs[3].name in causal:
                node.resize_inputs(3)
                node.attributes["is_causal"] = ir.AttrInt64("is_causal", 1)
                changed += 1
        self.sites_changed = changed
        self.details = {"shape_only_masks": len(candidates), "to_is_causal": changed}
        return ir.passes.PassResult(model, modified=changed > 0)
