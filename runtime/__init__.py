"""edgeattn.runtime: load compiled artifacts and run/benchmark them.

Depends only on numpy and the artifact's backend (imported on first use); never on
torch, onnx or the compiler.
"""
from .errors import ArtifactError, BackendUnavailable, EdgeAttnError, InputError
from .session import Session, load
from .spec import TensorSpec

__all__ = ["load", "Session", "TensorSpec", "EdgeAttnError", "ArtifactError", "InputError",
           "BackendUnavailable"]
