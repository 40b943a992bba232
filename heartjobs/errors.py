"""The one exception type users see: a one-line message, printed without a traceback, exit code 2."""


class HeartjobsError(Exception):
    """A problem with the user's input or environment, reported as one line naming the file and field."""

    exit_code = 2
