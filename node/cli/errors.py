"""The one exception the command line turns into a clean message and exit code."""


class CliError(Exception):
    """A user-facing failure: printed as ``error: <message>`` without a traceback."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
