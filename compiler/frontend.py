"""Frontend: a zoo name, an .onnx file or a local Hugging Face folder → onnx_ir.Model.

Export uses torch.onnx.export(dynamo=True); the batch dimension is exported symbolic
("batch") so one artifact serves any batch size.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from edgeattn.compiler.errors import CompileError, ModelInputError
from edgeattn.models import zoo

DEFAULT_OPSET = 20


@dataclass
class Source:
    """What the compiler starts from: the exported graph plus what is known about the model."""

    name: str
    model: ir.Model
    kind: str  # "zoo" | "onnx" | "hf-folder"
    zoo_model: Any = None  # zoo.ZooModel when the source is a torch module
    example_dims: dict[str, int] = field(default_factory=lambda: {"batch": 1})
    meta: dict = field(default_factory=dict)

    def clone(self) -> "Source":
        """A copy whose graph can be rewritten without touching this one."""
        model = ir.from_proto(ir.to_proto(self.model))
        return Source(self.name, model, self.kind, self.zoo_model, dict(self.example_dims), dict(self.meta))


def load_source(spec: str, opset: int = DEFAULT_OPSET) -> Source:
    path = Path(spec)
    if path.suffix == ".onnx" or (path.exists() and path.is_file()):
        return _from_onnx_file(path)
    # a directory named like a zoo model (an artifact written to ./deit-small) does not shadow the zoo
    if path.is_dir() and ((path / "config.json").exists() or not zoo.is_zoo_name(spec)):
        return _from_hf_folder(path, opset)
    folder, _, size = spec.rpartition("@")
    if folder and (Path(folder) / "config.json").exists():  # a HF folder at another sequence length: folder@512
        if not size.isdigit() or int(size) <= 0:
            raise ModelInputError(f"bad size '@{size}' in '{spec}'", "use FOLDER@N with a positive integer, e.g. my_bert@384")
        return _from_hf_folder(Path(folder), opset, int(size))
    if zoo.is_zoo_name(spec):
        zm = _build_zoo(spec)
        return Source(spec, export_torch(zm, opset), "zoo", zm, dict(zm.example_dims),
                      {"description": zm.description, "weights": zm.weights})
    zoo.parse_spec(spec)  # raises the "unknown zoo model" error with the list of names
    raise ModelInputError(f"cannot interpret model '{spec}'", "give a zoo name, an .onnx file or a HF model folder")


def _build_zoo(spec: str):
    try:
        return zoo.build(spec)
    except zoo.UnknownModelError as e:
        raise ModelInputError(str(e)) from None
    except (ValueError, FileNotFoundError) as e:
        raise ModelInputError(f"cannot build zoo model '{spec}': {e}") from None


def _from_onnx_file(path: Path) -> Source:
    if not path.exists():
        raise ModelInputError(f"model file not found: {path}", "check the path")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:  # onnx raises several unrelated types for corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelInputError(f"{path} is not a valid ONNX model ({first})",
                              "re-export it, or check that the file is complete") from None
    model = ir.from_proto(proto)
    return Source(path.stem, model, "onnx", example_dims=_default_dims(model), meta={"path": str(path)})


def _default_dims(model: ir.Model) -> dict[str, int]:
    dims = {}
    for v in model.graph.inputs:
        for d in v.shape or ():
            if not isinstance(d, int) and d is not None and getattr(d, "value", None):
                dims.setdefault(str(d.value), 1)
    return dims


def _from_hf_folder(path: Path, opset: int, seq: int | None = None) -> Source:
    if not (path / "config.json").exists():
        raise ModelInputError(f"{path} is a folder without config.json", "give a Hugging Face model folder or an .onnx file")
    from edgeattn.models.hf_folder import build_from_folder

    def build(impl=None):
        try:
            return build_from_folder(path, seq, attn_implementation=impl)
        except Exception as e:
            raise ModelInputError(f"cannot load the Hugging Face model in {path}: {e}") from None

    zm = build()
    meta = {"description": zm.description, "weights": zm.weights}
    try:
        model = export_torch(zm, opset)
    except CompileError as e:  # some SDPA paths do not export (BEiT, Swin); their eager attention does
        zm = build("eager")
        model = export_torch(zm, opset)
        meta["attn_implementation"] = f"eager (the default attention did not export: {e.problem})"
    return Source(path.name, model, "hf-folder", zm, dict(zm.example_dims), meta)


def export_torch(zm, opset: int = DEFAULT_OPSET) -> ir.Model:
    """torch module → ONNX (dynamo exporter) → onnx_ir.Model, batch dimension symbolic."""
    import torch

    feeds = zm.example_feeds(dims={"batch": 2})  # batch 2 so export does not specialise it to 1
    args = tuple(torch.from_numpy(feeds[s.name]) for s in zm.inputs)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # A tuple (one entry per positional arg) works for modules with *args as well as named ones.
    dynamic = tuple({0: batch} if s.shape and s.shape[0] == "batch" else None for s in zm.inputs)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(zm.module, args, dynamo=True, opset_version=opset,
                                        input_names=[s.name for s in zm.inputs], output_names=zm.output_names,
                                        dynamic_shapes=dynamic, verbose=False)
        except Exception as e:  # the exporter wraps everything in its own long multi-line errors
            cause = e.__cause__ or e
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            raise CompileError(f"torch.onnx.export failed for {zm.name}: {first}",
                               "export the model to ONNX yourself and pass the .onnx file") from e
    model = program.model  # already an onnx_ir.Model
    for v in model.graph.inputs:  # name the batch dim as in our specs
        if v.shape is not None and len(v.shape) and not isinstance(v.shape[0], int):
            v.shape = ir.Shape(["batch", *v.shape[1:]])
    return model


class _quiet:
    """Silence the exporter's progress prints (we show our own progress bar)."""

    def __enter__(self):
        import contextlib
        import logging

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        from edgeattn.passes.cleanup import quiet_folder

        logging.getLogger("torch").setLevel(logging.ERROR)
        quiet_folder()
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

