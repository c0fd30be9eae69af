"""A local Hugging Face model folder (config.json + weights) as a ZooModel; never touches the hub.

The folder's own class (`config.architectures[0]`, e.g. `ViTForImageClassification`) is built when
transformers has it and its output has logits (`logits`; `start_logits` and `end_logits` for
question answering), so a fine-tuned head ships with the artifact (and a classifier's readout lets
`readout-prune` cut the last block); otherwise the base model's `last_hidden_state`.
"""

from __future__ import annotations

from pathlib import Path

from edgeattn.models.zoo import InputSpec, ZooModel


def _classes(cfg):
    """The folder's task class first (if transformers has it), then the base AutoModel."""
    import transformers

    arch = (getattr(cfg, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    return ([cls] if cls is not None and not arch.endswith("Model") else []) + [transformers.AutoModel]


def _build(cls, cfg, path: Path, has_weights: bool, attn_implementation: str | None):
    import torch

    if has_weights:
        return cls.from_pretrained(str(path), local_files_only=True, attn_implementation=attn_implementation).eval()
    torch.manual_seed(0)  # a config-only folder: the architecture with deterministic random weights
    if cls.__name__ == "AutoModel":
        return cls.from_config(cfg, attn_implementation=attn_implementation).eval()
    return cls._from_config(cfg, attn_implementation=attn_implementation).eval()


def build_from_folder(path: Path, seq: int | None = None, attn_implementation: str | None = None) -> ZooModel:
    """`seq`: a text model's token count (default 128; at most its position table); vision
    folders take their config's image size. `attn_implementation="eager"` builds the attention as
    explicit MatMul/Softmax ops: some models' SDPA path does not export (BEiT, Swin: a view of
    SDPA's output strides fails)."""
    import torch
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    weights = f"from {path}" if has_weights else "random init (seed 0): the folder has no weights"
    vision = bool(getattr(cfg, "image_size", None) and getattr(cfg, "num_channels", None))
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if vision and seq is not None:
        raise ValueError(f"@{seq} sets a text model's token count; this is a vision model "
                         f"(image_size {cfg.image_size}): set image_size in its config.json instead")
    if seq is not None and limit and seq > limit:
        raise ValueError(f"@{seq} is longer than the model's {limit} positions: use @{limit} or less")
    seq = seq or min(128, limit or 128)
    if vision:
        n = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        inputs = [InputSpec("pixel_values", "float32", ("batch", cfg.num_channels, n, n))]
    else:
        vocab = getattr(cfg, "vocab_size", 1000)
        inputs = [InputSpec("input_ids", "int64", ("batch", seq), 0, vocab),
                  InputSpec("attention_mask", "int64", ("batch", seq), 1, 2)]

    class Vision(torch.nn.Module):
        def __init__(self, inner, fields):
            super().__init__()
            self.inner, self.fields = inner, fields

        def pick(self, out):
            picked = tuple(getattr(out, f) for f in self.fields)
            return picked[0] if len(picked) == 1 else picked

        def forward(self, pixel_values):
            return self.pick(self.inner(pixel_values=pixel_values))

    class Text(Vision):
        def forward(self, input_ids, attention_mask):
            return self.pick(self.inner(input_ids=input_ids, attention_mask=attention_mask))

    probe = ZooModel(path.name, None, inputs, [], "", weights=weights).example_feeds(dims={"batch": 1})
    for cls in _classes(cfg):
        model = _build(cls, cfg, path, has_weights, attn_implementation)
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in probe.items()})
        # a head's logits (question answering has start_logits and end_logits), else the hidden states
        fields = (["last_hidden_state"] if cls.__name__ == "AutoModel"
                  else [k for k, v in out.items() if k.endswith("logits") and torch.is_tensor(v)])
        if fields:
            break
    return ZooModel(path.name, (Vision if vision else Text)(model, fields).eval(), inputs, fields,
                    f"{type(model).__name__} from {path}", weights=weights)
