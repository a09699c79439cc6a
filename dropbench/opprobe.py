"""Whether a training's arithmetic gives the same bits at more torch threads: record its operations, replay them.

A kernel's order of summation, and so its last bits, can depend on the thread count (MKL splits a GEMM's sums
differently over two threads than over one for some shapes), never on the values it is given: it is chosen from the
operation, the shapes, strides, dtypes and alignment. So `OpRecorder` keeps the first call of every distinct
signature a piece of training makes (cloned inputs, at their storage offsets), and `same_bits` replays each at one
thread and at `threads` and compares every output and every input an operation writes to, bit for bit. Where all
agree, the training gives the same bits at that count as at one; where any differs, or cannot be replayed, it may
not. Random draws replay from a copy of their generator's state.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

# Operations whose outputs are memory not yet written (their values are nobody's arithmetic).
UNINITIALIZED = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
ALIGNMENT = 64  # bytes: what a kernel may branch on (vector loads); offsets are kept modulo this
# (signature, threads) pairs already shown to agree in this process: units of one architecture replay nothing twice
_AGREE: set[tuple[tuple, int]] = set()


def _tensor_signature(t: torch.Tensor) -> tuple:
    offset = (t.storage_offset() * t.element_size()) % ALIGNMENT
    return ("T", tuple(t.shape), t.stride(), t.dtype, t.device.type, offset, t.requires_grad)


def _signature(value: object) -> object:
    """What a kernel may choose its path by: tensors by layout; whole numbers and flags (dims, sizes) exactly;
    floats by type alone (a learning rate changes no order of summation); lists element by element."""
    if isinstance(value, torch.Tensor):
        return _tensor_signature(value)
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    if isinstance(value, float):
        return "float"
    if isinstance(value, torch.Generator):
        return ("G", value.device.type)
    if isinstance(value, (bool, int, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return value
    return type(value).__name__


def _clone(t: torch.Tensor) -> torch.Tensor:
    """A copy of the whole storage viewed at the same strides and offset (so at the same alignment, and right for
    a broadcast view, whose elements share memory), with the same values."""
    if t.layout != torch.strided:
        return t.clone()
    size = t.untyped_storage().nbytes() // t.element_size()
    whole = t.detach().new_empty(0).set_(t.untyped_storage(), 0, (size,), (1,))
    return whole.clone().as_strided(t.shape, t.stride(), t.storage_offset())


def _generator_copy(g: torch.Generator) -> torch.Generator:
    copy = torch.Generator(device=g.device)
    copy.set_state(g.get_state())
    return copy


def _copy_tree(tree: Any) -> Any:
    def copy(value: object) -> object:
        if isinstance(value, torch.Tensor):
            return _clone(value)
        if isinstance(value, torch.Generator):
            return _generator_copy(value)
        return value

    return tree_map(copy, tree)


@dataclass
class Call:
    """One recorded operation: the function and copies of its arguments as they were when it was called."""

    func: Any
    args: tuple
    kwargs: dict


class OpRecorder(TorchDispatchMode):
    """Inside `with OpRecorder() as r:`, every aten operation torch runs (autograd's backward ones too) is kept, once
    per distinct signature, in `r.calls`. Operations are run as usual; the copies cost one per signature."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[tuple, Call] = {}
        self.active = False

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing here is compiled. Otherwise torch wraps the handler to keep its compiler out of it, and the first
        # call imports that compiler: seconds, once per process, for nothing.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        key = (str(func), _signature(args), _signature(kwargs))
        if key not in self.calls:
            self.calls[key] = Call(func, _copy_tree(args), _copy_tree(kwargs))
        return func(*args, **kwargs)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's thread count set to `count` inside the block, and set back after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _replay(call: Call, threads: int) -> list:
    """Run the call on fresh copies at `threads`; its outputs and its arguments afterwards (in-place writes)."""
    args, kwargs = _copy_tree(call.args), _copy_tree(call.kwargs)
    # A draw without a generator of its own takes torch's global one: both replays start from its present state.
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        out = call.func(*args, **kwargs)
    leaves, _ = tree_flatten((out, args, kwargs))
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bits as whole numbers of its width (NaNs and signed zeros compared exactly)."""
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.is_floating_point():
        return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(_bits(a), _bits(b)))


def differing(calls: dict[tuple, Call], threads: int) -> list[str]:
    """The operations (by name and input shapes) whose results at `threads` differ from those at one thread, or
    that could not be replayed; empty where every recorded operation gives the same bits."""
    found = []
    for key, call in calls.items():
        if call.func.__name__.split(".")[0] in UNINITIALIZED or (key, threads) in _AGREE:
            continue
        try:
            one, many = _replay(call, 1), _replay(call, threads)
            same = len(one) == len(many) and all(_same(a, b) for a, b in zip(one, many))
        except Exception:  # noqa: BLE001 - an operation that cannot be replayed is one not shown to agree
            same = False
        if same:
            _AGREE.add((key, threads))
        else:
            shapes = [tuple(t.shape) for t in tree_flatten(call.args)[0] if isinstance(t, torch.Tensor)]
            found.append(f"{call.func} {shapes}")
    return found


def same_bits(calls: dict[tuple, Call], threads: int) -> bool:
    """Whether every recorded operation gives the same bits at `threads` as at one."""
    return threads == 1 or not differing(calls, threads)
