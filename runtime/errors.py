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
