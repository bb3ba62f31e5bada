"""Errors a user can cause and fix: each names the cause and the fix, and maps to an exit code."""

USAGE = 2  # bad recipe, unknown name, missing file
FAILED = 1  # the work ran but something in it failed


class HarnessError(Exception):
    """A user-facing error: rendered as one message, never as a traceback."""

    def __init__(self, cause: str, fix: str = "", exit_code: int = USAGE):
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.cause} ({self.fix})" if self.fix else self.cause


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of an exception, for a row's reason."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else text
    return line if len(line) <= limit else line[: limit - 3] + "..."
