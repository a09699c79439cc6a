"""Image data sets from their official files: MNIST and Fashion-MNIST (IDX), CIFAR-10 (binary version)."""

from .cifar import read_cifar10
from .fetch import DataSource, ensure_source
from .idx import read_idx_pair
from .splits import RawTask


def load_idx_task(source: DataSource) -> RawTask:
    """The official 60,000 training and 10,000 test images, as uint8 [N, 1, 28, 28]."""
    paths = ensure_source(source)
    x_train, y_train = read_idx_pair(paths["train-images-idx3-ubyte.gz"], paths["train-labels-idx1-ubyte.gz"])
    x_test, y_test = read_idx_pair(paths["t10k-images-idx3-ubyte.gz"], paths["t10k-labels-idx1-ubyte.gz"])
    return RawTask(x_train[:, None], y_train, x_test[:, None].copy(), y_test.copy())


def load_cifar10_task(source: DataSource) -> RawTask:
    """The five training batches (50,000 images) and the test batch (10,000), as uint8 [N, 3, 32, 32]."""
    paths = ensure_source(source)
    x_train, y_train = read_cifar10([paths[f"data_batch_{i}.bin"] for i in range(1, 6)])
    x_test, y_test = read_cifar10([paths["test_batch.bin"]])
    return RawTask(x_train, y_train, x_test, y_test)
