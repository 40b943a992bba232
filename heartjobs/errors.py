"""The one exception type users see: one line per problem, printed without a traceback, exit code 2;
and the one way to turn any exception into such a line."""

from __future__ import annotations


class HeartjobsError(Exception):
    """A problem with the user's input or environment, reported as one line naming the file and field
    (a message may hold several lines, one per problem)."""

    exit_code = 2


class JobInterrupted(HeartjobsError):
    """The job was stopped by a signal after writing a checkpoint; exit 128 + the signal number. (Raised
    from a poll inside a measurement too, which must let it through rather than take it for a failure.)"""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def one_line(exc: BaseException | str, limit: int = 500, *, with_type: bool = False) -> str:
    """An exception's text (or any text) on one line, whitespace collapsed, at most `limit` characters;
    with_type puts the exception's class name first ("OSError: ...")."""
    text = f"{type(exc).__name__}: {exc}" if with_type and isinstance(exc, BaseException) else str(exc)
    text = " ".join(text.split())
    if not text and isinstance(exc, BaseException):  # an exception with no message: its class at least
        text = type(exc).__name__
    return text[:limit]
