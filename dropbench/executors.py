"""Where cells run: one after another in this process, or in a pool of worker processes.

Results stream back to the caller as cells finish; the caller (the runner) is the only writer.
A cell's numbers do not depend on where or beside what it ran: every random stream is derived from the
cell itself, a cell that `stacks` always trains in the stacked trainer (alone: a stack of one, whose
figures any stack reproduces bit for bit), and under `--threads auto` (the default) a unit of work takes more than
one torch thread only where a probe of its training shows the same bits at that count (`FollowCores`,
dropbench.threads): the cores are shared among the units in flight, and a worker whose neighbours have finished
takes their cores at its next epoch.
"""

import atexit
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue
from typing import TYPE_CHECKING

import torch

from .checkpoints import Start
from .config import Cell
from .data import TaskData, load_task_data_on
from .devices import configure
from .errors import UserError
from .models import build_model
from .opprobe import Call, OpRecorder, same_bits, torch_threads
from .provenance import utc_now
from .stacked import WorkUnit, fit_stacked, stacks, work_units
from .threads import AUTO, Threads, auto_threads, probe_covers, set_figures_threads, usable_cores
from .train import EVAL_BATCH, CellResult, EpochProgress, OnEpoch, fit_cell, measure, measure_mc

if TYPE_CHECKING:
    from multiprocessing.popen_spawn_posix import Popen

Finished = tuple[Cell, CellResult, str]  # (cell, result, started_at)
WORKER_DEATHS_ALLOWED = 2  # a cell in flight when two worker processes died is written as failed
# How often the driver takes the epochs its workers reported while it waits for a cell: a progress bar's pace.
PROGRESS_POLL_S = 0.2

# Why workers are spawned, and never see the caller's __main__:
# - fork copies a process whose torch (OpenMP) thread pool is running, which can deadlock the child, and Python
#   3.12+ warns against forking any multi-threaded process (a Jupyter kernel always is);
# - spawn, and forkserver too, make every child run the parent's main module again, as `__mp_main__` (measured:
#   forkserver with a preload list without '__main__' still runs it in each child). A script without an
#   `if __name__ == "__main__":` guard then starts its whole run again in every worker (the "bootstrapping phase"
#   RuntimeError), and input from `python -` makes every worker die on the file '<stdin>';
# - the workers need nothing from __main__: what they run (the initializer, `_fit_in_worker`, cells, work units)
#   lives in dropbench and pickles by reference to it. So they are spawned as if __main__ were an empty module:
#   they import dropbench and what a suite names, never the caller's script, input or notebook.
_MAIN_HIDDEN = threading.Lock()  # one launch at a time swaps sys.modules['__main__']


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While a worker is launched, an empty `__main__`: multiprocessing reads the main module's file or name when
    it launches a child (spawn.get_preparation_data), and the child runs whatever it found there. The swap lasts
    the launch alone (the pickling of the process object and the exec) and is undone before anything else runs
    in this thread; other threads would see it only if they imported __main__ within those milliseconds."""
    with _MAIN_HIDDEN:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


class _WorkerProcess(SpawnProcess):
    """A spawned process that does not run the parent's main module (see _main_module_hidden)."""

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> "Popen":  # multiprocessing's name for the hook that launches a child
        with _main_module_hidden():
            return SpawnProcess._Popen(process_obj)


class WorkerContext(SpawnContext):
    """multiprocessing's spawn context, whose processes never import the parent's `__main__`."""

    Process = _WorkerProcess


SPAWN = WorkerContext()  # the pools' context: its queues are spawn's, its processes _WorkerProcess


def workers_unavailable() -> str | None:
    """Why this process cannot start worker processes (None when it can): a daemonic process (a
    multiprocessing.Pool worker) may not have children, and a frozen or embedded interpreter has no Python
    executable for spawn to start. There cells train in this process instead."""
    if multiprocessing.current_process().daemon:
        return "this is a daemonic process (a multiprocessing pool's worker), which may not start processes"
    if getattr(sys, "frozen", False) or not sys.executable or not os.path.exists(sys.executable):
        return f"this interpreter ({sys.executable or 'embedded'}) cannot be started again as a worker"
    return None


def threads_policy(threads: Threads | None, device: str) -> Threads:
    """What --threads means for a run: a fixed count per process as given; `auto` (the default) on the CPU, and on
    CUDA, where the arithmetic is on the GPU, every core as before."""
    if threads is not None and threads != AUTO:
        return int(threads)
    return usable_cores() if device == "cuda" else AUTO


def fixed_threads(policy: Threads) -> int:
    """The thread count of a cell whose figures might depend on it: the count given, and one under auto (as every
    CPU cell had before auto came, so that its figures stay what they were)."""
    return 1 if policy == AUTO else int(policy)


def most_threads(policy: Threads) -> int:
    """The most threads a cell of this policy may train with: the count given; under auto every core (where the
    probe allows: `FollowCores`)."""
    return usable_cores() if policy == AUTO else int(policy)


class ThreadShare:
    """Under --threads auto, how many units of work are in flight in a pool: the driver writes it as it submits and
    collects them, each worker reads it when it starts a unit and at every epoch's end and takes `auto_threads` of
    the cores. A RawValue: one writer, and a stale read only delays a change by an epoch."""

    def __init__(self, cores: int, jobs: int) -> None:
        self.cores, self.jobs = cores, jobs
        self.busy = SPAWN.RawValue("i", 0)

    def threads(self) -> int:
        return auto_threads(self.cores, self.jobs, self.busy.value)


def probe_unit(unit: WorkUnit, device: str) -> dict[tuple, Call]:
    """The operations a unit's training and measuring make, recorded (opprobe.OpRecorder) from a probe of it at one
    thread: its cells from scratch, for one epoch of two batches, a full one and one the size of the real epoch's
    last, with a validation pass over chunks the size of the real one's; then a model of its cells measured on
    chunks the size of the final measuring's (`measure`, and `measure_mc` where a cell asks for it). What grows with
    the training set (the epoch's permutation, drawn serially; concatenations and exact sums over a split) is seen
    at the probe's size."""
    with torch_threads(1):  # the first load of a task's data in this process may happen here
        data = load_task_data_on(unit.cells[0].task.key, device)
    first = unit.cells[0]
    rows = first.train_size or len(data.y_train)
    batch = first.task.batch_size
    last = rows % batch or batch
    train = slice(0, batch + last if rows > batch else rows)
    val_rows = len(data.y_val)
    val = slice(0, val_rows if val_rows <= 2 * EVAL_BATCH else EVAL_BATCH + val_rows % EVAL_BATCH)
    probe = replace(  # copies: a view would carry the whole split's storage into every recorded call
        data,
        x_train=data.x_train[train].clone(),
        y_train=data.y_train[train].clone(),
        x_val=data.x_val[val].clone(),
        y_val=data.y_val[val].clone(),
        x_test=data.x_test[:1].clone(),
        y_test=data.y_test[:1].clone(),
    )
    cells = [replace(c, task=replace(c.task, epochs=1), train_size=0, mc_samples=0, epoch_limit=0) for c in unit.cells]
    recorder = OpRecorder()

    def stop_recording(progress: EpochProgress) -> None:  # the epoch's end: before the probe's own measuring
        if recorder.active:
            recorder.__exit__(None, None, None)
            recorder.active = False

    with torch_threads(1), torch.random.fork_rng(devices=[]):
        recorder.__enter__()
        recorder.active = True
        try:
            if unit.stacked:
                fit_stacked(cells, probe, stop_recording)
            else:
                fit_alone(cells[0], probe, stop_recording)
        finally:
            stop_recording(EpochProgress(1, 1, ()))
        with recorder:
            _measure_chunks(first, data, rows, any(c.mc_samples for c in unit.cells))
    return recorder.calls


def _measure_chunks(cell: Cell, data: TaskData, train_rows: int, mc: bool) -> None:
    """Measure a model of `cell` on each chunk size the final measuring of its splits takes (EVAL_BATCH rows and
    each split's remainder): as a stacked unit's members are measured, each on its own."""
    model = build_model(
        cell.task.model, data.input_shape, data.n_outputs, cell.layer_keep_rates, cell.input_keep_rate, cell.dropout
    ).to(data.x_train.device)
    model.set_generator(torch.Generator(device=data.x_train.device))
    for which, rows in (("train", train_rows), ("val", len(data.y_val)), ("test", len(data.y_test))):
        x, y = data.split(which)
        for chunk in sorted({min(EVAL_BATCH, rows), rows % EVAL_BATCH} - {0}):
            sized = replace(data, x_test=x[:chunk].clone(), y_test=y[:chunk].clone())
            measure(model, sized, "test")
            if mc and data.classification:
                measure_mc(model, sized, 1, torch.Generator(device=data.x_train.device))


class FollowCores:
    """Sets this process's torch threads for one unit of work. A fixed count (--threads N, CUDA) throughout. Under
    auto, at its start and at every epoch's end (the trainers' `on_epoch`: between two epochs, never within one), the
    unit takes the count `threads()` offers where its probe (`probe_unit`, run when a count above one is first
    offered) gives the same bits there as at one, else one: its training and its measuring. So its figures are those
    of one thread, whatever it ran at. `most`: the highest count it trained at."""

    def __init__(self, unit: WorkUnit, device: str, threads: Callable[[], int] | int, report: OnEpoch | None) -> None:
        self.unit, self.device, self.threads, self.report = unit, device, threads, report
        self.follows = not isinstance(threads, int) and device == "cpu" and all(probe_covers(c) for c in unit.cells)
        self.calls: dict[tuple, Call] | None = None
        self.allowed: dict[int, bool] = {1: True}
        self.most = 1
        set_figures_threads(1 if not isinstance(threads, int) else threads)
        self.follow()

    def wanted(self) -> int:
        if isinstance(self.threads, int):
            return self.threads
        if not self.follows:
            return 1
        count = self.threads()
        if count not in self.allowed:
            if self.calls is None:
                try:
                    self.calls = probe_unit(self.unit, self.device)
                except Exception:  # noqa: BLE001 - a probe that fails shows nothing: one thread; the training
                    self.calls = {}  # itself then records (or raises) its own error
                    self.follows = False
                    return 1
            self.allowed[count] = same_bits(self.calls, count)
        return count if self.allowed[count] else 1

    def follow(self) -> None:
        count = self.wanted()
        if count != torch.get_num_threads():
            torch.set_num_threads(count)
        self.most = max(self.most, count)

    def on_epoch(self, progress: EpochProgress) -> None:
        self.follow()
        if self.report is not None:
            self.report(progress)


def fit_alone(cell: Cell, data: TaskData, on_epoch: OnEpoch | None = None, start: Start | None = None) -> CellResult:
    """Fit one cell by the trainer its figures come from in every run: a cell that `stacks` trains as a stack
    of one, so that it gives the same numbers alone (--no-stack, a retry, Ray) as beside any other cells.
    `start`: the checkpoint its training continues from (checkpoints.Start), or None."""
    if stacks(cell, data.x_train.device.type):
        return fit_stacked([cell], data, on_epoch, None if start is None else [start])[0]
    return fit_cell(cell, data, on_epoch, start)


def fit_safely(
    cell: Cell, device: str = "cpu", on_epoch: OnEpoch | None = None, start: Start | None = None
) -> CellResult:
    """Fit a cell; an exception in training is recorded as a failed cell, not a crashed run.

    Bad data (UserError) still stops the run: every other cell of that task would fail the same way.
    """
    data = load_task_data_on(cell.task.key, device)
    try:
        return fit_alone(cell, data, on_epoch, start)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of one cell is recorded and the run goes on
        return CellResult(status="failed", error=f"{type(error).__name__}: {error}")


def fit_unit(unit: WorkUnit, device: str = "cpu", on_epoch: OnEpoch | None = None) -> list[tuple[Cell, CellResult]]:
    """Fit a unit of work: one cell, or a group trained as one stacked model. If a stacked group fails
    for any reason but bad data, its cells are fitted one by one (`fit_alone`), so one bad cell fails alone.
    `on_epoch` hears of every epoch as it ends."""
    alone = [(cell, unit.start(i)) for i, cell in enumerate(unit.cells)]
    if not unit.stacked:
        return [(cell, fit_safely(cell, device, on_epoch, start)) for cell, start in alone]
    data = load_task_data_on(unit.cells[0].task.key, device)
    try:
        return list(zip(unit.cells, fit_stacked(unit.cells, data, on_epoch, unit.starts or None)))
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - the single-cell trainer then records each cell's own failure
        return [(cell, fit_safely(cell, device, on_epoch, start)) for cell, start in alone]


class LocalExecutor:
    """Fit cells sequentially in this process. Under --threads auto a unit takes every core where its probe allows
    (`FollowCores`), else one."""

    name = "local"
    jobs = 1

    def __init__(self, threads: Threads | None = None, device: str = "cpu", stack: bool = True) -> None:
        self.policy = threads_policy(threads, device)
        self.device = device
        self.stack = stack
        self.threads = most_threads(self.policy)

    def unit_threads(self) -> Callable[[], int] | int:
        """What a unit is offered: under auto every core (this process runs one unit at a time), else the count."""
        return (lambda: auto_threads(usable_cores(), 1, 1)) if self.policy == AUTO else int(self.policy)

    def run(
        self, cells: Sequence[Cell], on_epoch: OnEpoch | None = None, starts: Mapping[str, Start] | None = None
    ) -> Iterator[Finished]:
        """Fit the cells one unit after another; `on_epoch` hears of every epoch as it ends. `starts` (cell_id ->
        Start): the cells whose training continues from a checkpoint. The caller's torch thread count is set back
        afterwards (a notebook's torch must not stay at one thread after a run)."""
        threads = torch.get_num_threads()
        configure(self.device)
        try:
            for unit in work_units(cells, jobs=1, stack=self.stack, device=self.device, starts=starts):
                started_at = utc_now()
                cores = FollowCores(unit, self.device, self.unit_threads(), on_epoch)
                for cell, result in fit_unit(unit, self.device, cores.on_epoch):
                    result.threads = cores.most
                    yield cell, result, started_at
        finally:
            torch.set_num_threads(threads)


def _exit_with_parent(parent: int) -> None:
    # A driver killed with SIGKILL cannot stop its pool; without this a worker would finish its cell
    # (minutes, on a big net) for nobody. Poll the parent and leave as soon as it is gone.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


@contextmanager
def _workers_deaf_to_ctrl_c() -> Iterator[None]:
    """Block SIGINT in this thread while it may spawn workers. Ctrl-C reaches the whole process group, and the
    driver alone decides what happens (it stops the pool); a worker that got it while still importing torch,
    before `_init_worker` could ignore it, printed half a KeyboardInterrupt traceback as it was stopped. A
    spawned process keeps the signal mask of the thread that started it, so workers never see SIGINT; the
    driver's own Ctrl-C is not lost (another thread takes it, or it waits until the mask is restored)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: `_init_worker` still ignores it, later
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(threads: int, device: str, progress: SimpleQueue | None, share: ThreadShare | None) -> None:
    # Where the blocked mask was not inherited (see _workers_deaf_to_ctrl_c): the driver handles Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # A worker's results are sent before it exits; the interpreter's own teardown with torch loaded then
    # takes seconds (docs/performance.md), which the pool shutdown would wait for. Registered after torch's
    # handlers, this one runs first and skips the rest.
    atexit.register(os._exit, 0)
    torch.set_num_threads(threads if share is None else 1)  # under auto a unit's FollowCores sets them
    configure(device)
    global _WORKER_DEVICE, _WORKER_PROGRESS, _WORKER_THREADS, _WORKER_SHARE
    _WORKER_DEVICE, _WORKER_PROGRESS, _WORKER_THREADS, _WORKER_SHARE = device, progress, threads, share


# Set once per worker process by _init_worker: its device, where it reports finished epochs (or None), the thread
# count of a unit that does not follow the share, and under --threads auto the pool's share of the cores.
_WORKER_DEVICE = "cpu"
_WORKER_PROGRESS: SimpleQueue | None = None
_WORKER_THREADS = 1
_WORKER_SHARE: ThreadShare | None = None


def _fit_in_worker(unit: WorkUnit) -> tuple[list[CellResult], str]:
    started_at = utc_now()
    share, report = _WORKER_SHARE, None if _WORKER_PROGRESS is None else _WORKER_PROGRESS.put
    cores = FollowCores(unit, _WORKER_DEVICE, _WORKER_THREADS if share is None else share.threads, report)
    results = [result for _, result in fit_unit(unit, _WORKER_DEVICE, cores.on_epoch)]
    for result in results:
        result.threads = cores.most
    return results, started_at


class PoolExecutor:
    """Fit cells in `jobs` worker processes of `threads` torch threads each; under auto, the cores shared among
    the units in flight (`ThreadShare`): J busy workers take cores // J threads each, and as the grid runs out
    the ones still busy take the cores of those that finished, at their next epoch.

    Small networks are bound by per-step overhead, not arithmetic: one-thread workers, one per core, run
    the quick suite faster than one process with a thread per core (docs/performance.md). Workers are
    spawned (not forked) so no OpenMP or torch state is inherited, and without the caller's __main__ (SPAWN), so
    a script without a main guard, `python -` and a notebook can start them; each loads a task's data once and
    keeps it.
    """

    name = "process-pool"

    def __init__(self, jobs: int, threads: Threads | None = None, device: str = "cpu", stack: bool = True) -> None:
        self.jobs = jobs
        self.policy = threads_policy(threads, device)
        self.device = device
        self.stack = stack
        # The most a cell may take: under auto every core (a cell alone, the grid's last) where its probe allows.
        self.threads = most_threads(self.policy)

    def _share(self, workers: int) -> ThreadShare | None:
        """The pool's share of the cores under auto; None for a fixed count and on CUDA."""
        if self.policy != AUTO or self.device != "cpu":
            return None
        return ThreadShare(usable_cores(), workers)

    def _start(self, workers: int, progress: SimpleQueue | None, share: ThreadShare | None) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=SPAWN,
            initializer=_init_worker,
            initargs=(fixed_threads(self.policy), self.device, progress, share),
        )

    def run(
        self, cells: Sequence[Cell], on_epoch: OnEpoch | None = None, starts: Mapping[str, Start] | None = None
    ) -> Iterator[Finished]:
        """Keep each worker fed with one cell at a time, so the cells in flight are known: when a worker
        dies (killed, out of memory) the pool breaks, those cells are retried once in a fresh pool and a
        cell that was in flight at two breakages is written as failed; the others are not affected.

        With `on_epoch`, workers put each finished epoch on a queue that this process empties into it while
        it waits for cells (every PROGRESS_POLL_S). A queue per pool: one whose worker was killed while
        writing to it is dropped with its pool. `starts`: as LocalExecutor.run's, carried to the workers."""
        units = work_units(cells, jobs=self.jobs, stack=self.stack, device=self.device, starts=starts)
        queue, strikes = deque(units), Counter[str]()
        while queue:
            progress = SPAWN.SimpleQueue() if on_epoch is not None else None
            workers = min(self.jobs, len(queue))
            share = self._share(workers)
            pool = self._start(workers, progress, share)
            in_flight: dict[Future, WorkUnit] = {}
            try:
                while queue or in_flight:
                    if share is not None:  # before the submits: a worker's first read counts its own unit
                        share.busy.value = min(workers, len(in_flight) + len(queue))
                    if not self._feed(pool, queue, in_flight):
                        break  # a worker died between two submits: the pool is broken
                    done = _wait(in_flight, progress, on_epoch)
                    if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                        break
                    for future in done:
                        unit = in_flight.pop(future)
                        results, started_at = future.result()
                        for cell, result in zip(unit.cells, results):
                            yield cell, result, started_at
            finally:
                if in_flight:  # a broken pool, an error or Ctrl-C: stop the workers still running, now
                    _stop(pool)
                else:
                    pool.shutdown(wait=True)
                if progress is not None:
                    progress.close()
            for unit in in_flight.values():  # the pool broke under these cells
                key = unit.cells[0].cell_id
                strikes[key] += 1
                if strikes[key] < WORKER_DEATHS_ALLOWED:
                    queue.appendleft(unit)
                elif len(unit.cells) > 1:  # a stacked group: retry its cells in groups of one to find the culprit
                    queue.extendleft(unit.alone(i) for i in range(len(unit.cells)))
                else:
                    error = "worker process died while fitting this cell (killed, or out of memory?)"
                    yield unit.cells[0], CellResult(status="failed", error=error), utc_now()

    def _feed(self, pool: ProcessPoolExecutor, queue: deque, in_flight: dict[Future, WorkUnit]) -> bool:
        """Submit queued units until every worker has one; False when the pool broke meanwhile (the unit it
        refused goes back to the queue's front, uncharged: it was never in flight)."""
        while queue and len(in_flight) < self.jobs:
            unit = queue.popleft()
            try:
                with _workers_deaf_to_ctrl_c():  # a submit may spawn a worker
                    in_flight[pool.submit(_fit_in_worker, unit)] = unit
            except BrokenProcessPool:
                queue.appendleft(unit)
                return False
        return True


def _wait(in_flight: dict[Future, WorkUnit], progress: SimpleQueue | None, on_epoch: OnEpoch | None) -> set[Future]:
    """The units in flight that are done, once one is; meanwhile the epochs the workers reported go to
    `on_epoch`. A report is one small pickle, written to the pipe whole, so a worker killed mid-put cannot
    leave half of one to block this read."""
    if progress is None or on_epoch is None:
        return wait(in_flight, return_when=FIRST_COMPLETED)[0]
    while True:
        done, _ = wait(in_flight, timeout=PROGRESS_POLL_S, return_when=FIRST_COMPLETED)
        while not progress.empty():
            on_epoch(progress.get())
        if done:
            return done


def _stop(pool: ProcessPoolExecutor) -> None:
    # concurrent.futures has no public way to stop a running task before Python 3.14; a cell in flight is
    # lost either way (it is rerun on resume), so end its worker at once.
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()


def make_executor(
    jobs: int | None = None, threads: Threads | None = None, device: str = "cpu", stack: bool = True
) -> LocalExecutor | PoolExecutor:
    """`jobs` processes (default: one per usable core on the CPU, one on a GPU); 1 means this process, and so does
    a process that cannot start workers (`workers_unavailable`). `threads`: "auto" (None: the default) or a count per
    process (`threads_policy`). `stack`: train compatible cells as one stacked model (see stacked.work_units)."""
    if threads is not None and threads != AUTO and not (isinstance(threads, int) and threads >= 1):
        raise UserError(f"threads={threads!r}: allowed: 'auto' or a whole number of at least 1")
    jobs = jobs or (1 if device == "cuda" else usable_cores())
    if jobs > 1 and workers_unavailable():
        jobs = 1
    return LocalExecutor(threads, device, stack) if jobs == 1 else PoolExecutor(jobs, threads, device, stack)
