"""The one exception type users see: one line per problem, printed without a traceback, exit code 2;
and the one way to turn any exception into such a line, with no control character left raw in it."""

from __future__ import annotations

import unicodedata


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


def printable(text: str, keep: str = "") -> str:
    """`text` with every control or invisible format character (NUL, ESC, DEL, the C1 codes, bidi overrides)
    written as repr() writes it ("\\x00", "\\x1b", "\\u202e"). Error lines carry file names and values
    from files nobody vetted; raw, those bytes would reach the terminal and move the cursor, recolour or
    clear the screen, or hide what the line says. `keep`: control characters left as they are (a console
    printing several lines keeps "\\n")."""
    if text.isprintable():
        return text
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf") and ch not in keep else ch for ch in text)


def one_line(exc: BaseException | str, limit: int = 500, *, with_type: bool = False) -> str:
    """An exception's text (or any text) on one line, whitespace collapsed, control characters escaped
    (printable), at most `limit` characters; with_type puts the exception's class name first ("OSError: ...")."""
    text = f"{type(exc).__name__}: {exc}" if with_type and isinstance(exc, BaseException) else str(exc)
    text = printable(" ".join(text.split()))
    if not text and isinstance(exc, BaseException):  # an exception with no message: its class at least
        text = type(exc).__name__
    return text[:limit]
