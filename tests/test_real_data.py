"""The real data sets, where this machine has them (skipped with the reason otherwise)."""

from pathlib import Path

import pytest
import torch
from conftest import make_cell

from dropbench.cli import main
from dropbench.data import load_task_data
from dropbench.train import fit_cell

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION = Path("/usr/share/datasets/fashion-mnist")

needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
needs_mnist = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"no MNIST under {SHARED}")
needs_cifar = pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason=f"no CIFAR-10 under {SHARED}")


@pytest.fixture
def shared_data(monkeypatch):
    monkeypatch.setenv("DROPBENCH_DATA", str(SHARED))
    monkeypatch.setenv("DROPBENCH_OFFLINE", "1")


@pytest.mark.slow
@needs_fashion
def test_training_on_the_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPBENCH_DATA", str(tmp_path))  # empty: the Debian copy must be found
    monkeypatch.setenv("DROPBENCH_OFFLINE", "1")
    data = load_task_data("fashion-mnist")
    assert data.sizes() == (55000, 5000, 10000) and data.x_train.dtype == torch.uint8
    result = fit_cell(make_cell("fashion-mnist", keep=0.5, epochs=1, hidden=(128,), batch_size=128), data)
    assert result.status == "ok" and result.test_acc > 0.80
    assert 0.80 < result.train_acc < 1.0  # one epoch at keep 0.5: fitted, and not memorized


@pytest.mark.slow
@needs_mnist
def test_mnist_is_split_and_normalized_with_training_statistics(shared_data):
    data = load_task_data("mnist")
    assert data.sizes() == (55000, 5000, 10000) and data.input_shape == (1, 28, 28)
    batch = data.inputs(data.x_train[:20000])
    assert abs(batch.mean().item()) < 0.02 and abs(batch.std().item() - 1) < 0.02
    assert torch.bincount(data.y_val).min() > 400  # stratified: every digit well represented


@pytest.mark.slow
@needs_cifar
def test_cifar10_trains_a_conv_net_step(shared_data):
    from dropbench.config import ModelConfig
    from dropbench.models import build_model, init_parameters_

    data = load_task_data("cifar10")
    assert data.sizes() == (45000, 5000, 10000) and data.input_shape == (3, 32, 32)
    model = build_model(ModelConfig("cnn", (64,), (8, 16), conv_keep=0.8), data.input_shape, 10, (0.5,), 1.0)
    init_parameters_(model, torch.Generator().manual_seed(0))
    model.set_generator(torch.Generator().manual_seed(1))
    out = model(data.inputs(data.x_train[:32]))
    assert out.shape == (32, 10)
    torch.nn.functional.cross_entropy(out, data.y_train[:32]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_offline_without_the_files_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DROPBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("DROPBENCH_OFFLINE", "")  # restored after the test: the CLI sets it for its process
    assert main(["download", "mnist", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz not found" in err and len(err.strip().splitlines()) == 1


def test_tasks_lists_sizes_and_data_status(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DROPBENCH_DATA", "")  # restored after the test: the CLI sets it for its process
    assert main(["tasks", "--data-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "mnist" in listed and "cifar10" in listed and "missing" in listed and "bundled" in listed
