"""Sink + local-window attention for causal decoders' prefill (StreamingLLM / LM-Infinite style).

Each query keeps the first `sink` tokens (attention sinks) and the last `window` tokens up to
itself: keep(i, j) = j ≤ i and (i − j < window or j < sink). The causal `Attention` gets this
as a constant boolean mask instead of `is_causal`. Exact when window ≥ sequence length.

Dense kernels (ORT, OpenVINO) still compute the masked entries: the FLOPs reported as removed
are what a block-sparse kernel would skip, not a latency gain on today's targets.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def sink_window_mask(seq: int, sink: int, window: int) -> np.ndarray:
    i = np.arange(seq)[:, None]
    j = np.arange(seq)[None, :]
    return (j <= i) & ((i - j < window) | (j < sink))


class SinkWindowMask(ir.passes.InPlacePass):
    """Settings: sink (tokens kept at the start), window (recent tokens), layers (indices of the
    Attention sites in graph order; None = all)."""

    SETTINGS = {"sink": "int", "window": "int", "layers": "layers"}

    def __init__(self, sink: int = 4, window: int = 256, layers: list[int] | None = None) -> None:
        super().__init__()
        if sink < 0 or window < 1:
            raise ValueError(f"sink-window needs sink ≥ 0 and window ≥ 1, got sink={sink}, window={window}")
        self.sink, self.window, self.layers = int(sink), int(window), layers
        self.sites_changed, self.details = 0, {}

    def _reason(self, node: ir.Node) -> str | None:
        attrs = node.attributes
        if not (attrs.get("is_causal") and attrs["is_causal"].value):
            return "not causal"
        if len(node.inputs) > 3 and any(v is not None for v in node.inputs[3:]):
            return "already has a mask or a KV cache"
        q, k = node.inputs[0], node.inputs[1]
        if q.shape is None or k.shape is None or len(q.shape) != 4 or len(k.shape) != 4:
            return "needs 4-D query/key with known shapes"
        if not (isinstance(q.shape[2], int) and q.shape[2] == k.shape[2]):
            return "needs a static sequence length equal for query and key (prefill)"
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        sites = [n for n in model.graph if n.op_type == "Attention"]
        changed, skipped, kept, total = 0, [], 0.0, 0.0
        for index, node in enumerate(sites):
            if self.layers is not None and index not in self.layers:
                continue
            reason = self._reason(node)
            if reason:
                skipped.append({"node": node.name or f"Attention #{index}", "reason": reason})
                continue
            seq = node.inputs[0].shape[2]
            mask = sink_window_mask(seq, self.sink, self.window)
            tensor = ir.tensor(mask[None, None])
            # typed and shaped: decompose-attention (tvm) needs the mask's rank
            value = ir.Value(name=f"{node.name or 'attention'}_sink_window_mask", shape=tensor.shape,
                             type=ir.TensorType(tensor.dtype), const_value=tensor)
            model.graph.register_initializer(value)
            node.resize_inputs(4)
            node.replace_input_with(3, value)
            node.attributes["is_causal"] = ir.AttrInt64("is_causal", 0)
            causal_entries = seq * (seq + 1) / 2
            kept += mask.sum()
            total += causal_entries
            changed += 1
        self.sites_changed = changed
        self.details = {"sites": len(sites), "changed": changed, "skipped": skipped,
                        "sink": self.sink, "window": self.window,
                        "kept_fraction_of_causal": float(kept / total) if total else 1.0,
                        "note": "dense kernels compute masked entries anyway: no latency gain on ORT/OpenVINO"}
        return ir.passes.PassResult(model, modified=changed > 0)
