"""`edgeattn inspect`: the attention sites of a model or artifact, with shapes and FLOPs."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from edgeattn.compiler.errors import ModelInputError


def _dims(v: ir.Value | None, example_dims: dict[str, int]) -> list:
    if v is None or v.shape is None:
        return []
    return [d if isinstance(d, int) else str(getattr(d, "value", d)) for d in v.shape]


def _size(d, example_dims: dict[str, int]) -> int:
    return d if isinstance(d, int) else example_dims.get(d, 1)


def _as_4d(dims: list, heads: int) -> list:
    b, s, width = dims
    return [b, heads, s, width // heads if isinstance(width, int) else f"{width}/{heads}"]


def attention_sites(model: ir.Model, example_dims: dict[str, int] | None = None) -> list[dict]:
    """One row per ONNX Attention node; FLOPs count q·kᵀ and p·v multiply-adds ×2 at the example dims."""
    example_dims = example_dims or {"batch": 1}
    rows = []
    for node in model.graph.all_nodes():
        if node.op_type != "Attention":
            continue
        q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
        mask = node.inputs[3] if len(node.inputs) > 3 else None
        qs, ks, vs = (_dims(x, example_dims) for x in (q, k, v))
        attrs = {a.name: a.value for a in node.attributes.values()}
        if len(qs) == 3 and attrs.get("q_num_heads"):  # 3-D form: show it as (B, H, S, d)
            qs = _as_4d(qs, attrs["q_num_heads"])
            ks = _as_4d(ks, attrs.get("kv_num_heads") or attrs["q_num_heads"])
            vs = _as_4d(vs, attrs.get("kv_num_heads") or attrs["q_num_heads"])
        flops = None
        if len(qs) == 4 and len(ks) == 4 and len(vs) == 4:
            b, h, s, d = (_size(x, example_dims) for x in qs)
            skv, dv = _size(ks[2], example_dims), _size(vs[3], example_dims)
            flops = 2 * b * h * s * skv * (d + dv)
        rows.append({
            "name": node.name, "q": qs, "k": ks, "v": vs,
            "mask": "none" if mask is None else f"{mask.dtype.name.lower()} {_dims(mask, example_dims)}",
            "causal": bool(attrs.get("is_causal", 0)), "scale": attrs.get("scale"), "flops": flops,
        })
    return rows


def _load_payload(file: Path) -> ir.Model:
    """An artifact's ONNX payload; a corrupt one (its SHA-256 can still match) is one line, as in `run`."""
    from edgeattn.runtime.errors import ArtifactError

    try:
        model = ir.load(file)
    except Exception as e:  # protobuf DecodeError and the like
        msg = str(e).strip().splitlines()
        raise ArtifactError(f"{file} is not a valid ONNX model ({msg[0] if msg else type(e).__name__})",
                            "recompile with edgeattn compile") from None
    if not model.graph.outputs:  # an empty file parses as an empty model; onnxruntime says "No graph"
        raise ArtifactError(f"{file} holds no ONNX graph", "recompile with edgeattn compile")
    return model


def inspect_target(spec: str) -> dict:
    """A model spec is exported and canonicalized (nothing written); an artifact dir is read as built."""
    path = Path(spec)
    if path.is_dir() and (path / "manifest.json").exists():
        from edgeattn.runtime.artifact import verify_artifact

        manifest = verify_artifact(path)  # also checks the manifest's field types
        payload = (manifest.get("payload") or {}).get("model")
        if not payload or not payload.endswith(".onnx"):
            raise ModelInputError(f"artifact {path} has no ONNX payload to inspect",
                                  "inspect the source model (zoo name, .onnx or HF folder) instead")
        model = _load_payload(path / payload)
        dims = manifest.get("example_dims") or {"batch": 1}
        return {"model": manifest.get("model") or path.name, "sites": attention_sites(model, dims),
                "unmatched": (manifest.get("attention") or {}).get("unmatched", [])}
    from edgeattn.compiler.frontend import load_source
    from edgeattn.compiler.pipeline import attention_summary, run_pipeline

    src = load_source(spec)
    records = run_pipeline(src.model, "default")
    return {"model": src.name, "sites": attention_sites(src.model, src.example_dims),
            "unmatched": attention_summary(records)["unmatched"]}
