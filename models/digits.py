"""digits-vit: a small Vision Transformer trained on scikit-learn's digits dataset.

This is the zoo's *real-accuracy* model: its weights are trained (by
`python -m edgeattn.models.train_digits_vit`) and committed under models/weights/, so
compiled artifacts can be checked for accuracy, not only for numerical agreement.

The dataset (1797 8×8 grayscale images, shipped inside scikit-learn — nothing is
downloaded) is split ONCE into train/test with a fixed seed. THE SPLIT MUST NEVER CHANGE:
the committed weights were trained on the training part only, and every accuracy figure
(and tests/models/test_digits.py, which pins checksums of the test split) refers to this
exact held-out set. Changing SPLIT_SEED / TEST_FRACTION or the preprocessing would leak
training images into the test set and silently invalidate all reported accuracies.

This module imports numpy and scikit-learn only; torch / transformers / safetensors are
imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

# --- the fixed split: never change these --------------------------------------------------
SPLIT_SEED = 0
TEST_FRACTION = 0.25

# transformers.ViTConfig kwargs of digits-vit: 32×32 input, 4×4 patches → 64 patches + CLS = 65 tokens.
CONFIG: dict = {
    "image_size": 32,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 192,  # 1.5× hidden: keeps the fp32 weights file < 2 MB
    "num_labels": 10,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-12,
    "qkv_bias": True,
    "initializer_range": 0.02,
}

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "digits_vit.safetensors"
TRAIN_SCRIPT = "python -m edgeattn.models.train_digits_vit"


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) 1-D linear-interpolation matrix, half-pixel centres, edge-clamped
    (the same sampling as torch's interpolate(mode='bilinear', align_corners=False))."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w_hi = src - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - w_hi)
    np.add.at(m, (rows, hi), w_hi)
    return m


def preprocess(images8: np.ndarray, image_size: int = 32) -> np.ndarray:
    """(N, 8, 8) digits pixels in [0, 16] → float32 (N, 3, S, S) in [-1, 1]: bilinear upscale,
    /16, then (x - 0.5) / 0.5, gray replicated to 3 channels. Deterministic (pure numpy)."""
    images8 = np.asarray(images8, dtype=np.float64)
    if images8.ndim != 3:
        raise ValueError(f"expected (N, H, W) images, got shape {images8.shape}")
    n, h, w = images8.shape
    my = _bilinear_matrix(h, image_size)
    mx = _bilinear_matrix(w, image_size)
    up = np.einsum("yh,nhw,xw->nyx", my, images8, mx)
    x = (up / 16.0 - 0.5) / 0.5
    x = np.repeat(x[:, None, :, :], 3, axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed (train_idx, test_idx) into sklearn's load_digits() arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    return train_idx, test_idx


def load_split(image_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test of the fixed split (1347 / 450 images).

    Images: float32 NCHW (N, 3, image_size, image_size), values in [-1, 1]; labels int64.
    """
    from sklearn.datasets import load_digits

    ds = load_digits()
    train_idx, test_idx = split_indices()
    images = ds.images
    labels = ds.target.astype(np.int64)
    return (preprocess(images[train_idx], image_size), labels[train_idx].copy(),
            preprocess(images[test_idx], image_size), labels[test_idx].copy())


def build_config():
    from transformers import ViTConfig

    return ViTConfig(**CONFIG)


def build_model(weights: bool = True):
    """A `transformers.ViTForImageClassification` in eval mode, with the committed trained
    weights loaded (strict) unless weights=False (then randomly initialised, seed 0)."""
    import torch
    from transformers import ViTForImageClassification

    if weights and not WEIGHTS_PATH.is_file():
        raise FileNotFoundError(
            f"digits-vit weights not found at {WEIGHTS_PATH}; train them with `{TRAIN_SCRIPT}` "
            f"(models/train_digits_vit.py)")
    torch.manual_seed(0)
    model = ViTForImageClassification(build_config())
    if weights:
        from safetensors.torch import load_file

        state = load_file(str(WEIGHTS_PATH))
        model.load_state_dict(state, strict=True)
    return model.eval()


def evaluate_top1(predict_fn: Callable[[np.ndarray], np.ndarray], batch_size: int = 64) -> float:
    """Top-1 accuracy (fraction) of `predict_fn(x_batch) -> logits` on the fixed test split.

    x_batch is float32 (B, 3, 32, 32); the last batch may be smaller than batch_size.
    """
    _, _, x_test, y_test = load_split(CONFIG["image_size"])
    correct = 0
    for start in range(0, len(x_test), batch_size):
        xb = x_test[start:start + batch_size]
        logits = np.asarray(predict_fn(xb))
        if logits.ndim != 2 or logits.shape[0] != len(xb):
            raise ValueError(f"predict_fn returned shape {logits.shape} for a batch of {len(xb)}")
        correct += int((logits.argmax(axis=1) == y_test[start:start + batch_size]).sum())
    return correct / len(x_test)


def torch_predict_fn(model) -> Callable[[np.ndarray], np.ndarray]:
    """predict_fn for evaluate_top1 running a torch ViTForImageClassification (or any
    module returning logits / an object with .logits)."""
    import torch

    def predict(xb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(pixel_values=torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)))
        logits = out.logits if hasattr(out, "logits") else out
        return logits.float().numpy()

    return predict
