"""Test hooks for dropbench running as a subprocess of a test (a `dropbench run`, and its pool workers).

Python imports `sitecustomize` at startup from the path; tests that launch dropbench put this folder on
PYTHONPATH (conftest.subprocess_env), and each hook below acts only when its variable is set, patching
dropbench from outside so the package carries no test code.

DROPBENCH_TEST_WRITE_PAUSE=SECONDS: every append to a results file is written in two halves with that pause
between, so a test can land a kill or a Ctrl-C in the middle of a line.

DROPBENCH_TEST_FAIL_SEEDS=0,2: training a cell of one of those seeds raises (in a pool's workers too), so a test
can see failures in worker processes reach the caller.

DROPBENCH_TEST_PROBE_AGREES=1: the executors take every thread-count probe to agree (opprobe.same_bits), in a pool's
workers too, so a test can see `--threads auto` share the cores whatever this CPU's kernels do.
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

_fail_seeds = {int(seed) for seed in os.environ.get("DROPBENCH_TEST_FAIL_SEEDS", "").split(",") if seed.strip()}

if _fail_seeds:
    from dropbench import executors

    def _failing(fit):
        def fit_or_fail(cells, data, *rest):  # a cell, or a stack's cells
            seeds = {cell.seed for cell in (cells if isinstance(cells, list) else [cells])}
            if seeds & _fail_seeds:
                raise RuntimeError(f"planted failure in seed {min(seeds & _fail_seeds)}")
            return fit(cells, data, *rest)  # on_epoch, and a checkpoint to start from

        return fit_or_fail

    executors.fit_stacked = _failing(executors.fit_stacked)
    executors.fit_cell = _failing(executors.fit_cell)

if os.environ.get("DROPBENCH_TEST_PROBE_AGREES") == "1":
    from dropbench import executors

    executors.same_bits = lambda calls, threads: True
