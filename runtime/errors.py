"""Errors with one clear line: what went wrong and how to fix it."""


class EdgeAttnError(Exception):
    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix

    def __str__(self) -> str:
        return f"{self.problem} — {self.fix}" if self.fix else self.problem


class ArtifactError(EdgeAttnError):
    pass


class InputError(EdgeAttnError):
    pass


class BackendUnavailable(EdgeAttnError):
    pass


class BackendError(EdgeAttnError):
    """The backend (onnxruntime, openvino, tvm) failed while running a loaded model."""


def backend_failure(manifest: dict, path, e: Exception) -> EdgeAttnError:
    """What to raise for an exception from a backend's run: ours as it is; any other (a multi-line
    onnxruntime report, a tvm backtrace) as one line, with the original as __cause__."""
    if isinstance(e, EdgeAttnError):
        return e
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    if len(text) > 300:  # long reports (tvm backtraces): the first line that is not a frame header
        text = next((ln for ln in lines if not ln.startswith("Traceback")), lines[0])[:300]
    backend = manifest.get("backend") or manifest.get("target") or "?"
    model = (manifest.get("payload") or {}).get("model", "its model")
    err = BackendError(f"the {backend} backend failed to run {model}: {text or type(e).__name__}",
                       f"check the inputs, or recompile the artifact with edgeattn compile "
                       f"(`edgeattn check {path}` tests one that carries check.npz)")
    err.__cause__ = e  # also hides the implicit context, like `raise ... from e`
    return err
