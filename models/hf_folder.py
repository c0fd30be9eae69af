"""A local Hugging Face model folder (config.json + weights) as a ZooModel; never touches the hub."""

from __future__ import annotations

from pathlib import Path

from edgeattn.models.zoo import InputSpec, ZooModel


def build_from_folder(path: Path, seq: int = 128, attn_implementation: str | None = None) -> ZooModel:
    """`attn_implementation="eager"` builds the attention as explicit MatMul/Softmax ops: some
    models' SDPA path does not export (BEiT, Swin: a view of SDPA's output strides fails)."""
    import torch
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if has_weights:
        model = AutoModel.from_pretrained(str(path), local_files_only=True,
                                          attn_implementation=attn_implementation).eval()
        weights = f"from {path}"
    else:  # a config-only folder: architecture with deterministic random weights
        torch.manual_seed(0)
        model = AutoModel.from_config(cfg, attn_implementation=attn_implementation).eval()
        weights = "random init (seed 0): the folder has no weights"
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False

    class Vision(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).last_hidden_state

    class Text(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    if getattr(cfg, "image_size", None) and getattr(cfg, "num_channels", None):
        n = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        inputs = [InputSpec("pixel_values", "float32", ("batch", cfg.num_channels, n, n))]
        wrapped = Vision(model).eval()
    else:
        vocab = getattr(cfg, "vocab_size", 1000)
        inputs = [InputSpec("input_ids", "int64", ("batch", seq), 0, vocab),
                  InputSpec("attention_mask", "int64", ("batch", seq), 1, 2)]
        wrapped = Text(model).eval()
    return ZooModel(path.name, wrapped, inputs, ["last_hidden_state"],
                    f"{type(model).__name__} from {path}", weights=weights)
