"""Test hooks for dropbench running as a subprocess of a test (a `dropbench run`, and its pool workers).

Python imports `sitecustomize` at startup from the path; tests that launch dropbench put this folder on
PYTHONPATH (conftest.subprocess_env), and each hook below acts only when its variable is set, patching
dropbench from outside so the package carries no test code.

DROPBENCH_TEST_WRITE_PAUSE=SECONDS: every append to a results file is written in two halves with that pause
between, so a test can land a kill or a Ctrl-C in the middle of a line.
"""

import os

_pause = float(os.environ.get("DROPBENCH_TEST_WRITE_PAUSE", "0") or 0)

if _pause > 0:
    import fcntl
    import time

    from dropbench import files

    _write_all = files.write_all

    def _write_in_halves(fd: int, data: bytes) -> None:
        if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:  # an atomic rewrite, not an append: as it was
            _write_all(fd, data)
            return
        _write_all(fd, data[: len(data) // 2])
        time.sleep(_pause)
        _write_all(fd, data[len(data) // 2 :])

    files.write_all = _write_in_halves
