"""Which device cells train on, and the settings that go with it."""

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


def configure(device: str) -> None:
    """On CUDA, allow TF32 matmuls and convolutions: ~8x the fp32 throughput of an H100's tensor cores for
    a 10-bit mantissa in the products, far below the seed-to-seed spread of any figure dropbench reports."""
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def describe(device: str) -> str:
    """'cpu', or 'cuda:0 NVIDIA H100 80GB HBM3' for the CSV's device column."""
    if device == "cuda" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
    return device


def autocast(device: str, precision: str) -> torch.autocast:
    """bf16 autocast for the forward pass and loss when asked (weights and optimizer stay fp32)."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")
