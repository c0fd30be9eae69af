"""Vision transformers of the zoo (transformers ViT / DeiT architectures)."""

from __future__ import annotations

from edgeattn.models.zoo import InputSpec, ZooModel


class _LogitsOnly:
    """Wrap a HF image classifier so export sees a plain tensor → tensor function."""

    @staticmethod
    def wrap(model):
        import torch

        class Logits(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values):
                return self.inner(pixel_values=pixel_values).logits

        return Logits(model).eval()


def _pixel_input(size: int) -> list[InputSpec]:
    return [InputSpec("pixel_values", "float32", ("batch", 3, size, size))]


def _vit(size: int | None, *, hidden: int, layers: int, heads: int, mlp: int, deit: bool, label: str) -> ZooModel:
    import torch
    from transformers import DeiTConfig, DeiTForImageClassification, ViTConfig, ViTForImageClassification

    size = size or 224
    if size % 16:
        raise ValueError(f"resolution {size} is not a multiple of the patch size 16 — use e.g. {label}@384")
    cfg_cls, model_cls = (DeiTConfig, DeiTForImageClassification) if deit else (ViTConfig, ViTForImageClassification)
    cfg = cfg_cls(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp,
                  image_size=size, patch_size=16, num_labels=1000)
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    tokens = (size // 16) ** 2 + (2 if deit else 1)
    return ZooModel(label, _LogitsOnly.wrap(model), _pixel_input(size), ["logits"],
                    f"{model_cls.__name__} {layers}L/{hidden}d/{heads}h, {size}×{size}, {tokens} tokens")


def vit_tiny(size: int | None) -> ZooModel:
    return _vit(size, hidden=192, layers=12, heads=3, mlp=768, deit=False, label="vit-tiny")


def deit_small(size: int | None) -> ZooModel:
    return _vit(size, hidden=384, layers=12, heads=6, mlp=1536, deit=True, label="deit-small")


def digits_vit(size: int | None) -> ZooModel:
    from edgeattn.models import digits

    if size not in (None, digits.CONFIG["image_size"]):
        raise ValueError(f"digits-vit is trained at {digits.CONFIG['image_size']}×{digits.CONFIG['image_size']} only")
    model = digits.build_model()
    n = digits.CONFIG["image_size"]
    zm = ZooModel("digits-vit", _LogitsOnly.wrap(model), _pixel_input(n), ["logits"],
                  f"ViT trained on scikit-learn digits ({n}×{n}, patch {digits.CONFIG['patch_size']})",
                  evaluate_top1=digits.evaluate_top1, weights="trained, committed (models/weights)",
                  calibration_feeds=digits.calibration_feeds)
    return zm


def digits_vit_hr(size: int | None) -> ZooModel:
    import functools

    from edgeattn.models import digits

    n = digits.CONFIG_HR["image_size"]
    if size not in (None, n):
        raise ValueError(f"digits-vit-hr is trained at {n}×{n} only")
    model = digits.build_model(variant="hr")
    p = digits.CONFIG_HR["patch_size"]
    tokens = (n // p) ** 2
    top1 = digits.weights_metadata("hr").get("test_top1")
    acc_note = f", held-out top-1 {top1}" if top1 else ""
    zm = ZooModel("digits-vit-hr", _LogitsOnly.wrap(model), _pixel_input(n), ["logits"],
                  f"ViT trained on scikit-learn digits upscaled to {n}×{n} (patch {p}, {tokens} tokens + CLS; "
                  f"fine-tuned from digits-vit{acc_note})",
                  evaluate_top1=functools.partial(digits.evaluate_top1, variant="hr"),
                  weights="trained, committed (models/weights)",
                  calibration_feeds=functools.partial(digits.calibration_feeds, variant="hr"))
    return zm
