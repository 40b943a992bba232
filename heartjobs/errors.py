"""The one exception type users see: one line per problem, printed without a traceback, exit code 2."""


class HeartjobsError(Exception):
    """A problem with the user's input or environment, reported as one line naming the file and field.

    A message may hold several lines, one per problem. `printed` marks an error whose details were
    already shown (the command only needs its exit code).
    """

    exit_code = 2

    def __init__(self, message: str, *, printed: bool = False):
        super().__init__(message)
        self.printed = printed
