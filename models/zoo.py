"""The model zoo: names → builders, imported on first use.

A zoo spec is `name` or `name@N`, where N is the image resolution for vision models and the
sequence length for text models. Builders return a `ZooModel`: a torch module in eval mode,
its input specs, and (where the model has them) labelled evaluation data.
Nothing here downloads: architectures come from configs, weights from a pip package or
from small files committed under models/weights/.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgeattn.runtime.errors import EdgeAttnError

# name → "module:function"; the function takes the optional @N value (or None).
ZOO: dict[str, str] = {
    "vit-tiny": "edgeattn.models.vision:vit_tiny",
    "deit-small": "edgeattn.models.vision:deit_small",
    "digits-vit": "edgeattn.models.vision:digits_vit",
    "digits-vit-hr": "edgeattn.models.vision:digits_vit_hr",
    "minilm-l6": "edgeattn.models.text:minilm_l6",
    "gpt2-small": "edgeattn.models.text:gpt2_small",
}


class UnknownModelError(EdgeAttnError, ValueError):
    """One line naming the model; a ValueError too, for callers that caught that before."""


@dataclass(frozen=True)
class InputSpec:
    """One model input; a str dim is symbolic (its example size comes from `example_dims`)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    low: int = 0  # integer inputs are drawn from [low, high)
    high: int = 1


@dataclass
class ZooModel:
    name: str
    module: Any  # torch.nn.Module, eval mode
    inputs: list[InputSpec]
    output_names: list[str]
    description: str
    example_dims: dict[str, int] = field(default_factory=lambda: {"batch": 1})
    # Labelled evaluation: predict_fn(x) -> logits  ↦  top-1 fraction.
    evaluate_top1: Callable[[Callable[[np.ndarray], np.ndarray]], float] | None = None
    # Unlabelled embedding evaluation: run(feeds) -> embeddings (B, D)  ↦  all embeddings of the
    # model's text set stacked (N, D), in a fixed order (compare with accuracy.embedding_agreement).
    evaluate_embeddings: Callable[[Callable[[dict], np.ndarray]], np.ndarray] | None = None
    # Data for calibrating rewrites (and quantization): a list of feed dicts, never the eval split.
    calibration_feeds: Callable[[], list[dict]] | None = None
    weights: str = "random init (seed 0)"

    def example_feeds(self, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        dims = {**self.example_dims, **(dims or {})}
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            shape = tuple(dims.get(d, 1) if isinstance(d, str) else d for d in spec.shape)
            if spec.dtype.startswith("float"):
                feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif "mask" in spec.name:
                feeds[spec.name] = np.ones(shape, dtype=spec.dtype)
            else:
                feeds[spec.name] = rng.integers(spec.low, spec.high, size=shape).astype(spec.dtype)
        return feeds


def parse_spec(spec: str) -> tuple[str, int | None]:
    name, _, size = spec.partition("@")
    if name not in ZOO:
        raise UnknownModelError(
            f"unknown zoo model '{name}' — choose one of: {', '.join(sorted(ZOO))} (or give an .onnx file / HF folder)"
        )
    if size and (not size.isdigit() or int(size) <= 0):
        raise UnknownModelError(f"bad size '@{size}' in '{spec}' — use name@N with a positive integer, e.g. deit-small@384")
    return name, int(size) if size else None


def is_zoo_name(spec: str) -> bool:
    return spec.partition("@")[0] in ZOO


def build(spec: str) -> ZooModel:
    name, size = parse_spec(spec)
    module_path, func = ZOO[name].split(":")
    model = getattr(importlib.import_module(module_path), func)(size)
    model.name = spec
    return model
