"""The one error type the CLI turns into a single line and exit code 2, and the stop a SIGTERM raises."""


class UserError(Exception):
    """Bad input from the user (suite file, flag, data): shown as one line, never a traceback."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (a CI job cancelled, `kill`), so that a run stops exactly as on
    Ctrl-C: the row being written is finished, workers are stopped, the JSON records the stop."""


def stop_signal(stop: BaseException) -> str:
    """The signal behind a stop: SIGTERM for `Terminated`, SIGINT (Ctrl-C) otherwise."""
    return "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
