"""Run cells as Ray tasks: on a Ray instance started for the run on this machine, or on a cluster.

One Ray task per cell, trained by the trainer its figures come from in every run (`executors.fit_alone`), so they
do not depend on where it ran; a worker that dies is retried by Ray, a cell that keeps failing is a failed row,
and the driver stays the only writer. docs/ray.md says how data reaches the workers and what is retried. Ray is optional
(`pip install 'dropbench[ray]'`), imported only when this executor is made.
"""

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .checkpoints import Start
from .config import Cell
from .data import TaskData, TaskKey, load_task_data
from .data.fetch import DATA_ENV, OFFLINE_ENV
from .devices import configure
from .errors import UserError
from .executors import Finished, fit_alone, fit_safely, usable_cores
from .provenance import package_version, utc_now
from .train import CellResult, OnEpoch

INSTALL_HINT = "--executor ray needs Ray: pip install 'dropbench[ray]'"

# What ray.init (or we, before it) sets in this process's environment; put back when the run ends.
_RAY_SETS_ENV = ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")


def import_ray() -> Any:
    """The ray module, or a UserError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


# ---------------------------------------------------------------- in the worker

# Tasks whose data this worker process got from the driver (its node lacks the files): loaded once,
# moved to the device once; keyed by (task, device).
_driver_copies: dict[tuple[TaskKey, str], TaskData] = {}


def _driver_data(key: TaskKey, driver_copy: list, device: str) -> TaskData | None:
    """None when this node has the task's files (fit_safely then loads them from the process cache);
    otherwise the driver's copy from the object store, on `device`. UserError when neither is there."""
    if (key, device) in _driver_copies:
        return _driver_copies[key, device]
    try:
        load_task_data(key)
        return None
    except UserError:
        if driver_copy[0] is None:  # a Ray instance of our own: same disk as the driver, so a real error
            raise
    import ray

    data: TaskData = ray.get(driver_copy[0])
    _driver_copies[key, device] = data if device == "cpu" else data.to(device)
    return _driver_copies[key, device]


def _fit_with(cell: Cell, data: TaskData, start: Start | None = None) -> CellResult:
    """fit_safely on data handed in: an exception is a failed cell, bad data (UserError) stops the run."""
    try:
        return fit_alone(cell, data, start=start)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - as fit_safely: one cell's failure is recorded, the run goes on
        return CellResult(status="failed", error=f"{type(error).__name__}: {error}")


def _fit_remote(
    cell: Cell,
    driver_copy: list,
    data_env: str | None,
    threads: int,
    device: str,
    start: Start | None = None,
) -> tuple[CellResult, str, dict[str, str]]:
    """The body of a cell's Ray task: (result, started_at, the worker's versions). `start`: the checkpoint the cell's
    training continues from, sent by the driver (the worker needs no disk of the driver's), or None; the result
    carries the end state back (`CellResult.state`)."""
    import torch

    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():  # Ray gave the task a GPU; this torch cannot use it
        raise UserError(
            f"a Ray worker on {os.uname().nodename} has no CUDA device torch can use (torch {torch.__version__})"
        )
    configure(device)
    if data_env is None:
        os.environ.pop(DATA_ENV, None)
    else:
        os.environ[DATA_ENV] = data_env
    os.environ[OFFLINE_ENV] = "1"  # the driver prepared the files; a worker reads, never downloads
    started_at = utc_now()
    data = _driver_data(cell.task.key, driver_copy, device)
    result = fit_safely(cell, device, start=start) if data is None else _fit_with(cell, data, start)
    return result, started_at, _versions()


def _versions() -> dict[str, str]:
    import torch

    # The release only: a CUDA build on a GPU node ("2.13.0+cu126") runs the same torch as the driver's CPU one.
    return {"dropbench": package_version("dropbench"), "torch": torch.__version__.split("+")[0]}


# ---------------------------------------------------------------- in the driver


def _failed(error: BaseException) -> CellResult:
    lines = str(error).strip().splitlines()
    return CellResult(status="failed", error=f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": "))


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Refuse a HOST:PORT nobody answers on at once: ray.init would retry it for many minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # "auto", or a form Ray itself will judge
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {error.strerror or error}") from None


class RayExecutor:
    """Fit each cell as a Ray task on a local Ray instance (address None) or an existing cluster.

    `address`: None starts a Ray instance on this machine for the run and stops it afterwards;
    "auto", "HOST:PORT" or "ray://HOST:10001" connect to a running cluster, which is left running
    (this driver only disconnects). If this process is already connected to Ray (ray.init was called
    by the caller), that connection is used and left as it is.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, cpus_per_cell: int = 1, gpus_per_cell: float = 0.0, max_retries: int = 2
    ) -> None:
        import_ray()  # fail now, before a run starts, when Ray is missing
        if cpus_per_cell < 1:
            raise UserError(f"--cpus-per-cell must be at least 1, not {cpus_per_cell}")
        if gpus_per_cell < 0:
            raise UserError(f"--gpus-per-cell must not be negative, not {gpus_per_cell}")
        if max_retries < 0:
            raise UserError(f"max_retries must not be negative, not {max_retries}")
        self.address = address
        self.threads = cpus_per_cell
        self.gpus_per_cell = gpus_per_cell
        self.max_retries = max_retries
        # A cell given a GPU trains on it (Ray makes the GPUs it assigns the only ones the worker sees);
        # a cell without one on the CPU, as Ray hides the GPUs from it.
        self.device = "cuda" if gpus_per_cell > 0 else "cpu"
        # Cells at once: a guess until connected (this machine's cores), then from the cluster's nodes.
        self.jobs = max(1, usable_cores() // cpus_per_cell)

    # -- connecting

    def _connect(self, ray: Any) -> str:
        """'started' (a Ray instance of our own), 'connected' (a cluster) or 'reused' (the caller's)."""
        if ray.is_initialized():
            return "reused"
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if self.address is None:
            cores = usable_cores()
            if self.threads > cores:
                raise UserError(f"--cpus-per-cell {self.threads} is more than this machine's {cores} usable cores")
            # Ray sends usage statistics unless told not to; a benchmark run should not, unless the user asked.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=cores, include_dashboard=False, **quiet)
            return "started"
        _check_reachable(self.address)
        try:
            if self.address.startswith("ray://"):
                ray.init(address=self.address)  # Ray Client: other init arguments would go to the server
            else:
                ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            cause: BaseException = error
            while cause.__cause__ is not None:  # Ray wraps the telling error (refused, auth token) in a vague one
                cause = cause.__cause__
            text = str(cause).strip()
            lines = text.splitlines() or [type(cause).__name__]
            # A message that embeds a traceback ends with the error that tells (a refused connection, a token).
            telling = lines[-1] if "Traceback (most recent call last)" in text else lines[0]
            raise UserError(f"cannot connect to the Ray cluster at {self.address}: {telling.strip()}") from None
        return "connected"

    def _capacity(self, ray: Any) -> int:
        """How many cells the live nodes can run at once."""
        total = 0
        for node in ray.nodes():
            if not node.get("Alive", False):
                continue
            resources = node.get("Resources", {})
            fits = int(resources.get("CPU", 0) // self.threads)
            if self.gpus_per_cell > 0:
                fits = min(fits, int(resources.get("GPU", 0) / self.gpus_per_cell + 1e-9))
            total += fits
        return total

    # -- running

    def run(
        self, cells: Sequence[Cell], on_epoch: OnEpoch | None = None, starts: Mapping[str, Start] | None = None
    ) -> Iterator[Finished]:
        """Fit each cell as a Ray task, yielding cells as they finish. Epochs are not reported (`on_epoch` is
        never called): a progress display counts each cell's epochs when it finishes. `starts` (cell_id ->
        Start): the cells whose training continues from a checkpoint, which travels with the task."""
        starts = starts or {}
        if not cells:
            return
        ray = import_ray()
        saved_env = {key: os.environ.get(key) for key in _RAY_SETS_ENV}
        mode, pending = "", dict[Any, Cell]()
        try:
            mode = self._connect(ray)
            capacity = self._capacity(ray)
            if capacity == 0 and mode == "started":
                gpus = f" and {self.gpus_per_cell:g} GPU" if self.gpus_per_cell else ""
                raise UserError(f"this machine cannot run a cell of {self.threads} CPU{gpus}: too few CPUs or no GPU")
            # On a cluster a node may join later (autoscaling): keep a guess of 1 rather than refuse.
            self.jobs = max(1, capacity)
            fit = ray.remote(_fit_remote).options(
                num_cpus=self.threads,
                num_gpus=self.gpus_per_cell,
                max_retries=self.max_retries,
                retry_exceptions=False,
                name="dropbench-cell",
            )
            data_env = os.environ.get(DATA_ENV)
            if data_env:
                data_env = str(Path(data_env).expanduser().resolve())  # workers do not share our cwd
            copies: dict[TaskKey, list] = {}
            for cell in cells:
                task = cell.task.key
                if task not in copies:  # once per task of the run; only a cluster needs the driver's copy
                    copies[task] = [ray.put(load_task_data(task)) if mode != "started" else None]
                start = starts.get(cell.cell_id)
                pending[fit.remote(cell, copies[task], data_env, self.threads, self.device, start)] = cell
            ours = _versions()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # a timeout keeps Ctrl-C prompt
                for ref in done:
                    cell = pending.pop(ref)
                    result, started_at = self._outcome(ray, ref, ours)
                    yield cell, result, started_at
        finally:
            # Normal end: nothing pending. An error, a UserError from a cell, Ctrl-C or a consumer that
            # stopped early: stop the running cells now and drop the queued ones (they rerun on resume).
            for ref in pending:
                with contextlib.suppress(Exception):  # already finished, or its node is gone: nothing to stop
                    ray.cancel(ref, force=True)
            if mode in ("started", "connected"):
                ray.shutdown()  # stops a Ray instance we started; from a cluster it only disconnects
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _outcome(self, ray: Any, ref: Any, ours: dict[str, str]) -> tuple[CellResult, str]:
        """A finished task's (result, started_at); a system failure after retries is a failed cell."""
        try:
            result, started_at, theirs = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # an exception escaped the task: not retried
            cause = getattr(error, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            return _failed(cause if isinstance(cause, BaseException) else error), utc_now()
        except ray.exceptions.RayError as error:  # worker crashed, node died, object lost, cancelled
            return _failed(error), utc_now()
        if any(theirs[key] != ours[key] and "unknown" not in (theirs[key], ours[key]) for key in ours):
            raise UserError(
                f"a Ray worker runs dropbench {theirs['dropbench']} with torch {theirs['torch']}, the driver "
                f"dropbench {ours['dropbench']} with torch {ours['torch']}: install the same versions on every node"
            )
        return result, started_at
