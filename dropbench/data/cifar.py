"""CIFAR-10, binary version (cifar-10-binary.tar.gz): read and write its batch files.

Each record is 1 label byte then 3072 pixel bytes: 1024 red, 1024 green, 1024 blue, each a 32x32 image in
row-major order. The official files hold 10,000 records each (data_batch_1.bin ... data_batch_5.bin,
test_batch.bin); any whole number of records, at least one, is accepted. The python version of CIFAR-10 is
pickled and deliberately not supported: a download must never be unpickled.

Every problem with a file is a UserError whose message starts with the file's path.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["CIFAR10_CLASSES", "RECORD_BYTES", "read_cifar10", "read_cifar10_batch", "write_cifar10_batch"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 3073  # 1 label byte + 3 * 32 * 32 pixel bytes


def _hint(data: bytes) -> str:
    """A guess at what a file that is not a CIFAR-10 binary batch is, for the error message."""
    if data.startswith(b"\x1f\x8b"):
        return "; it looks gzip-compressed: unpack cifar-10-binary.tar.gz and pass the .bin files"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "; it looks like a pickle (the python version of CIFAR-10, not supported): use the binary version"
    return ""


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary batch: images [N, 3, 32, 32] uint8 (channel-first, as stored) and labels [N] uint8.

    Both arrays are contiguous, writable copies. Raises UserError for an empty file, a length that is not a
    whole number of 3073-byte records, or a label outside 0..9.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if not data:
        raise UserError(f"{path}: the file is empty, expected CIFAR-10 records of {RECORD_BYTES} bytes")
    n, extra = divmod(len(data), RECORD_BYTES)
    if extra:
        raise UserError(
            f"{path}: the file holds {len(data)} bytes, not a whole number of {RECORD_BYTES}-byte CIFAR-10 records "
            f"(1 label byte + 3072 pixel bytes): {n} records and {extra} bytes left over (truncated?){_hint(data)}"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(n, RECORD_BYTES)
    labels = records[:, 0].copy()
    bad = np.flatnonzero(labels >= len(CIFAR10_CLASSES))
    if len(bad):
        i = int(bad[0])
        raise UserError(
            f"{path}: record {i} (byte offset {i * RECORD_BYTES}) has label {int(labels[i])}, expected 0..9 "
            f"({len(bad)} of {n} records out of range; not a CIFAR-10 binary batch?){_hint(data)}"
        )
    images = np.ascontiguousarray(records[:, 1:]).reshape(n, *IMAGE_SHAPE)
    return images, labels


def read_cifar10(paths: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read several binary batches, in the order given, and concatenate them."""
    if isinstance(paths, str | Path):
        raise TypeError("read_cifar10 takes a sequence of paths; use read_cifar10_batch for one file")
    if not paths:
        raise UserError("no CIFAR-10 batch files given, expected at least one (e.g. data_batch_1.bin)")
    batches = [read_cifar10_batch(p) for p in paths]
    if len(batches) == 1:
        return batches[0]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def write_cifar10_batch(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images [N, 3, 32, 32] uint8 and labels [N] (0..255) as a CIFAR-10 binary batch file."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"images must be uint8 [N, 3, 32, 32], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must fit in one byte (0..255)")
    records = np.empty((len(images), RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = labels
    records[:, 1:] = images.reshape(len(images), -1)
    Path(path).write_bytes(records.tobytes())
