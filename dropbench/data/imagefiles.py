"""Image tasks from the user's files: a folder of class sub-folders (torchvision's ImageFolder layout), read with
Pillow, or an .npz holding arrays.

Folders: each sub-folder of the root is a class (sorted by name: class k is the k-th folder), each image file
in it (at any depth; .png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm) an example; other files and
hidden ones are skipped. Every image must have one size unless the suite declares `size = [H, W]`, to which each
is resized (bilinear). Colour: `color = "grayscale"` or `"rgb"`; by default grayscale when every image is, RGB
otherwise (palette and alpha images are converted to RGB). Images are kept as uint8 [N, C, H, W] and normalized
per channel with the training split's statistics, as the bundled image sets are.

.npz: `x` and `y` (or the names `arrays = { x = ..., y = ... }` gives). x of [N, F] is a table of numbers
(standardized on the training split); [N, H, W] grayscale images; [N, C, H, W], or [N, H, W, C] when the last
axis has 1, 3 or 4 entries and the second does not. uint8 images are normalized per batch like the bundled ones,
other numbers are standardized per channel once. y: labels (or numbers, for a regression: the kind is inferred
as for a table's target).
"""

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import UserError
from .filetask import FileTask, check_unchanged, manifest_sha256, read_verified
from .splits import RawTask
from .tables import infer_kind

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")
CHANNEL_COUNTS = (1, 3, 4)  # how a channels-last array is recognized

if TYPE_CHECKING:
    from PIL.Image import Image


def _classes(root: Path) -> list[str]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(
            f"{root}: no class folders; an image task reads <folder>/<class>/<image> (torchvision's ImageFolder)"
        )
    return classes


def image_files(root: Path) -> list[tuple[str, Path]]:
    """(class, file) of every image under `root`, in a stable order: by class, then by path."""
    found = []
    for name in _classes(root):
        files = sorted(
            path
            for path in (root / name).rglob("*")
            if path.is_file()
            and path.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in path.relative_to(root).parts)
        )
        if not files:
            raise UserError(f"{root / name}: class folder '{name}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        found += [(name, path) for path in files]
    return found


def folder_manifest(root: Path, sha256: Callable[[Path], str]) -> list[tuple[str, str]]:
    """(relative path, SHA-256) of every image in the folder: what its checksum is made of."""
    return [(path.relative_to(root).as_posix(), sha256(path)) for _, path in image_files(root)]


def read_image_folder(
    root: str, expected: str, size: tuple[int, int] | None, color: str | None
) -> tuple[np.ndarray, list[str], list[str]]:
    """uint8 images [N, C, H, W], each image's class, and the classes in order; refused when the folder is not
    the one the suite was read with."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(root)
    entries, images, labels = [], [], []
    for name, path in image_files(folder):
        try:
            data = path.read_bytes()
            image = Image.open(io.BytesIO(data))
            image.load()
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise UserError(f"{path}: cannot read as an image: {error}") from None
        entries.append((path.relative_to(folder).as_posix(), hashlib.sha256(data).hexdigest()))
        images.append((path, image))
        labels.append(name)
    check_unchanged(root, expected, manifest_sha256(entries))
    grayscale = color == "grayscale" or (color is None and all(i.mode in GRAYSCALE_MODES for _, i in images))
    arrays = [_pixels(path, image, "L" if grayscale else "RGB", size, images[0]) for path, image in images]
    return np.stack(arrays), labels, _classes(folder)


def _pixels(
    path: Path, image: "Image", mode: str, size: tuple[int, int] | None, first: tuple[Path, "Image"]
) -> np.ndarray:
    """One image as uint8 [C, H, W] in `mode`, resized to `size` (H, W) where one is declared."""
    from PIL.Image import Resampling

    if size is not None:
        image = image.resize((size[1], size[0]), Resampling.BILINEAR)
    elif image.size != first[1].size:
        (w, h), (w0, h0) = image.size, first[1].size
        raise UserError(
            f"{path}: {h}x{w} pixels, but {first[0]} is {h0}x{w0}; images of one size, or declare size = [H, W] "
            "in the task to resize them"
        )
    pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def load_image_folder_task(task: FileTask) -> RawTask:
    """A folder's images and labels; a test folder's too, whose classes must be among the training folder's."""
    x, labels, classes = read_image_folder(task.path, task.sha256, task.size, task.color)
    if len(classes) < 2:
        raise UserError(f"{task.path}: a single class folder ('{classes[0]}'); a classification needs two or more")
    index = {name: k for k, name in enumerate(classes)}
    y = np.array([index[name] for name in labels], dtype=np.int64)
    if task.test_path is None or task.test_sha256 is None:
        return RawTask(x, y, classification=True)
    size = task.size or (x.shape[2], x.shape[3])
    color = task.color or ("grayscale" if x.shape[1] == 1 else "rgb")
    x_test, test_labels, test_classes = read_image_folder(task.test_path, task.test_sha256, size, color)
    unknown = [name for name in test_classes if name not in index]
    if unknown:
        raise UserError(f"{task.test_path}: class folder '{unknown[0]}' is not a class of {task.path}")
    y_test = np.array([index[name] for name in test_labels], dtype=np.int64)
    return RawTask(x, y, x_test, y_test, classification=True)


# ---------------------------------------------------------------- .npz


def _array(arrays: np.lib.npyio.NpzFile, key: str, path: str) -> np.ndarray:
    if key not in arrays.files:
        raise UserError(
            f"{path}: no array '{key}'; it holds {', '.join(arrays.files) or 'none'} (name them with "
            "arrays = { x = '...', y = '...' })"
        )
    try:
        return arrays[key]
    except ValueError as error:  # an object array: never unpickled
        raise UserError(f"{path}: array '{key}': {error}") from None


def read_npz(path: str, expected: str, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and targets of an .npz (verified against its checksum), as the module's doc says."""
    data = read_verified(path, expected)
    try:
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: cannot read as .npz: {error}") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: a single array (.npy), not an .npz of named arrays")
    x, y = _array(arrays, x_key, path), _array(arrays, y_key, path)
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(
            f"{path}: '{y_key}' has shape {list(y.shape)}; expected one value per row of '{x_key}' ({len(x)})"
        )
    if len(x) == 0:
        raise UserError(f"{path}: '{x_key}' has no rows")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise UserError(f"{path}: '{x_key}' holds {x.dtype}; inputs are numbers")
    if x.ndim not in (2, 3, 4):
        raise UserError(f"{path}: '{x_key}' has shape {list(x.shape)}; expected [N, F], [N, H, W] or [N, C, H, W]")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise UserError(f"{path}: '{x_key}' has missing or infinite values; fill them (or use a table file)")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in CHANNEL_COUNTS and x.shape[1] not in CHANNEL_COUNTS:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # channels last: as torch wants them, first
    return x, y


def load_npz_task(task: FileTask) -> RawTask:
    x, y = read_npz(task.path, task.sha256, task.x_key, task.y_key)
    x_test = y_test = None
    if task.test_path is not None and task.test_sha256 is not None:
        x_test, y_test = read_npz(task.test_path, task.test_sha256, task.x_key, task.y_key)
        if x_test.shape[1:] != x.shape[1:]:
            raise UserError(
                f"{task.test_path}: inputs of shape {list(x_test.shape[1:])}, {task.path}'s are {list(x.shape[1:])}"
            )
    target = pd.Series(y, name=task.y_key)
    where = f"{task.path}: '{task.y_key}' (the target)"
    if target.isna().any():
        raise UserError(f"{where} has {int(target.isna().sum())} missing values; remove those rows")
    kind = task.kind or infer_kind(target)
    if kind == "regression":
        if not np.issubdtype(y.dtype, np.number):
            raise UserError(f"{where} holds {y.dtype}; a regression needs numbers")
        if np.ptp(y.astype(np.float64)) == 0:
            raise UserError(f"{where} is constant; there is nothing to learn")
        return RawTask(x, y.astype(np.float32), x_test, None if y_test is None else y_test.astype(np.float32), False)
    if target.nunique() < 2:
        raise UserError(f"{where} has a single class ({y[0]!r}); a classification needs two or more")
    return RawTask(x, y, x_test, y_test, classification=True)
