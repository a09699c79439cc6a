"""How many torch threads a cell trains with on the CPU, without its figures depending on it.

A kernel may sum in another order at another thread count (MKL splits some GEMMs' sums differently over two threads
than over one), which changes a figure's last bits. Under `--threads auto` (the default) a cell's figures are always
those it gets at one thread: a unit of work starts at one thread, and takes more (its share of the cores free,
`auto_threads`) only once a probe has shown that every operation its training makes gives the same bits at that count
(`dropbench.opprobe`, run by the executors: its measuring too). MKL's Conditional Numerical
Reproducibility strict mode (`MKL_CBWR=AUTO,STRICT`) makes that far more common, so `import dropbench` asks for it
(`request_strict_blas`) before anything of dropbench runs a product; MKL reads the variable at its first call, and
worker processes inherit it. A user's own MKL_CBWR is left as it is.

Torch-free at import: `dropbench/__init__.py` imports this module before anything loads torch.
"""

import contextlib
import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .config import Cell

CBWR_ENV = "MKL_CBWR"
STRICT = "AUTO,STRICT"  # the branch MKL picks for this CPU, in strict mode (what `import dropbench` asks for)
AUTO: Literal["auto"] = "auto"
Threads = int | Literal["auto"]  # --threads: a fixed count per process, or auto

# mkl_cbwr.h: the branch in the low bits, the strict flag above them.
_CBWR_STRICT_FLAG = 0x10000
_CBWR_ALL = -1  # MKL_CBWR_ALL (~0): the whole setting
_CBWR_BRANCHES = {
    0: "OFF",
    1: "OFF",  # MKL_CBWR_BRANCH_OFF: what MKL runs without the variable
    2: "AUTO",
    3: "COMPATIBLE",
    4: "SSE2",
    6: "SSSE3",
    7: "SSE4_1",
    8: "SSE4_2",
    9: "AVX",
    10: "AVX2",
    11: "AVX512_MIC",
    12: "AVX512",
    13: "AVX512_MIC_E1",
    14: "AVX512_E1",
}


def request_strict_blas() -> None:
    """Ask MKL for strict reproducibility in this process and every process it starts, unless the environment
    already says otherwise (a user's MKL_CBWR wins). Too late for MKL in this process if it already ran a BLAS
    call (it reads the variable once, at its first one); worker processes are new and read it in time."""
    os.environ.setdefault(CBWR_ENV, STRICT)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; every core where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads(cores: int, jobs: int, busy: int) -> int:
    """Torch threads of each busy worker under `--threads auto`: the cores shared among the units of work in flight
    (at most `jobs`, the pool's workers), so that a one-cell run, `--jobs 1` and the last cells of a grid use the
    whole machine and the workers together never take more threads than there are cores. At least one."""
    return max(1, cores // max(1, min(jobs, busy)))


@dataclass(frozen=True)
class _Cbwr:
    """MKL's reproducibility functions (mkl_cbwr.h), as torch's library exports them."""

    get: Callable[[int], int]  # the setting in effect (reading it fixes it, from MKL_CBWR, if nothing has yet)
    auto_branch: Callable[[], int]  # the branch AUTO picks on this CPU; AUTO itself where MKL names none (non-Intel)


@cache
def _cbwr() -> _Cbwr | None:
    """MKL's `mkl_cbwr_get` and `mkl_cbwr_get_auto_branch`: from the process (a torch linked to MKL's own libraries)
    or, as torch's wheels link MKL into their CPU library, under MKL's service names there; None where torch has no
    MKL or neither exports them."""
    import torch

    if not torch.backends.mkl.is_available():
        return None
    libraries = [ctypes.CDLL(None)]
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        path = Path(torch.__file__).parent / "lib" / name
        if path.exists():
            with contextlib.suppress(OSError):
                libraries.append(ctypes.CDLL(str(path)))
    for library in libraries:
        for prefix in ("mkl_", "mkl_serv_"):
            get = getattr(library, f"{prefix}cbwr_get", None)
            auto = getattr(library, f"{prefix}cbwr_get_auto_branch", None)
            if get is not None and auto is not None:
                get.restype, get.argtypes, auto.restype, auto.argtypes = ctypes.c_int, [ctypes.c_int], ctypes.c_int, []
                return _Cbwr(get, auto)
    return None


def _name(branch: int) -> str:
    return _CBWR_BRANCHES.get(branch, str(branch))


def cbwr_in_effect() -> str | None:
    """MKL's reproducibility setting in this process, as MKL_CBWR spells it ('AUTO,STRICT', 'OFF', 'COMPATIBLE'),
    or None where it cannot be read (torch without MKL, or not exporting it). Reading it fixes it: call it only
    once MKL_CBWR is what it should be (`import dropbench` has set it)."""
    cbwr = _cbwr()
    if cbwr is None or (mode := cbwr.get(_CBWR_ALL)) < 0:
        return None
    return f"{_name(mode & 0xFFFF)},STRICT" if mode & _CBWR_STRICT_FLAG else _name(mode & 0xFFFF)


def cbwr_auto_branch() -> str | None:
    """The code branch MKL_CBWR=AUTO runs on this CPU ('AVX2', 'AVX512'; 'AUTO' where MKL names none, as on AMD
    CPUs), or None where it cannot be read. It does not fix MKL's setting."""
    cbwr = _cbwr()
    return None if cbwr is None else _name(cbwr.auto_branch())


def probe_covers(cell: "Cell") -> bool:
    """Whether the probe sees everything a training of `cell` computes per step and per epoch: dropbench's own
    models and regularizers (a plugin's may compute over the whole training set, which the probe, training on two
    batches, would not see at its size); such a cell keeps one thread under auto."""
    from .models import REGISTRY as MODELS
    from .regularizers import REGISTRY as REGULARIZERS

    return cell.task.model.kind in MODELS.builtins and all(
        name in REGULARIZERS.builtins for name, _ in cell.regularizer.parts
    )


# The thread count a training's figures are those of, set by the executor for the unit it trains
# (executors.FollowCores): one under auto, whatever the count it runs at; None: the current count (a training
# run outside the executors).
_figures_threads: int | None = None


def set_figures_threads(count: int | None) -> None:
    global _figures_threads
    _figures_threads = count


def figures_threads() -> int:
    """The torch thread count the figures of a training now running come from, as a checkpoint records it
    (checkpoints.TrainingState.threads): the executor's (`set_figures_threads`), else the current count."""
    import torch

    return torch.get_num_threads() if _figures_threads is None else _figures_threads
