"""The IDX format of MNIST and Fashion-MNIST: read (gzip or raw, validated) and write.

Layout, all big-endian: two zero bytes, one type byte (only 0x08, unsigned byte, is supported), one byte giving
the number of dimensions, one uint32 per dimension, then the data in row-major order. Image files have magic
0x00000803 (count, rows, cols), label files 0x00000801 (count). A file is gzip-compressed when it starts with
the gzip magic bytes 0x1f 0x8b, whatever its name; it is then decompressed whole in memory.

Every problem with a file is a UserError whose message starts with the file's path.
"""

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["read_idx", "read_idx_images", "read_idx_labels", "read_idx_pair", "write_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
# The type codes of the IDX specification, named in errors; only 0x08 is read.
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_KIND = {3: "uint8 images", 1: "uint8 labels"}


def _load_bytes(path: Path) -> tuple[bytes, bool]:
    """The file's content, decompressed when it starts with the gzip magic; and whether it was compressed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw, False
    try:
        return gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut stream is an EOFError
        raise UserError(
            f"{path}: corrupt gzip data ({len(raw)} compressed bytes): {exc or type(exc).__name__} "
            "(truncated or damaged download?)"
        ) from None


def _describe(dims: tuple[int, ...]) -> str:
    if len(dims) == 1:
        return f"{dims[0]} items"
    return f"{dims[0]} items of {'x'.join(map(str, dims[1:]))}"


def _parse(path: Path, expected_ndim: int | None) -> np.ndarray:
    data, compressed = _load_bytes(path)
    holds = "the decompressed file holds" if compressed else "the file holds"
    want = (
        f"0x{0x800 + expected_ndim:08x} ({_KIND[expected_ndim]})"
        if expected_ndim in _KIND
        else "0x000008NN (two zero bytes, type 0x08, number of dimensions)"
    )
    if len(data) < 4:
        raise UserError(f"{path}: not an IDX file: {holds} {len(data)} bytes, fewer than the 4-byte magic {want}")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0:
        raise UserError(f"{path}: not an IDX file: magic 0x{magic:08x}, expected {want}")
    if type_code not in _TYPE_NAMES:
        raise UserError(
            f"{path}: not an IDX file: magic 0x{magic:08x}, expected {want}; "
            f"type code 0x{type_code:02x} is not an IDX data type"
        )
    if type_code != _UBYTE:
        raise UserError(
            f"{path}: unsupported IDX data type 0x{type_code:02x} ({_TYPE_NAMES[type_code]}) in magic 0x{magic:08x}, "
            "expected 0x08 (unsigned byte)"
        )
    if ndim == 0:
        raise UserError(f"{path}: IDX header declares 0 dimensions (magic 0x{magic:08x}), expected {want}")
    if expected_ndim is not None and ndim != expected_ndim:
        found = _KIND.get(ndim, f"uint8, {ndim} dimensions")
        raise UserError(f"{path}: wrong kind of IDX file: magic 0x{magic:08x} ({found}), expected {want}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise UserError(
            f"{path}: IDX header declares {ndim} dimensions ({header_len} header bytes) but {holds} only "
            f"{len(data)} bytes (truncated?)"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if 0 in dims:
        raise UserError(f"{path}: IDX header gives shape {dims}: every dimension must be at least 1")
    expected = header_len + math.prod(dims)
    if len(data) != expected:
        problem = "truncated?" if len(data) < expected else f"{len(data) - expected} trailing bytes"
        raise UserError(
            f"{path}: header says {_describe(dims)} ({expected} bytes) but {holds} {len(data)} bytes ({problem})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Read any uint8 IDX file (gzip or raw) as an array of the header's shape.

    The array is a read-only view of the file's bytes (no copy); call ``.copy()`` for a writable one.
    Raises UserError for a bad magic, a type other than 0x08, no dimensions, a header cut short, or data
    that are shorter (truncated) or longer (trailing bytes) than the dimensions say.
    """
    return _parse(Path(path), None)


def read_idx_images(path: str | Path) -> np.ndarray:
    """Read an IDX image file (magic 0x00000803) as a read-only [N, rows, cols] uint8 array."""
    return _parse(Path(path), 3)


def read_idx_labels(path: str | Path, num_classes: int | None = 10) -> np.ndarray:
    """Read an IDX label file (magic 0x00000801) as a read-only [N] uint8 array.

    With num_classes, every label must be below it (a UserError names the first bad one); None skips the check.
    """
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    path = Path(path)
    labels = _parse(path, 1)
    if num_classes is not None:
        bad = np.flatnonzero(labels >= num_classes)
        if len(bad):
            i = int(bad[0])
            raise UserError(
                f"{path}: label {int(labels[i])} at index {i} is out of range, expected 0..{num_classes - 1} "
                f"({len(bad)} of {len(labels)} labels out of range)"
            )
    return labels


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path, num_classes: int | None = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files; a UserError when their counts differ."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path, num_classes)
    if len(images) != len(labels):
        raise UserError(
            f"{images_path}: holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "expected the same count (files from different sets?)"
        )
    return images, labels


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool) -> None:
    """Write a uint8 array in the IDX format, gzip-compressed (reproducibly, mtime 0) when compress."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 arrays only, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX dimensions must fit in uint32, got shape {array.shape}")
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)
