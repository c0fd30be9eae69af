"""Compiler errors: one clear line naming the problem and the fix."""

from edgeattn.runtime.errors import EdgeAttnError


class CompileError(EdgeAttnError):
    pass


class ModelInputError(EdgeAttnError):
    pass
