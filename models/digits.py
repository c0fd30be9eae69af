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

digits-vit-hr (variant="hr": CONFIG_HR, WEIGHTS_PATH_HR) is the same task at 384×384 with
16×16 patches (576 tokens + CLS), on the same fixed split; it is initialised from the
committed digits-vit weights and fine-tuned on the training split
(`python -m edgeattn.models.train_digits_vit --variant hr`). Its 384×384 images are made
by `preprocess_separable` and, in evaluate_top1, one batch at a time.

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

# digits-vit-hr: the same digits upscaled to 384×384, 16×16 patches → 24×24 = 576 patches + CLS =
# 577 tokens. The transformer blocks have exactly the shapes of CONFIG's (only the patch
# embedding and the position embeddings differ), so the hr model is initialised from the
# committed 32×32 weights and fine-tuned (`python -m edgeattn.models.train_digits_vit --variant hr`).
CONFIG_HR: dict = {**CONFIG, "image_size": 384, "patch_size": 16}

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "digits_vit.safetensors"
WEIGHTS_PATH_HR = Path(__file__).resolve().parent / "weights" / "digits_vit_hr.safetensors"
TRAIN_SCRIPT = "python -m edgeattn.models.train_digits_vit"

VARIANTS = ("base", "hr")


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown digits-vit variant {variant!r} — choose one of: {', '.join(VARIANTS)}")
    return variant


def get_config(variant: str = "base") -> dict:
    """The ViTConfig kwargs of a variant: CONFIG ("base", 32×32) or CONFIG_HR ("hr", 384×384)."""
    return CONFIG if _check_variant(variant) == "base" else CONFIG_HR


def weights_path(variant: str = "base") -> Path:
    """Where a variant's committed weights live (read at call time, so WEIGHTS_PATH* can be patched)."""
    return WEIGHTS_PATH if _check_variant(variant) == "base" else WEIGHTS_PATH_HR


def train_command(variant: str = "base") -> str:
    return TRAIN_SCRIPT if _check_variant(variant) == "base" else f"{TRAIN_SCRIPT} --variant hr"


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


def preprocess_separable(images8: np.ndarray, image_size: int) -> np.ndarray:
    """The same transform as `preprocess` (bilinear upscale with half-pixel centres and edge
    clamping, /16, (x - 0.5) / 0.5, gray → 3 channels), computed separably: each output
    pixel blends its 2×2 source neighbours with elementwise numpy ops (no BLAS, so the
    result is bitwise deterministic and independent of the batch it is computed in).
    O(S²) per image instead of `preprocess`'s O(S²·64) einsum: this is the preprocessing of
    digits-vit-hr (384×384). It agrees with `preprocess` to ≤ 1 float32 ulp (bitwise at 32); `preprocess`
    stays the definition of the 32×32 model, whose test split is checksum-pinned."""
    images8 = np.asarray(images8, dtype=np.float64)
    if images8.ndim != 3:
        raise ValueError(f"expected (N, H, W) images, got shape {images8.shape}")
    _, h, w = images8.shape

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    lo_y, hi_y, wy = taps(h, image_size)
    lo_x, hi_x, wx = taps(w, image_size)
    rows = images8[:, lo_y, :] * (1.0 - wy)[None, :, None] + images8[:, hi_y, :] * wy[None, :, None]
    rows = (rows / 16.0 - 0.5) / 0.5  # normalise the (N, S, 8) rows: the blend below is affine
    up = rows[:, :, lo_x]
    up *= 1.0 - wx
    right = rows[:, :, hi_x]
    right *= wx
    up += right
    out = np.empty((len(images8), 3, image_size, image_size), dtype=np.float32)
    out[:, 0] = up
    out[:, 1] = out[:, 0]
    out[:, 2] = out[:, 0]
    return out


def preprocess_variant(images8: np.ndarray, variant: str = "base") -> np.ndarray:
    """(N, 8, 8) digits → the float32 (N, 3, S, S) input of a variant (S = 32 or 384)."""
    size = get_config(variant)["image_size"]
    return preprocess(images8, size) if variant == "base" else preprocess_separable(images8, size)


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed (train_idx, test_idx) into sklearn's load_digits() arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    return train_idx, test_idx


def load_split_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """images_train, y_train, images_test, y_test of the fixed split, images still the raw
    (N, 8, 8) float64 digits pixels in [0, 16]: preprocess them per batch where the
    preprocessed set would be too big (digits-vit-hr: 450 test images at 3×384×384 float32
    are ~800 MB)."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    train_idx, test_idx = split_indices()
    images = ds.images
    labels = ds.target.astype(np.int64)
    return images[train_idx].copy(), labels[train_idx].copy(), images[test_idx].copy(), labels[test_idx].copy()


def load_split(image_size: int | None = None, variant: str = "base") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test of the fixed split (1347 / 450 images).

    Images: float32 NCHW (N, 3, image_size, image_size), values in [-1, 1]; labels int64.
    image_size defaults to the variant's (32 for "base"); variant="hr" gives the 384×384
    images of digits-vit-hr (~3.2 GB for the whole split — prefer load_split_raw and
    `preprocess_variant` per batch).
    """
    if image_size is None:
        image_size = get_config(variant)["image_size"]
    if variant == "hr" and image_size != CONFIG_HR["image_size"]:
        raise ValueError(f"digits-vit-hr is {CONFIG_HR['image_size']}×{CONFIG_HR['image_size']} only, got {image_size}")
    prep = preprocess if variant == "base" else preprocess_separable
    x_train, y_train, x_test, y_test = load_split_raw()
    return prep(x_train, image_size), y_train, prep(x_test, image_size), y_test


def build_config(variant: str = "base"):
    from transformers import ViTConfig

    return ViTConfig(**get_config(variant))


def build_model(weights: bool = True, variant: str = "base"):
    """A `transformers.ViTForImageClassification` in eval mode, with the committed trained
    weights of the variant ("base": digits-vit 32×32, "hr": digits-vit-hr 384×384) loaded
    (strict) unless weights=False (then randomly initialised, seed 0)."""
    import torch
    from transformers import ViTForImageClassification

    path = weights_path(variant)
    if weights and not path.is_file():
        name = "digits-vit" if variant == "base" else "digits-vit-hr"
        raise FileNotFoundError(
            f"{name} weights not found at {path}; train them with `{train_command(variant)}` "
            f"(models/train_digits_vit.py)")
    torch.manual_seed(0)
    model = ViTForImageClassification(build_config(variant))
    if weights:
        from safetensors.torch import load_file

        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    return model.eval()


def weights_metadata(variant: str = "base") -> dict[str, str]:
    """The metadata the training script stored in a variant's weights file ({} if none/missing)."""
    path = weights_path(variant)
    if not path.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def evaluate_top1(predict_fn: Callable[[np.ndarray], np.ndarray], batch_size: int = 64, variant: str = "base",
                  limit: int | None = None) -> float:
    """Top-1 accuracy (fraction) of `predict_fn(x_batch) -> logits` on the fixed test split
    (or on its first `limit` images).

    x_batch is float32 (B, 3, S, S), S = 32 ("base") or 384 ("hr"); the last batch may be
    smaller than batch_size. The hr images are preprocessed batch by batch (bounded memory).
    """
    if variant == "base":
        _, _, x_test, y_test = load_split(CONFIG["image_size"])
    else:
        _check_variant(variant)
        _, _, x_test, y_test = load_split_raw()  # raw 8×8: preprocessed per batch below
    if limit is not None:
        x_test, y_test = x_test[:limit], y_test[:limit]
    correct = 0
    for start in range(0, len(x_test), batch_size):
        xb = x_test[start:start + batch_size]
        if variant != "base":
            xb = preprocess_variant(xb, variant)
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


def calibration_feeds(variant: str = "base", images: int = 64, batch_size: int = 16,
                      input_name: str = "pixel_values") -> list[dict]:
    """Feeds for calibrating rewrites and quantization: the first `images` of the TRAINING split
    (never the held-out images), preprocessed for `variant`, in batches."""
    x_train8, _, _, _ = load_split_raw()
    x = preprocess_variant(x_train8[:images], variant)
    return [{input_name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)]
