"""The one exception type users see: one line per problem, printed without a traceback, exit code 2."""


class HeartjobsError(Exception):
    """A problem with the user's input or environment, reported as one line naming the file and field
    (a message may hold several lines, one per problem)."""

    exit_code = 2
