"""edgeattn.passes: IR → IR rewrites on onnx_ir models.

Every pass is an `onnx_ir.passes` pass (call(model) -> PassResult(model, modified)) that also
exposes `sites_changed` (how many sites it rewrote) and `details` (a JSON-able report).
The registry maps pass names to "module:class", imported on first use; a registered module
never imports this table back.
A pass's settings are its constructor's keyword arguments (`settings(name)`); an approximate
pass also declares each one's kind in a class attribute SETTINGS, which `--rewrite` checks
before any export (compiler/plan.py).
"""

from __future__ import annotations

import importlib
import inspect

PASSES: dict[str, str] = {
    "cleanup": "edgeattn.passes.cleanup:Cleanup",
    "canonicalize-attention": "edgeattn.passes.canonicalize_attention:CanonicalizeAttention",
    "decompose-attention": "edgeattn.passes.decompose_attention:DecomposeAttention",
    "fold-attention-heads": "edgeattn.passes.fold_attention_heads:FoldAttentionHeads",
    "sink-window": "edgeattn.passes.sink_window:SinkWindowMask",
    "fold-causal-masks": "edgeattn.passes.causal_masks:FoldCausalMasks",
    "tome": "edgeattn.passes.token_merging:TokenMerging",
    "cls-prune": "edgeattn.passes.cls_pruning:ClassTokenPruning",
    "agent": "edgeattn.passes.agent_attention:AgentAttention",
    "head-prune": "edgeattn.passes.head_pruning:HeadPruning",
    "window": "edgeattn.passes.window_attention:WindowAttention",
    "hilo": "edgeattn.passes.hilo_attention:HiLoAttention",
    "smooth-quant": "edgeattn.passes.smooth_quant:SmoothQuant",
    "patchify-conv": "edgeattn.passes.patchify_conv:PatchifyConv",
    "outlier-split": "edgeattn.passes.outlier_split:OutlierSplit",
    "pool": "edgeattn.passes.token_pooling:TokenPooling",
    "readout-prune": "edgeattn.passes.readout_prune:ReadoutPrune",
    "gemm-to-matmul": "edgeattn.passes.gemm_to_matmul:GemmToMatMul",
    "fold-weight-transpose": "edgeattn.passes.fold_weight_transpose:FoldWeightTranspose",
}

DESCRIPTIONS: dict[str, str] = {
    "cleanup": "constant folding, dead-code elimination, shape inference",
    "canonicalize-attention": "every attention block → ONNX Attention (opset 23), exact",
    "decompose-attention": "ONNX Attention (4-D) → MatMul/Softmax/MatMul for targets without it, exact",
    "fold-attention-heads": "head split/merge Reshape+Transpose folded into a 3-D Attention, exact",
    "sink-window": "causal prefill → sink + local-window mask (approximate; settings sink, window, layers)",
    "fold-causal-masks": "masks computed from input shapes only that are exactly causal → is_causal=1, exact",
    "tome": "token merging after attention (approximate; settings r, layers, embed_r, protect, prop_attn)",
    "cls-prune": "keep the patch tokens the class token attends to most (approximate; settings keep, layers, fuse)",
    "agent": "agent attention: queries read n pooled-query agents (approximate; settings agents, layers, power, shortcut)",
    "head-prune": "FLAP head pruning with bias compensation on calibration data (approximate; settings ratio, layers)",
    "window": "neighborhood attention on the patch grid: s×s query tiles see a w×w key window (s = w blocked, s = 1 sliding), prefix tokens global (approximate; settings window, stride, layers)",
    "hilo": "HiLo: some heads windowed, the others read average-pooled K/V (approximate; settings window, pool, alpha, layers)",
    "smooth-quant": "SmoothQuant: activation outliers migrated into the next weights before int8, exact (settings alpha, vo)",
    "patchify-conv": "patch-embedding Conv (kernel = stride) → patchify + MatMul for GEMM-strong backends, exact",
    "pool": "token pooling: each k×k square of patch tokens → one size-weighted token after a layer's attention, one constant MatMul (approximate; settings layers, k, prop_attn)",
    "readout-prune": "ops after the last attention's K/V run only on the tokens the output reads (e.g. the class token), exact",
    "gemm-to-matmul": "Gemm by a constant weight → MatMul + Add on the unflattened (B, S, K) input (GPT-2's Conv1D), exact",
    "fold-weight-transpose": "a MatMul weight computed as Transpose(initializer) → the transposed initializer (GPT-2's tied lm_head; run before int8), exact",
    "outlier-split": "LLM.int8()-style split: a MatMul's few outlier input channels go to a small float MatMul, exact (settings ratio, max_channels)",
}

# Passes that change the model's numbers: only run under a measured accuracy budget.
APPROXIMATE = {"pool", "sink-window", "tome", "cls-prune", "agent", "head-prune", "window", "hilo"}


def pass_class(name: str):
    if name not in PASSES:
        raise KeyError(f"unknown pass '{name}' — known passes: {', '.join(sorted(PASSES))}")
    module, cls = PASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create(name: str, **settings):
    return pass_class(name)(**settings)


# Keyword arguments the compiler fills in itself, never a user's setting.
INTERNAL_SETTINGS = {"calibration"}


def settings(name: str) -> dict[str, str | None]:
    """The settings a user may give pass `name` (its constructor's keyword arguments, in order),
    each with its kind from the class's SETTINGS: int, ints (an int or one per chosen layer),
    number, numbers, bool, layers, layers+embed (site indices, −1 = the embeddings); None = unchecked."""
    cls = pass_class(name)
    declared = getattr(cls, "SETTINGS", {})
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: declared.get(p.name, "layers" if p.name == "layers" else None) for p in params
            if p.name != "self" and p.name not in INTERNAL_SETTINGS
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
