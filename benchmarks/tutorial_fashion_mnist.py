"""The loop a PyTorch tutorial teaches, on the real Fashion-MNIST: the independent side of bench_real.py.

    python benchmarks/tutorial_fashion_mnist.py --data /usr/share/datasets/fashion-mnist --epochs 3

Nothing of dropbench is imported. It reads the IDX files itself, keeps 55,000 training images (dropbench's
training split has as many), and trains 784-1024-1024-10 with nn.Dropout (inputs 0.2 dropped, hidden 0.5),
batch 128, SGD lr 0.05 momentum 0.9, through a shuffling DataLoader, at torch's default thread count. After 10
warm-up steps it times whole epochs, each followed by a validation pass over the other 5,000 images (dropbench's
loop validates every epoch too), and prints one JSON line: seconds per epoch, the last validation accuracy and
its thread count.
"""

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain): big-endian header of zeros, a type byte, the rank, then each dimension."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"{folder}: no {stem}[.gz]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    images = read_idx(find(args.data, "train-images-idx3-ubyte")).reshape(-1, 784)
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    train = DataLoader(TensorDataset(x[:55000], y[:55000]), batch_size=128, shuffle=True)
    x_val, y_val = x[55000:], y[55000:]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Dropout(0.2),
        nn.Linear(784, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 10),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()

    model.train()
    for i, (xb, yb) in enumerate(train):  # warm-up
        step(xb, yb)
        if i == 9:
            break
    epochs = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        model.train()
        for xb, yb in train:
            step(xb, yb)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        epochs.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "epoch_seconds": epochs,
                "val_acc": accuracy,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
