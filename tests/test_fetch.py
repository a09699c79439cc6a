"""Fetching against a real HTTP server on 127.0.0.1 serving files in the real formats."""

import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from dropbench.data.cifar import write_cifar10_batch
from dropbench.data.fetch import Archive, DataFile, DataSource, ensure_source, source_status
from dropbench.data.idx import write_idx
from dropbench.data.images import load_cifar10_task, load_idx_task
from dropbench.data.sources import FASHION_MNIST
from dropbench.errors import UserError

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def dead_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more: connection refused


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def make_idx_files(folder, n_train=120, n_test=40):
    """The four MNIST files, small, written in the real IDX format; returns their DataFiles."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    files = []
    for name, array in arrays.items():
        write_idx(folder / name, array, compress=True)
        served = (folder / name).read_bytes()
        files.append(DataFile(name, sha256(gzip.decompress(served)), f"sha256:{sha256(served)}"))
    return tuple(files)


def test_download_verifies_and_loads(server, tmp_path, monkeypatch):
    www, url = server
    (www / "mnist").mkdir()
    files = make_idx_files(www / "mnist")
    source = DataSource("toy", "toy", files, mirrors=(url + "mnist/",))
    data = tmp_path / "data"
    paths = ensure_source(source, data)
    assert all(p.parent == data / "toy" for p in paths.values())
    monkeypatch.setenv("DROPBENCH_DATA", str(data))
    raw = load_idx_task(source)
    assert raw.x.shape == (120, 1, 28, 28) and raw.x_test.shape == (40, 1, 28, 28)
    assert source_status(source, data) == "present"


def test_a_dead_mirror_and_a_missing_file_are_skipped_for_the_next(server, tmp_path):
    www, url = server
    (www / "good").mkdir()
    files = make_idx_files(www / "good")
    source = DataSource("toy", "toy", files, mirrors=(dead_url(), url + "absent/", url + "good/"))
    logged = []
    ensure_source(source, tmp_path / "data", log=logged.append)
    assert any("absent/" in line for line in logged) and any("good/" in line for line in logged)
    assert sorted(p.name for p in (tmp_path / "data" / "toy").iterdir()) == sorted(IDX_NAMES)


def test_a_mismatching_download_is_refused_and_leaves_nothing(server, tmp_path):
    www, url = server
    (www / "bad").mkdir()
    files = make_idx_files(www / "bad")
    tampered = (www / "bad" / IDX_NAMES[1]).read_bytes()[:-4]  # truncated in transit
    (www / "bad" / IDX_NAMES[1]).write_bytes(tampered)
    source = DataSource("toy", "toy", files, mirrors=(url + "bad/",))
    with pytest.raises(UserError) as error:
        ensure_source(source, tmp_path / "data")
    assert IDX_NAMES[1] in str(error.value) and "hash" in str(error.value).lower()
    left = [p.name for p in (tmp_path / "data" / "toy").iterdir()]
    assert IDX_NAMES[1] not in left and not [n for n in left if n.startswith("tmp")]


def test_offline_names_the_missing_file_and_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPBENCH_OFFLINE", "1")
    files = make_idx_files(tmp_path)
    source = DataSource("toy", "toy", files, mirrors=("http://never.invalid/",), system_dirs=("/nowhere",))
    with pytest.raises(UserError) as error:
        ensure_source(source, tmp_path / "data")
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz not found" in message
    assert str(tmp_path / "data" / "toy") in message and "/nowhere" in message and "dropbench download toy" in message


def test_a_present_file_is_checked_by_its_content(tmp_path):
    files = make_idx_files(tmp_path / "data" / "toy")
    source = DataSource("toy", "toy", files, mirrors=())
    # The same content under another gzip header (another mtime and no file name) is accepted...
    path = tmp_path / "data" / "toy" / IDX_NAMES[3]
    content = gzip.decompress(path.read_bytes())
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=123456789, filename="") as f:
        f.write(content)
    path.write_bytes(buffer.getvalue())
    assert ensure_source(source, tmp_path / "data")[IDX_NAMES[3]] == path
    # ...and other content is refused with both checksums.
    path.write_bytes(gzip.compress(content[:-1] + b"\x07"))
    with pytest.raises(UserError) as error:
        ensure_source(source, tmp_path / "data")
    assert str(path) in str(error.value)
    assert files[3].content_sha256 in str(error.value) and sha256(content[:-1] + b"\x07") in str(error.value)


def test_unpacked_idx_files_are_accepted_too(tmp_path):
    files = make_idx_files(tmp_path / "src")
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    for name in IDX_NAMES:
        (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress((tmp_path / "src" / name).read_bytes()))
    paths = ensure_source(DataSource("toy", "toy", files, mirrors=()), tmp_path / "data")
    assert all(p.suffix != ".gz" for p in paths.values())


def make_cifar_archive(path, extra_members=()):
    rng = np.random.default_rng(1)
    files = []
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            tmp = path.parent / name
            write_cifar10_batch(tmp, rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), np.arange(20) % 10)
            data = tmp.read_bytes()
            info = tarfile.TarInfo("cifar-10-batches-bin/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            files.append(DataFile(name, sha256(data)))
        for member, data in extra_members:
            tar.addfile(member, io.BytesIO(data) if data else None)
    return tuple(files)


def test_archive_members_are_extracted_safely(server, tmp_path, monkeypatch):
    www, url = server
    evil = tarfile.TarInfo("cifar-10-batches-bin/../../evil.bin")
    evil.size = 4
    absolute = tarfile.TarInfo(str(tmp_path / "absolute.bin"))
    absolute.size = 4
    link = tarfile.TarInfo("cifar-10-batches-bin/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    files = make_cifar_archive(www / "cifar-10-binary.tar.gz", [(evil, b"evil"), (absolute, b"evil"), (link, b"")])
    archive_hash = "sha256:" + sha256((www / "cifar-10-binary.tar.gz").read_bytes())
    source = DataSource(
        "toy-cifar",
        "cifar10",
        files,
        mirrors=(url,),
        archive=Archive("cifar-10-binary.tar.gz", archive_hash, "cifar-10-batches-bin/"),
    )
    data = tmp_path / "data"
    ensure_source(source, data)
    inside = sorted(p.name for p in (data / "cifar10").iterdir() if not p.name.startswith("cifar-10-binary"))
    assert inside == sorted(f.name for f in files)
    assert not list(tmp_path.rglob("evil.bin")) and not (tmp_path / "absolute.bin").exists()
    assert not (data / "cifar10" / "link").exists()
    monkeypatch.setenv("DROPBENCH_DATA", str(data))
    raw = load_cifar10_task(source)
    assert raw.x.shape == (100, 3, 32, 32) and raw.x_test.shape == (20, 3, 32, 32)


def test_an_archive_member_that_is_a_link_is_refused(server, tmp_path):
    www, url = server
    files = make_cifar_archive(www / "a.tar.gz")
    # Rebuild the archive with test_batch.bin as a symlink.
    with tarfile.open(www / "a.tar.gz") as src, tarfile.open(www / "b.tar.gz", "w:gz") as dst:
        for member in src.getmembers():
            if member.name.endswith("test_batch.bin"):
                member.type, member.linkname, member.size = tarfile.SYMTYPE, "/etc/passwd", 0
                dst.addfile(member)
            else:
                dst.addfile(member, src.extractfile(member))
    digest = "sha256:" + sha256((www / "b.tar.gz").read_bytes())
    source = DataSource(
        "toy-cifar", "cifar10", files, mirrors=(url,), archive=Archive("b.tar.gz", digest, "cifar-10-batches-bin/")
    )
    with pytest.raises(UserError, match="not a regular file"):
        ensure_source(source, tmp_path / "data")


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debians_fashion_mnist_is_found_and_verified(tmp_path):
    paths = ensure_source(FASHION_MNIST, tmp_path / "empty-data-dir")
    assert all(p.parent == FASHION_DIR for p in paths.values())
    assert source_status(FASHION_MNIST, tmp_path / "empty-data-dir") == "system copy"
