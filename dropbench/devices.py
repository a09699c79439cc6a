"""Which device cells train on, and the settings that go with it."""

import ctypes
import ctypes.util
import sys

import torch

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str) -> str:
    """'auto' is CUDA when a GPU is visible, else the CPU; asking for CUDA without one is an error."""
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch (use --device cpu or auto)")
    return name


# glibc malloc: blocks from 8 MiB up get their own mapping, returned to the system when freed; the heap
# keeps up to 64 MiB free at its top. By default the mapping threshold follows the largest block freed
# (up to 32 MiB), so after the first 4096-row evaluation batch every such batch lands on the heap and the
# heap grows with every split measured (docs/performance.md: an MNIST process's peak, with and without).
# Training's own blocks (a 1024x1024 gradient is 4 MiB) stay on the heap, reused without page faults.
MALLOC_MMAP_THRESHOLD = 8 << 20
MALLOC_TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def configure(device: str) -> None:
    """Settings for a process that trains cells. On CUDA, allow TF32 matmuls and convolutions: the tensor
    cores' throughput, several times fp32's, for a 10-bit mantissa in the products, far below the seed-to-seed
    spread of any figure dropbench reports. On Linux, fixed malloc thresholds (above)."""
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    _set_malloc_thresholds()


def _set_malloc_thresholds() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): keep its defaults
        return
    mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


def describe(device: str) -> str:
    """'cpu', or 'cuda:0 NVIDIA H100 80GB HBM3' for the CSV's device column."""
    if device == "cuda" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
    return device


def autocast(device: str, precision: str) -> torch.autocast:
    """bf16 autocast for the forward pass and loss when asked (weights and optimizer stay fp32)."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")
