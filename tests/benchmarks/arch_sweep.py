"""Compile small random-weight Hugging Face architectures (config-only folders, no download) for
each target and precision, and print which attention sites were canonicalized and how far each
artifact is from torch — what a user handing us "a model" meets before any rewrite.

    python tests/benchmarks/arch_sweep.py --targets ort,openvino,tvm --precisions fp32,int8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from edgeattn import targets
from edgeattn.compiler.compile import compile_model
from edgeattn.runtime.errors import EdgeAttnError

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
VISION = dict(image_size=64, patch_size=8)
DECODER = dict(vocab_size=500, num_key_value_heads=2)
# model_type → config overrides: encoders, vision transformers (incl. relative-bias and windowed
# attention), decoders with GQA and RoPE.
ARCHS = {
    "bert": dict(SMALL, vocab_size=500),
    "distilbert": dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=500),
    "roberta": dict(SMALL, vocab_size=500),
    "electra": dict(SMALL, vocab_size=500, embedding_size=64),
    "albert": dict(SMALL, vocab_size=500, embedding_size=32),
    "deberta-v2": dict(SMALL, vocab_size=500),
    "vit": dict(SMALL, **VISION),
    "beit": dict(SMALL, **VISION, use_relative_position_bias=True),
    "dinov2": dict(SMALL, **VISION),
    "swin": dict(embed_dim=32, depths=[2, 2], num_heads=[2, 4], image_size=64, patch_size=4, window_size=4),
    "clip_vision_model": dict(SMALL, **VISION),
    "siglip_vision_model": dict(SMALL, **VISION),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=256),
    "llama": dict(SMALL, **DECODER),
    "qwen2": dict(SMALL, **DECODER),
    "mistral": dict(SMALL, **DECODER, sliding_window=None),
}


def _folder(root: Path, arch: str) -> Path:
    from transformers import AutoConfig

    path = root / arch
    AutoConfig.for_model(arch, **ARCHS[arch]).save_pretrained(path)
    return path


def _row(arch: str, target: str, precision: str, root: Path) -> dict:
    row = {"arch": arch, "target": target, "precision": precision}
    try:
        m = compile_model(str(root / arch), target, root / f"out-{arch}-{target}-{precision}",
                          target_options={"precision": precision})
    except EdgeAttnError as e:
        return {**row, "error": str(e)}
    except Exception as e:  # a crash is a finding too: record it and go on with the sweep
        return {**row, "error": f"CRASH {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"}
    att, acc = m["attention"], m["accuracy"]
    row = {**row, "sites": att["sites"], "canonicalized": att["canonicalized"],
           "max_abs_error": acc.get("max_abs_error"), "cosine": acc.get("cosine"),
           "precision_built": m["precision"], "eager_fallback": "attn_implementation" in m}
    if "mobile" in m:  # its TVM aarch64 bundle: run under qemu against ORT on the same graph, or why not
        tvm = m["mobile"]["tvm"]
        verified = tvm.get("verified") if tvm["built"] else tvm["reason"]
        row["tvm_aarch64"] = verified["max_abs_error"] if isinstance(verified, dict) else verified
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="ort,openvino")
    ap.add_argument("--precisions", default="fp32")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    archs = a.archs.split(",")
    unknown = [x for x in archs if x not in ARCHS]
    if unknown:
        raise SystemExit(f"unknown architecture {', '.join(unknown)} — choose from {', '.join(ARCHS)}")
    # only the precisions each target builds (tvm: fp32)
    jobs = [(x, t, p) for x in archs for t in a.targets.split(",") for p in a.precisions.split(",")
            if p in getattr(targets.get(t), "PRECISIONS", (p,))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for x in archs:
            _folder(root, x)
        rows = [_row(*job, root) for job in track(jobs, description="compile")]
    table = Table(title="architectures: attention canonicalized, artifact vs torch")
    for col in ("arch", "target", "precision", "sites", "canonical", "max|err|", "cosine", "note"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(r["arch"], r["target"], r["precision"], "", "", "", "", r["error"][:90])
            continue
        note = "eager attention (SDPA path does not export)" if r["eager_fallback"] else ""
        if r["precision_built"] != r["precision"]:
            note = f"shipped {r['precision_built']}; " + note
        if "tvm_aarch64" in r:
            aarch64 = r["tvm_aarch64"]
            note = (f"TVM aarch64 vs ORT {aarch64:.1e}; " if isinstance(aarch64, float) else f"TVM aarch64: {aarch64}; ") + note
        table.add_row(r["arch"], r["target"], r["precision"], str(r["sites"]), str(r["canonicalized"]),
                      f"{r['max_abs_error']:.1e}", f"{r['cosine']:.6f}", note)
    Console().print(table)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
