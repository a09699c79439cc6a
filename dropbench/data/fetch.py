"""Finding, verifying and downloading data files.

Where files live: `--data-dir`, else `$DROPBENCH_DATA`, else the user cache dir; inside it one folder
per source (`mnist/`, `fashion-mnist/`, `cifar10/`), laid out as the official archives unpack, so a
folder of official files works as a data dir as it is. A source may also name system folders where a
distribution installs the files (Debian's /usr/share/datasets/fashion-mnist).

A file is accepted when the SHA-256 of its *content* (after gunzip) matches the registry: a copy whose
gzip header was rewritten is accepted, a corrupt or different one is refused with both checksums.
Downloads go through pooch: each mirror in turn, the file as served checked against its published
hash, written to a temporary name and moved into place only when it matches, so no half-written file
is ever left in the cache. `--offline` (or DROPBENCH_OFFLINE=1) never touches the network.
"""

import gzip
import hashlib
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import platformdirs

from ..errors import UserError

DATA_ENV = "DROPBENCH_DATA"
OFFLINE_ENV = "DROPBENCH_OFFLINE"
GZIP_MAGIC = b"\x1f\x8b"
DOWNLOAD_TIMEOUT_S = 60  # per request; a mirror that does not answer in a minute is skipped

Log = Callable[[str], None]


@dataclass(frozen=True)
class DataFile:
    name: str  # the canonical file name in the source's folder
    content_sha256: str  # SHA-256 of the content after gunzip (of the file itself when not compressed)
    download_hash: str = ""  # pooch's form ("sha256:…" / "md5:…") of the file as served; "" for archive members


@dataclass(frozen=True)
class Archive:
    """Files that are published only inside a .tar.gz: fetched once, then the members are extracted."""

    name: str
    download_hash: str
    member_prefix: str  # the folder inside the archive that holds the files


@dataclass(frozen=True)
class DataSource:
    name: str
    folder: str
    files: tuple[DataFile, ...]
    mirrors: tuple[str, ...]  # base URLs, tried in order; a file's URL is mirror + name
    archive: Archive | None = None
    system_dirs: tuple[str, ...] = field(default=())


def data_dir(explicit: str | Path | None = None) -> Path:
    """--data-dir, else $DROPBENCH_DATA, else the user cache dir (e.g. ~/.cache/dropbench)."""
    chosen = explicit or os.environ.get(DATA_ENV) or platformdirs.user_cache_dir("dropbench")
    return Path(chosen).expanduser()


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def use_data_settings(directory: Path | None, offline: bool) -> None:
    """Make --data-dir and --offline this process's settings. They go into its environment, the one place
    worker processes (spawned, or Ray tasks started from here) read them from, as they read the variables."""
    if directory is not None:
        os.environ[DATA_ENV] = str(directory)
    if offline:
        os.environ[OFFLINE_ENV] = "1"


def candidate_paths(source: DataSource, file: DataFile, root: Path) -> list[Path]:
    """Where a file may be: the data dir (gzip or unpacked), then system folders."""
    folder = root / source.folder
    paths = [folder / file.name]
    if file.name.endswith(".gz"):
        paths.append(folder / file.name.removesuffix(".gz"))
    paths += [Path(d) / file.name for d in source.system_dirs]
    return paths


def locate(source: DataSource, file: DataFile, root: Path) -> Path | None:
    return next((p for p in candidate_paths(source, file, root) if p.is_file()), None)


def read_content(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (recognised by its magic bytes, not its name)."""
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path}: corrupt or truncated gzip data ({error}); delete it and download again") from None


def verified_content(path: Path, file: DataFile, source: DataSource) -> bytes:
    """The content of `path`, refused unless its SHA-256 is the registered one."""
    content = read_content(path)
    found = hashlib.sha256(content).hexdigest()
    if found != file.content_sha256:
        raise UserError(
            f"{path}: checksum mismatch for {source.name} {file.name}: expected content sha256 "
            f"{file.content_sha256}, found {found}; delete it and run 'dropbench download {source.name}'"
        )
    return content


@lru_cache(maxsize=32)
def _verified_once(path: Path, size: int, mtime_ns: int, expected: str) -> bool:  # noqa: ARG001 - cache key
    """Checked once per process per file version: size and mtime are part of the cache key."""
    content = read_content(path)
    return hashlib.sha256(content).hexdigest() == expected


def _missing(source: DataSource, file: DataFile, root: Path) -> UserError:
    looked = ", ".join(dict.fromkeys(str(p.parent) for p in candidate_paths(source, file, root)))
    return UserError(
        f"{source.name}: {file.name} not found (looked in {looked}) and offline mode forbids downloading; "
        f"run 'dropbench download {source.name}' where the network is reachable, or point --data-dir "
        f"(or {DATA_ENV}) at a folder holding {source.folder}/"
    )


def _download(url_name: str, known_hash: str, folder: Path, mirrors: tuple[str, ...], log: Log) -> Path:
    """Fetch one file into `folder`, trying each mirror in turn; pooch checks the hash before moving it in."""
    import pooch

    logging.getLogger("pooch").setLevel(logging.WARNING)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the data folder {folder}: {error}") from None
    failures = []
    for mirror in mirrors:
        url = mirror + url_name
        log(f"downloading {url}")
        try:
            path = pooch.retrieve(
                url,
                known_hash=known_hash,
                fname=url_name,
                path=folder,
                downloader=pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S),
            )
            return Path(path)
        except Exception as error:  # noqa: BLE001 - network, HTTP and hash errors alike move on to the next mirror
            failures.append(f"{url}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    raise UserError(f"could not download {url_name}: " + "; ".join(failures))


def _extract(archive_path: Path, source: DataSource, wanted: list[DataFile], folder: Path) -> None:
    """Copy the wanted members out of the archive by name, never with extractall.

    Each member is looked up by its exact expected name and must be a regular file; its bytes are
    written to a path we choose inside `folder`, so no member can land outside it whatever names,
    links or absolute paths the archive holds.
    """
    assert source.archive is not None
    try:
        with tarfile.open(archive_path, "r:gz") as tar:
            for file in wanted:
                name = source.archive.member_prefix + file.name
                try:
                    member = tar.getmember(name)
                except KeyError:
                    raise UserError(f"{archive_path}: has no member {name}") from None
                if not member.isfile():
                    raise UserError(f"{archive_path}: member {name} is not a regular file; refusing it")
                target = folder / file.name
                partial = folder / f".{file.name}.part"
                extracted = tar.extractfile(member)
                if extracted is None:  # only for members that are not files, refused above
                    raise UserError(f"{archive_path}: member {name} is not a regular file; refusing it")
                with extracted as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if hashlib.sha256(partial.read_bytes()).hexdigest() != file.content_sha256:
                    partial.unlink()
                    raise UserError(f"{archive_path}: member {name} does not match its published checksum")
                os.replace(partial, target)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise UserError(f"{archive_path}: cannot read the archive ({error})") from None


def ensure_source(source: DataSource, root: Path | None = None, *, log: Log | None = None) -> dict[str, Path]:
    """Every file of `source`, verified; missing ones downloaded unless offline. Returns name -> path."""
    root = data_dir(root)
    log = log or (lambda message: None)
    found: dict[str, Path] = {}
    missing: list[DataFile] = []
    for file in source.files:
        path = locate(source, file, root)
        if path is None:
            missing.append(file)
            continue
        stat = path.stat()
        if not _verified_once(path, stat.st_size, stat.st_mtime_ns, file.content_sha256):
            verified_content(path, file, source)  # raises with both checksums
        found[file.name] = path
    if not missing:
        return found
    if offline():
        raise _missing(source, missing[0], root)
    folder = root / source.folder
    if source.archive is not None:
        archive = _download(source.archive.name, source.archive.download_hash, folder, source.mirrors, log)
        _extract(archive, source, missing, folder)
        for file in missing:
            found[file.name] = folder / file.name
    else:
        for file in missing:
            path = _download(file.name, file.download_hash, folder, source.mirrors, log)
            verified_content(path, file, source)
            found[file.name] = path
    return found


def source_status(source: DataSource, root: Path | None = None) -> str:
    """'present', 'system copy', 'partial' or 'missing', from file presence alone (no checksum)."""
    root = data_dir(root)
    paths = [locate(source, f, root) for f in source.files]
    if not any(paths):
        return "missing"
    if not all(paths):
        return "partial"
    in_root = all(str(p).startswith(str(root)) for p in paths if p)
    return "present" if in_root else "system copy"
