"""Writing files so that nothing is lost, torn or waited on forever: appends, atomic rewrites, locks.

Every failure of the operating system (a read-only folder, a full disk, a path that is not a file)
becomes one UserError naming the file, so the CLI prints one line and exits 2, never a traceback.
"""

import errno
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows: the run lock falls back to filelock, without the holder's PID
    fcntl = None  # type: ignore[assignment]  # the module or None: mypy's usual optional-import idiom

# A writer holds the append lock for one fsynced batch (milliseconds); a minute means something is wrong.
APPEND_LOCK_SECONDS = 60.0
HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


def os_error(path: Path, doing: str, error: OSError) -> UserError:
    """'cannot write results/r.csv: No space left on device' (strerror, not Python's '[Errno 28] ...')."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason += " (free some space, then rerun: what was written before is intact)"
    return UserError(f"cannot {doing} {path}: {reason}")


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, so an interrupt never tears a line.

    A signal may arrive on any thread, but Python runs its handler in the main thread between two
    bytecodes: a KeyboardInterrupt raised there would cut a write in two, and SIGTERM's default action
    kills the process wherever it is. Blocking the signal in the main thread is not enough (the kernel
    hands it to another thread), so for the block's duration the handlers only note the signal; once
    the block ends, each noted signal is raised again, to the handler that was there before. Handlers
    can only be set from the main thread, and only ever run there: a write in another thread is not cut.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in HELD_SIGNALS}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}  # None: set outside Python
    for sig in previous:
        signal.signal(sig, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(noted):
            signal.raise_signal(signum)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out (a write may take fewer bytes than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_bytes(path: Path, data: bytes) -> None:
    """Append whole lines and fsync, with interrupts held. A failed write (a full disk) is cut back off,
    so the file keeps exactly the lines it had."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise os_error(path, "write", error) from None
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        with interrupts_held():
            try:
                write_all(fd, data)
                os.fsync(fd)
            except OSError as error:
                os.ftruncate(fd, start)  # frees the blocks it took, so it works on a full disk too
                raise os_error(path, "write", error) from None
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file beside `path`, fsync it and rename it over `path`: readers see the old
    file or the new one, never a part; on failure `path` is as it was and the temporary file is gone."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with interrupts_held():
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise os_error(path, "write", error) from None


def complete_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline: a line still being written (or torn by a kill) is left
    out, so reading needs neither the lock nor a write."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(path, "read", error) from None
    return data[: data.rfind(b"\n") + 1]


def repair_torn_tail(path: Path) -> None:
    """Drop a last line left half-written by a killed process (the file must end with a newline)."""
    try:
        with open(path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            handle.truncate(handle.read().rfind(b"\n") + 1)
    except OSError as error:
        raise os_error(path, "write", error) from None


def _lock_file(path: Path, kind: str) -> Path:
    """The hidden lock file beside `path`, created here so that an unwritable folder is an error now
    (filelock would otherwise poll for it forever)."""
    lock_path = path.with_name(f".{path.name}.{kind}")
    try:
        os.close(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666))
    except OSError as error:
        raise os_error(path.parent, "write in", error) from None
    return lock_path


@contextmanager
def append_lock(path: Path) -> Iterator[None]:
    """The lock every writer of `path` takes for one batch; it gives up after a minute rather than hang."""
    lock_path = _lock_file(path, "lock")
    try:
        with FileLock(str(lock_path), timeout=APPEND_LOCK_SECONDS):
            yield
    except Timeout:
        raise UserError(
            f"{path}: still locked by another process after {APPEND_LOCK_SECONDS:.0f} s ({lock_path})"
        ) from None


@contextmanager
def run_lock(path: Path, what: str = "dropbench run") -> Iterator[None]:
    """Held for a whole run into `path`: a second run into the same file is refused at once (it would
    run every cell again), naming the holder's PID. The lock file is never deleted: a process that
    opened it just before would otherwise hold a lock on a file nobody else sees."""
    lock_path = _lock_file(path, "run.lock")
    if fcntl is None:
        try:
            with FileLock(str(lock_path), timeout=0):
                yield
        except Timeout:
            raise UserError(
                f"{path}: another {what} is writing to it; wait for it to end, or choose another file"
            ) from None
        return
    fd = os.open(lock_path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip()
            pid = f" (PID {holder})" if holder.isdigit() else ""
            raise UserError(
                f"{path}: another {what}{pid} is writing to it; wait for it to end, or choose another file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def check_output(path: Path) -> None:
    """Refuse an output path dropbench cannot own: a device or a folder, or a path under a file."""
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: not a regular file; the output must be a file dropbench can write")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UserError(f"{path}: {ancestor} is a file, not a folder")
            break


def check_writable(path: Path) -> None:
    """Refuse an existing file this user may not write (a run would append to it, or replace it)."""
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{path}: read-only; dropbench would write to it: make it writable, or choose another file")


def prepare_output(path: Path) -> None:
    """check_output, then create the folder: one clear line now rather than a traceback or a hang later."""
    check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(path.parent, "create the folder", error) from None
