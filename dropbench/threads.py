"""How many torch threads a cell trains with on the CPU, and when its figures do not depend on it.

MKL picks thread-count-dependent GEMM kernels for some shapes (seen on torch 2.13: one output layer's weight
gradient differed by 6e-8 between one thread and two), so dropbench asks MKL for Conditional Numerical
Reproducibility's strict mode, `MKL_CBWR=AUTO,STRICT`: bitwise results whatever the thread count, which MKL documents
for its GEMMs on its AVX2 and AVX-512 code branches, i.e. on Intel CPUs (`strict_blas`). MKL reads the variable at its
first call, not when torch is loaded, so `import dropbench` sets it (`request_strict_blas`) before anything of
dropbench runs a matmul; worker processes inherit it. A user's own MKL_CBWR is left as it is.

Where figures do not depend on threads, `--threads auto` (the default) shares the machine's cores among the cells in
flight (`auto_threads`). Where they might (`strict_blas` does not hold, or `thread_free` is False: a conv net, bf16,
a plugin's model or regularizer), a cell keeps one thread, as every CPU cell did before.

Torch-free at import: `dropbench/__init__.py` imports this module before anything loads torch.
"""

import contextlib
import ctypes
import os
from collections.abc import Callable, Mapping
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
_CBWR_AUTO = 2
_CBWR_FIRST_STRICT = 10  # AVX2, and the AVX-512 branches after it: where MKL documents strict mode
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
_BRANCH_VALUES = {name: value for value, name in _CBWR_BRANCHES.items() if value != 0}


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


def strict_requested(environ: "Mapping[str, str] | None" = None) -> bool:
    """Whether MKL_CBWR asks for strict mode (what a new worker process will run under)."""
    return "STRICT" in _tokens((os.environ if environ is None else environ).get(CBWR_ENV, ""))


def _tokens(value: str) -> list[str]:
    return [token.strip().upper() for token in value.split(",")]


def strict_blas(here: bool) -> bool:
    """Whether MKL's products give the same bits at every thread count: strict mode on a branch for which MKL
    documents it, AVX2 or AVX-512 (Intel CPUs), in this process (`here`: read from MKL) or in the worker processes it
    starts (they read MKL_CBWR at their first product: the variable tells). Elsewhere strict mode is no promise:
    on this project's AMD EPYC (MKL's AUTO branch names none) products with few output elements, as in a last batch
    of a few rows or a stack of one, still changed with the thread count (README, "Threads")."""
    cbwr = _cbwr()
    if cbwr is None:
        return False
    auto = cbwr.auto_branch()
    if here:
        mode = cbwr.get(_CBWR_ALL)
        strict, branch = mode >= 0 and bool(mode & _CBWR_STRICT_FLAG), mode & 0xFFFF
    else:
        tokens = _tokens(os.environ.get(CBWR_ENV, ""))
        strict, branch = "STRICT" in tokens, _BRANCH_VALUES.get(tokens[0], 0)
    if branch == _CBWR_AUTO:
        branch = auto
    return strict and min(branch, auto) >= _CBWR_FIRST_STRICT


def thread_free(cell: "Cell") -> bool:
    """Whether this cell's figures are the same at every torch thread count once strict_blas holds: an MLP of the
    built-in regularizers in fp32, whose arithmetic is MKL's GEMMs and torch's elementwise and per-row kernels
    (tests/test_threads.py trains them at one thread, two, and changing between epochs). Not a conv net (oneDNN's
    convolutions are no MKL GEMM: a digits cnn's losses changed with the thread count under strict mode), nor bf16
    (oneDNN's matmuls), nor a plugin's model or regularizer (a sum over a large tensor is split by threads)."""
    from .regularizers import REGISTRY as REGULARIZERS

    return (
        cell.precision == "fp32"
        and cell.task.model.kind == "mlp"
        and all(name in REGULARIZERS.builtins for name, _ in cell.regularizer.parts)
    )


def figures_threads(cell: "Cell", device: str) -> int:
    """The torch thread count a training of `cell` in this process now has its numbers from, as a checkpoint
    records it (checkpoints.TrainingState.threads): 0 where they come from none (a `thread_free` cell on the CPU
    under strict mode), else the current count."""
    import torch

    if device == "cpu" and thread_free(cell) and strict_blas(here=True):
        return 0
    return torch.get_num_threads()
