"""The one error type the CLI turns into a single line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (suite file, flag, data): shown as one line, never a traceback."""
