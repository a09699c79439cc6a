"""The IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary parsers, on files written in the real formats."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from dropbench.data.cifar import (
    CIFAR10_CLASSES,
    RECORD_BYTES,
    read_cifar10,
    read_cifar10_batch,
    write_cifar10_batch,
)
from dropbench.data.idx import read_idx, read_idx_images, read_idx_labels, read_idx_pair, write_idx
from dropbench.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _images(n=5, rows=4, cols=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, rows, cols), dtype=np.uint8)


def _labels(n=5, seed=0):
    return np.random.default_rng(seed).integers(0, 10, size=n, dtype=np.uint8)


def _idx_bytes(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def _raises(func, *args, path, phrase, **kw):
    with pytest.raises(UserError) as info:
        func(*args, **kw)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert phrase in message, message
    return message


# ---- IDX ----


@pytest.mark.parametrize("compress", [False, True])
def test_idx_images_and_labels_round_trip(tmp_path, compress):
    images, labels = _images(), _labels()
    write_idx(tmp_path / "img", images, compress=compress)
    write_idx(tmp_path / "lab", labels, compress=compress)
    got_images, got_labels = read_idx_pair(tmp_path / "img", tmp_path / "lab")
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 4, 3)
    assert got_labels.dtype == np.uint8 and got_labels.shape == (5,)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_write_idx_writes_the_real_format(tmp_path):
    images = _images(n=2, rows=3, cols=2)
    write_idx(tmp_path / "raw", images, compress=False)
    write_idx(tmp_path / "gz", images, compress=True)
    expected = bytes.fromhex("00000803 00000002 00000003 00000002") + images.tobytes()
    assert (tmp_path / "raw").read_bytes() == expected
    assert (tmp_path / "gz").read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress((tmp_path / "gz").read_bytes()) == expected


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    labels = _labels()
    write_idx(tmp_path / "labels.idx", labels, compress=True)  # compressed, no .gz
    write_idx(tmp_path / "labels.gz", labels, compress=False)  # raw, named .gz
    np.testing.assert_array_equal(read_idx_labels(tmp_path / "labels.idx"), labels)
    np.testing.assert_array_equal(read_idx_labels(tmp_path / "labels.gz"), labels)


def test_read_idx_keeps_any_number_of_dimensions(tmp_path):
    cube = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    write_idx(tmp_path / "cube", cube, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "cube"), cube)


def test_bad_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(0x12340803, (1, 1, 1), b"\x00"))
    _raises(read_idx_images, path, path=path, phrase="not an IDX file: magic 0x12340803, expected 0x00000803")
    path.write_bytes(bytes(16))  # all zeros: type code 0x00 is no IDX type
    message = _raises(read_idx, path, path=path, phrase="not an IDX file: magic 0x00000000")
    assert "0x00" in message


def test_labels_file_read_as_images_names_both_magics(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(path, _labels(), compress=False)
    message = _raises(read_idx_images, path, path=path, phrase="magic 0x00000801")
    assert "expected 0x00000803 (uint8 images)" in message
    write_idx(path, _images(), compress=True)
    _raises(read_idx_labels, path, path=path, phrase="expected 0x00000801 (uint8 labels)")


@pytest.mark.parametrize("code, name", [(0x0D, "float32"), (0x0B, "int16"), (0x09, "signed byte")])
def test_unsupported_type_code(tmp_path, code, name):
    path = tmp_path / "floats"
    path.write_bytes(_idx_bytes(0x00000001 | code << 8, (2,), bytes(8)))
    message = _raises(read_idx, path, path=path, phrase=f"unsupported IDX data type 0x{code:02x} ({name})")
    assert "expected 0x08" in message


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data(tmp_path, compress):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    data = _idx_bytes(0x00000801, (10000,), bytes(5000))
    path.write_bytes(gzip.compress(data) if compress else data)
    message = _raises(read_idx_labels, path, path=path, phrase="header says 10000 items (10008 bytes)")
    assert "5008 bytes (truncated?)" in message


def test_truncated_images_name_the_shape(tmp_path):
    path = tmp_path / "img"
    path.write_bytes(_idx_bytes(0x00000803, (3, 28, 28), bytes(28 * 28 * 2)))
    _raises(read_idx_images, path, path=path, phrase="header says 3 items of 28x28 (2368 bytes)")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "lab"
    path.write_bytes(_idx_bytes(0x00000801, (4,), bytes(7)))
    _raises(read_idx_labels, path, path=path, phrase="(3 trailing bytes)")


def test_header_shorter_than_its_dimensions(tmp_path):
    path = tmp_path / "img"
    path.write_bytes(_idx_bytes(0x00000803, (60000, 28), b""))  # third dimension missing
    _raises(read_idx_images, path, path=path, phrase="declares 3 dimensions (16 header bytes)")
    path.write_bytes(b"\x00\x00")
    _raises(read_idx, path, path=path, phrase="fewer than the 4-byte magic")
    path.write_bytes(b"")
    _raises(read_idx, path, path=path, phrase="0 bytes")


def test_no_dimensions_or_an_empty_one(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(_idx_bytes(0x00000800, (), b""))
    _raises(read_idx, path, path=path, phrase="0 dimensions")
    path.write_bytes(_idx_bytes(0x00000803, (0, 28, 28), b""))
    _raises(read_idx_images, path, path=path, phrase="at least 1")


def test_corrupt_gzip(tmp_path):
    compressed = gzip.compress(_idx_bytes(0x00000801, (1000,), _labels(1000).tobytes()))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(compressed[: len(compressed) // 2])
    _raises(read_idx_labels, cut, path=cut, phrase="corrupt gzip")
    damaged = bytearray(compressed)
    damaged[len(damaged) // 2] ^= 0xFF
    damaged[-8] ^= 0xFF  # and the CRC, so a flip that still inflates is caught too
    bad = tmp_path / "damaged.gz"
    bad.write_bytes(bytes(damaged))
    _raises(read_idx_labels, bad, path=bad, phrase="corrupt gzip")


def test_labels_out_of_range(tmp_path):
    path = tmp_path / "lab.gz"
    write_idx(path, np.array([0, 9, 10, 3, 255], dtype=np.uint8), compress=True)
    message = _raises(read_idx_labels, path, path=path, phrase="label 10 at index 2 is out of range")
    assert "expected 0..9" in message and "2 of 5" in message
    assert read_idx_labels(path, num_classes=None).tolist() == [0, 9, 10, 3, 255]
    _raises(read_idx_labels, path, num_classes=256 - 1, path=path, phrase="label 255 at index 4")


def test_image_label_count_mismatch(tmp_path):
    images, labels = tmp_path / "img.gz", tmp_path / "lab.gz"
    write_idx(images, _images(n=5), compress=True)
    write_idx(labels, _labels(n=4), compress=True)
    message = _raises(read_idx_pair, images, labels, path=images, phrase="holds 5 images")
    assert f"{labels} holds 4 labels" in message


def test_missing_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    _raises(read_idx_labels, path, path=path, phrase="cannot read")
    _raises(read_cifar10_batch, path, path=path, phrase="cannot read")


def test_write_idx_refuses_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64), compress=False)


# ---- CIFAR-10 ----


def _cifar_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def test_cifar_round_trip_and_the_real_layout(tmp_path):
    images, labels = _cifar_images(4), np.array([0, 9, 3, 3], dtype=np.uint8)
    path = tmp_path / "data_batch_1.bin"
    write_cifar10_batch(path, images, labels)
    data = path.read_bytes()
    assert len(data) == 4 * RECORD_BYTES == 4 * 3073
    assert data[RECORD_BYTES] == 9 and data[1:RECORD_BYTES] == images[0].tobytes()
    got_images, got_labels = read_cifar10_batch(path)
    assert got_images.shape == (4, 3, 32, 32) and got_images.dtype == np.uint8
    assert got_labels.shape == (4,) and got_labels.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_cifar_channel_order(tmp_path):
    plain = bytes([7]) + bytes([1]) * 1024 + bytes([2]) * 1024 + bytes([3]) * 1024
    marked = bytearray(plain)
    marked[0] = 2
    marked[1 + 1 * 32 + 5] = 200  # red plane, row 1, column 5
    marked[1 + 2048 + 31 * 32] = 100  # blue plane, row 31, column 0
    path = tmp_path / "two.bin"
    path.write_bytes(plain + bytes(marked))
    images, labels = read_cifar10_batch(path)
    assert labels.tolist() == [7, 2] and CIFAR10_CLASSES[7] == "horse"
    assert (images[0, 0] == 1).all() and (images[0, 1] == 2).all() and (images[0, 2] == 3).all()
    red, green, blue = images[1]
    assert red[1, 5] == 200 and red.sum() == 1023 + 200
    assert (green == 2).all()
    assert blue[31, 0] == 100 and blue.sum() == 3 * 1023 + 100


def test_cifar_several_batches_concatenate(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"b{i}.bin")
        write_cifar10_batch(paths[-1], _cifar_images(i + 1, seed=i), np.full(i + 1, i, dtype=np.uint8))
    images, labels = read_cifar10(paths)
    assert images.shape == (6, 3, 32, 32)
    assert labels.tolist() == [0, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(images[1:3], _cifar_images(2, seed=1))
    with pytest.raises(UserError, match="no CIFAR-10 batch files"):
        read_cifar10([])


@pytest.mark.parametrize("size", [RECORD_BYTES - 1, 2 * RECORD_BYTES + 5, 3072 * 2])
def test_cifar_wrong_length(tmp_path, size):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(bytes(size))
    message = _raises(read_cifar10_batch, path, path=path, phrase=f"holds {size} bytes")
    assert "3073-byte" in message and "truncated?" in message


def test_cifar_empty_and_compressed(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    _raises(read_cifar10_batch, path, path=path, phrase="empty")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(gzip.compress(bytes(5000)))
    _raises(read_cifar10_batch, archive, path=archive, phrase="looks gzip-compressed")


def test_cifar_label_out_of_range(tmp_path):
    path = tmp_path / "data_batch_2.bin"
    write_cifar10_batch(path, _cifar_images(3), np.array([1, 10, 42], dtype=np.uint8))
    message = _raises(read_cifar10_batch, path, path=path, phrase="record 1 (byte offset 3073) has label 10")
    assert "2 of 3 records" in message


# ---- the real data sets, where present ----


def _require(paths):
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"real data not present: {', '.join(missing)}")


@pytest.mark.parametrize("root", [SHARED_DATA / "mnist", FASHION_MNIST], ids=["mnist", "fashion-mnist"])
def test_real_mnist_style_sets(root):
    _require([root / name for name in MNIST_FILES])
    train_x, train_y = read_idx_pair(root / MNIST_FILES[0], root / MNIST_FILES[1])
    test_x, test_y = read_idx_pair(root / MNIST_FILES[2], root / MNIST_FILES[3])
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    for labels in (train_y, test_y):
        assert labels.max() < 10 and len(np.unique(labels)) == 10
    assert train_x.max() == 255 and train_x.min() == 0


def test_real_cifar10():
    root = SHARED_DATA / "cifar10"
    _require([root / "data_batch_1.bin", root / "test_batch.bin"])
    images, labels = read_cifar10_batch(root / "data_batch_1.bin")
    assert images.shape == (10000, 3, 32, 32) and labels.shape == (10000,)
    test_images, test_labels = read_cifar10_batch(root / "test_batch.bin")
    assert test_images.shape == (10000, 3, 32, 32)
    assert np.bincount(test_labels, minlength=10).tolist() == [1000] * 10
