"""`--rewrite NAME:key=val,...` parsed into a RewriteStep whose settings are checked against the
rewrite's own (names, kinds, and the values its constructor accepts) before any export, and
checked against the model's attention sites once it is exported (compiler/plan.py applies it).
A value list such as `layers=0-5,8` continues until the next `key=`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import onnx_ir as ir

from edgeattn import passes
from edgeattn.compiler.errors import CompileError


@dataclass
class RewriteStep:
    name: str
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "settings": self.settings}


_KIND_TEXT = {"int": "an integer", "ints": "an integer (or list of integers, one per layer)",
              "number": "a number", "numbers": "a number (or list of numbers, one per layer)", "bool": "0 or 1"}
_EXAMPLE = {"int": 4, "ints": 8, "number": 0.5, "numbers": 0.5, "bool": 0, "layers": "0-3", "layers+embed": "-1,0"}
_BOOLS = {"0": 0, "1": 1, "false": 0, "true": 1}


def _scalar(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _is_int(text: str) -> bool:
    return isinstance(_scalar(text), int)


def _is_number(text: str) -> bool:
    return isinstance(_scalar(text), (int, float))


def _layers(rewrite: str, text: str, embed: bool) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if embed and part in ("-1", "embed"):  # pool: on the embeddings, before the first block
            out.append(-1)
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            extra = " (-1 or embed: the embeddings)" if embed else " from 0 (only pool takes -1: the embeddings)"
            raise CompileError(f"{rewrite}: bad layers '{text}'", f"give attention site indices{extra}, e.g. layers=0-5,8")
        if hi and int(hi) < int(lo):
            raise CompileError(f"{rewrite}: layers={text} has an empty range '{part}'",
                               f"write the lower index first, e.g. layers={hi}-{lo}")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _example(rewrite: str, key: str, kind: str | None) -> str:
    """`rewrite:key=value` with the pass's default value where it is a plain number."""
    if rewrite == AUTO:
        from edgeattn.compiler.planner import search as fn  # noqa: PLC0415 - the planner imports this module
    else:
        fn = passes.pass_class(rewrite).__init__
    param = inspect.signature(fn).parameters.get(key)
    default = None if param is None else param.default
    if not isinstance(default, (int, float)) or isinstance(default, bool) or kind in ("bool", None):
        default = _EXAMPLE.get(kind, "...")
    return f"{rewrite}:{key}={default}"


def _setting(rewrite: str, key: str, kind: str | None, text: str):
    """`text` as the setting's value; a value that is not of the setting's kind is one clear line."""
    if kind in ("layers", "layers+embed"):
        return _layers(rewrite, text, kind == "layers+embed")
    if kind == "bool":
        if text.lower() not in _BOOLS:
            raise CompileError(f"{rewrite}: setting {key}='{text}' is not {_KIND_TEXT[kind]}",
                               f"e.g. {_example(rewrite, key, kind)}")
        return _BOOLS[text.lower()]
    check = {"int": _is_int, "ints": _is_int, "number": _is_number, "numbers": _is_number}.get(kind)
    items = text.split(",") if kind in ("ints", "numbers") else [text]
    if check is not None and not all(check(x) for x in items):
        raise CompileError(f"{rewrite}: setting {key}='{text}' is not {_KIND_TEXT[kind]}", f"e.g. {_example(rewrite, key, kind)}")
    return _scalar(text)


AUTO = "auto"  # the measured per-layer search (compiler/planner.py)


def _known_settings(name: str) -> dict[str, str | None]:
    if name == AUTO:
        from edgeattn.compiler.planner import SETTINGS  # noqa: PLC0415 - the planner imports this module

        return SETTINGS
    return passes.settings(name)


def parse_rewrite(spec: str) -> RewriteStep:
    """`NAME:key=val,...` → a step whose settings have been checked against the rewrite's own
    (names, kinds and the values its constructor accepts): a bad one fails here, before any export."""
    name, _, rest = spec.partition(":")
    if name not in passes.APPROXIMATE and name != AUTO:
        raise CompileError(f"unknown rewrite '{name}'", f"known rewrites: {', '.join(sorted(passes.APPROXIMATE))}, or {AUTO}")
    pairs: list[list[str]] = []
    for token in filter(None, rest.split(",")):
        if "=" in token:
            pairs.append(token.split("=", 1))
        elif pairs:
            pairs[-1][1] += "," + token  # a list value such as layers=0-5,8
        else:
            raise CompileError(f"bad rewrite setting '{token}' in '{spec}'", "use NAME:key=value,key=value")
    known = _known_settings(name)
    settings = {}
    for key, text in pairs:
        if key not in known:
            first = next(iter(known), None)
            example = f" (e.g. {_example(name, first, known[first])})" if first else ""
            raise CompileError(f"{name} has no setting '{key}'",
                               f"its settings: {', '.join(known)}{example}" if known else f"{name} takes no settings")
        if key in settings:
            raise CompileError(f"{name}: setting {key} given twice in '{spec}'", f"give {key}= once")
        settings[key] = _setting(name, key, known[key], text)
    if name == AUTO:
        if "families" in settings:
            from edgeattn.compiler.planner import _families  # noqa: PLC0415

            _families(settings["families"])
    else:
        try:  # the constructor's own range checks (sink ≥ 0, 0 < keep ≤ 1, ...), without a model
            passes.pass_class(name)(**settings)
        except (ValueError, TypeError) as e:
            problem = str(e) if str(e).startswith(name) else f"{name}: {e}"
            raise CompileError(problem, f"change the setting in --rewrite {spec}") from None
    return RewriteStep(name, settings)


def check_sites(model: ir.Model, steps: list[RewriteStep]) -> None:
    """Each step's layers name attention sites the model has (known only after the export):
    a plan that would silently rewrite nothing there fails here, before it is built or measured."""
    from edgeattn.passes._tokens import attention_sites  # noqa: PLC0415

    n = attention_sites(model)
    for step in steps:
        if step.name == AUTO:
            continue
        for key, kind in passes.settings(step.name).items():
            if kind not in ("layers", "layers+embed") or step.settings.get(key) is None:
                continue
            lo = -1 if kind == "layers+embed" else 0
            bad = [v for v in step.settings[key] if not lo <= int(v) < n]
            if not bad:
                continue
            given = ",".join(str(v) for v in bad)
            if n == 0:
                raise CompileError(f"{step.name}: {key}={given} names attention sites, but the model has none "
                                   "(no ONNX Attention node after the pipeline)",
                                   "drop the rewrite, or compile with the default pipeline")
            embed = "-1 (the embeddings) and " if lo < 0 else ""
            which = f"layers {given} are" if len(bad) > 1 else f"layer {given} is"
            raise CompileError(f"{step.name}: {which} outside the model's {n} attention sites (0-{n - 1})",
                               f"give site indices {embed}0-{n - 1}, e.g. {key}=0-{n - 1}")
