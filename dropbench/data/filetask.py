"""Tasks read from the user's own files, declared in a suite: a CSV or Parquet table, a folder of images in
class sub-folders (torchvision's ImageFolder layout), or an .npz of arrays.

A `FileTask` is the whole description (resolved paths, settings, the files' SHA-256), so it travels with every
cell to pool workers and Ray tasks, which read the files themselves; the checksums enter the cell's identity, so
a changed file makes other cells, and a worker that reads other bytes than the suite's stops the run.
"""

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeAlias

from ..errors import UserError
from .registry import TaskInfo
from .splits import RawTask, SplitSpec

FORMATS = ("csv", "parquet", "images", "npz")
TABULAR = ("csv", "parquet")
KINDS = ("classification", "regression")
COLORS = ("rgb", "grayscale")
# A file's format from its suffixes; a compressed CSV keeps its own (pandas reads gzip, bz2, zip and xz).
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz"}
CHUNK = 1 << 20  # bytes read at a time while hashing


@dataclass(frozen=True)
class FileTask:
    """A task from files: `path` (absolute) and its `sha256` (of the file, or of an image folder's manifest),
    an optional test file of the same form, and how to read them. Splits: `val` and `test` as fractions of the
    rows (float) or counts (int), stratified for classification; `test` None when `test_path` gives the test set."""

    name: str
    path: str
    format: str
    sha256: str
    test_path: str | None = None
    test_sha256: str | None = None
    val: float | int = 0.2
    test: float | int | None = 0.2
    target: str | None = None  # tables: the target column
    features: tuple[str, ...] | None = None  # tables: the feature columns; None: every other column
    kind: str | None = None  # "classification" or "regression"; None: inferred from the target
    size: tuple[int, int] | None = None  # images: resized to [H, W]; None: all must have one size
    color: str | None = None  # images: "rgb" or "grayscale"; None: grayscale when every image is
    x_key: str = "x"  # npz: the arrays' names
    y_key: str = "y"

    def identity(self) -> dict[str, object]:
        """What defines the data, for the cell's identity: the content (checksums) and every reading setting,
        not where the files lie (a moved file is the same data)."""
        identity: dict[str, object] = {"format": self.format, "sha256": self.sha256, "val": self.val}
        optional = {
            "test_sha256": self.test_sha256,
            "test": self.test,
            "target": self.target,
            "features": list(self.features) if self.features is not None else None,
            "kind": self.kind,
            "size": list(self.size) if self.size is not None else None,
            "color": self.color,
        }
        identity.update({key: value for key, value in optional.items() if value is not None})
        if self.format == "npz":
            identity.update(x_key=self.x_key, y_key=self.y_key)
        return identity

    def checksums(self) -> dict[str, str]:
        """The SHA-256 of each file (an image folder's: of its manifest), by path, for the run's provenance."""
        found = {self.path: self.sha256}
        if self.test_path is not None and self.test_sha256 is not None:
            found[self.test_path] = self.test_sha256
        return found

    def info(self) -> TaskInfo:
        """The task as the registry describes one."""
        kind = "classification" if self.format == "images" else self.kind or "from its target"
        return TaskInfo(
            name=self.name,
            kind=kind,
            summary=f"{self.format} from {self.path}",
            origin=self.path,
            load=partial(load_file_task, self),
            split=SplitSpec(val=self.val, test=self.test),
        )


TaskKey: TypeAlias = "str | FileTask"


def load_file_task(task: FileTask) -> RawTask:
    """Every row of the task's files, as its format's reader gives them (imported here: pandas, Pillow)."""
    if task.format in TABULAR:
        from .tables import load_table_task

        return load_table_task(task)
    from .imagefiles import load_image_folder_task, load_npz_task

    return load_image_folder_task(task) if task.format == "images" else load_npz_task(task)


# ---------------------------------------------------------------- declaring one (the suite's [[task]] with a path)


def detect_format(path: Path, declared: str | None, where: str) -> str:
    """The format of `path`: declared, or a folder's ("images"), or from the suffix."""
    if declared is not None:
        return declared
    if path.is_dir():
        return "images"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    found = SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    if found is None:
        known = ", ".join(SUFFIX_FORMATS)
        raise UserError(
            f"{where}: cannot tell the format of {path} from its name (known: {known}, a folder of images); "
            f"give format = one of {', '.join(FORMATS)}"
        )
    return found


def check_exists(path: Path, format: str, where: str) -> None:
    """A missing file or folder, or one of the wrong sort, named with what is expected."""
    if not path.exists():
        raise UserError(f"{where}: {path}: no such file or folder")
    if format == "images" and not path.is_dir():
        raise UserError(f"{where}: {path}: an image task reads a folder of class sub-folders, not a file")
    if format != "images" and not path.is_file():
        raise UserError(f"{where}: {path}: a {format} task reads a file, not a folder")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror or error}") from None
    return digest.hexdigest()


def content_sha256(path: Path, format: str) -> str:
    """What identifies the data at `path`: a file's SHA-256, or an image folder's manifest's."""
    if format == "images":
        from .imagefiles import folder_manifest

        return manifest_sha256(folder_manifest(path, file_sha256))
    return file_sha256(path)


def manifest_sha256(entries: list[tuple[str, str]]) -> str:
    """The SHA-256 of an image folder's manifest: one 'relative/path<TAB>sha256' line per image, sorted."""
    text = "".join(f"{name}\t{sha}\n" for name, sha in sorted(entries))
    return hashlib.sha256(text.encode()).hexdigest()


def read_verified(path: str, expected: str) -> bytes:
    """A file's bytes, refused when they are not the ones the suite was read with (it changed meanwhile)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror or error}") from None
    check_unchanged(path, expected, hashlib.sha256(data).hexdigest())
    return data


def check_unchanged(path: str, expected: str, found: str) -> None:
    if found != expected:
        raise UserError(
            f"{path}: changed since the suite was read (sha256 {expected[:12]}… then, {found[:12]}… now); "
            "run again to train on the new data (as new cells)"
        )


def compression(path: str) -> str | None:
    """pandas' compression for a file name (None: not compressed)."""
    return COMPRESSIONS.get(Path(path).suffix.lower())
