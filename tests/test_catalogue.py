"""The catalogue against its definitions: penalties, decay, sparsity, smoothing, mixup, sweeps, sizes, MC."""

import math
import re
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_cell

from dropbench.cli import main
from dropbench.config import ModelConfig, OptimizerConfig
from dropbench.data import TASKS, load_task_data
from dropbench.dropout import DROPOUT_KINDS, AlphaDropout, DropConnectLinear, GaussianDropout, make_dropout
from dropbench.models import build_model, count_parameters, init_parameters_
from dropbench.regularizers import REGULARIZERS, apply_weight_decay_, decay_factor, kl_sparsity_penalty
from dropbench.report.stats import expected_calibration_error
from dropbench.suite import load_suite
from dropbench.train import data_loss, fit_cell, subsample_training, train_model


@pytest.mark.slow
def test_decoupled_weight_decay_matches_adamw_on_weights_only():
    torch.manual_seed(0)
    ours = build_model(ModelConfig(hidden=(16,)), (8,), 3, (1.0,), 1.0)
    theirs = build_model(ModelConfig(hidden=(16,)), (8,), 3, (1.0,), 1.0)
    theirs.load_state_dict(ours.state_dict())
    lr, decay = 0.01, 0.1
    opt_ours = torch.optim.Adam(ours.parameters(), lr=lr)
    weights = [p for n, p in theirs.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in theirs.named_parameters() if n.endswith("bias")]
    opt_theirs = torch.optim.AdamW(
        [{"params": weights, "weight_decay": decay}, {"params": biases, "weight_decay": 0}], lr=lr
    )
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(10):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if model is ours:
                apply_weight_decay_(model.penalized_weights(), decay_factor(lr, decay))
            opt.step()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def bernoulli_kl_of_odds(rho, m):
    """KL(Bernoulli(rho) || Bernoulli(q)) with q = m / (1 + m), written out here independently of dropbench."""
    q = m / (1 + m)
    return rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))


def test_kl_sparsity_matches_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    # The second layer's units are ReLU-like and very active: batch means near 1.5, most above 1.
    h1, h2 = torch.rand(50, 7, generator=g) * 0.3, torch.rand(50, 4, generator=g) * 3
    rho, beta = 0.05, 0.7
    expected = 0.0
    for h in (h1, h2):
        for j in range(h.shape[1]):
            expected += bernoulli_kl_of_odds(rho, float(h[:, j].double().mean()))
    assert (h2.mean(0) >= 1).sum() >= 2
    assert kl_sparsity_penalty([h1, h2], rho, beta).item() == pytest.approx(beta * expected, rel=1e-5)


def test_kl_sparsity_is_zero_at_the_target_and_positive_elsewhere_above_one_too():
    rho = 0.05
    optimum = rho / (1 - rho)  # q = m/(1 + m) = ρ
    means = torch.tensor([0.001, 0.01, 0.04, optimum, 0.07, 0.5, 1.0, 2.0, 10.0], dtype=torch.float64)
    penalties = [
        kl_sparsity_penalty([torch.full((8, 1), m.item(), dtype=torch.float64)], rho, 1.0).item() for m in means
    ]
    assert penalties[3] == pytest.approx(0.0, abs=1e-6)
    assert all(p > 1e-4 for i, p in enumerate(penalties) if i != 3)
    assert penalties.index(min(penalties)) == 3


def test_kl_sparsity_gradient_is_nonzero_for_units_at_or_above_one_and_pushes_toward_the_target():
    """The Bernoulli KL clamped into (0, 1) gave units of batch mean ≥ 1 exactly zero gradient."""
    rho, beta, batch = 0.05, 0.7, 40
    g = torch.Generator().manual_seed(2)
    means = torch.tensor([0.01, 0.03, 0.2, 1.0, 1.5, 4.0])
    h = (torch.rand(batch, len(means), generator=g) * 2 * means).requires_grad_(True)  # ReLU-like, mean ≈ means
    kl_sparsity_penalty([h], rho, beta).backward()
    r = h.detach().double().mean(0)
    # d/dm KL(ρ ‖ m/(1 + m)) = 1/(1 + m) − ρ/m, spread evenly over the batch by the mean.
    expected = (beta * (1 / (1 + r) - rho / r) / batch).float()
    torch.testing.assert_close(h.grad, expected.expand(batch, -1), rtol=1e-5, atol=0)
    assert torch.all(h.grad[:, r >= 1] > 0)  # the most active units are pushed down, not ignored
    # A small gradient step on each unit's activations moves its batch mean toward the optimum, from either side.
    optimum = rho / (1 - rho)
    stepped = (h.detach() - 1e-3 * h.grad / h.grad.abs().max()).double().mean(0)
    assert torch.all((stepped - optimum).abs() < (r - optimum).abs())


def test_ece_matches_a_hand_computed_example():
    # Bins of width 1/15: 0.95 and 0.98 share bin 15 (acc 1/2, conf 0.965); 0.55 is alone in bin 9 (acc 0),
    # 0.7 alone in bin 11 (acc 1). ECE = (2/4)|0.5-0.965| + (1/4)|0-0.55| + (1/4)|1-0.7| = 0.445
    assert expected_calibration_error([0.95, 0.98, 0.55, 0.7], [True, False, False, True]) == pytest.approx(0.445)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0


def test_label_smoothing_is_the_mixed_target_cross_entropy():
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    eps = 0.1
    log_p = logits.log_softmax(1)
    target = torch.full((6, 4), eps / 4)
    target[torch.arange(6), y] += 1 - eps
    expected = -(target * log_p).sum(1).mean()
    torch.testing.assert_close(data_loss(logits, y, True, smoothing=eps), expected)


def test_fixed_pn_widens_each_layer_to_n_over_p():
    config = ModelConfig(hidden=(256, 512), fixed_pn=True)
    assert config.widths((0.5, 0.25)) == (512, 2048)
    assert config.widths((1.0, 1.0)) == (256, 512)
    model = build_model(config, (20,), 3, (0.5, 0.5), 1.0)
    assert [layer.out_features for layer in model.hidden] == [512, 1024]


def test_per_layer_keep_rates_and_kinds_build_the_right_layers():
    mlp = build_model(ModelConfig(hidden=(8, 8)), (4,), 2, (0.8, 0.5), 1.0, "gaussian")
    assert [type(d) for d in mlp.hidden_dropout] == [GaussianDropout, GaussianDropout]
    assert [d.keep for d in mlp.hidden_dropout] == [0.8, 0.5]
    connect = build_model(ModelConfig(hidden=(8,)), (4,), 2, (0.5,), 1.0, "dropconnect")
    assert isinstance(connect.hidden[0], DropConnectLinear) and connect.hidden[0].keep == 0.5
    selu = build_model(ModelConfig(hidden=(400,)), (300,), 2, (0.9,), 1.0, "alpha")
    assert isinstance(selu.hidden_dropout[0], AlphaDropout) and selu.selu
    init_parameters_(selu, torch.Generator().manual_seed(0))
    assert selu.hidden[0].weight.std().item() == pytest.approx(1 / math.sqrt(300), rel=0.02)  # LeCun normal


def test_strength_sweeps_become_cells(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        textwrap.dedent("""
        regularizers = ["l2", "l1+l2"]
        keep_rates = [1.0]
        seeds = 1
        [regularizer.l2]
        strength = { log = [1e-6, 1e-2], num = 5 }
        [regularizer.l1]
        strength = [1e-5, 1e-4]
        [[task]]
        name = "wine"
    """)
    )
    suite = load_suite(str(path))
    labels = [r.strength_label for r in suite.regularizers]
    assert labels[:5] == ["1e-06", "1e-05", "0.0001", "0.001", "0.01"]
    assert len(labels) == 5 + 2 * 5 and "1e-05+0.01" in labels
    assert len({c.cell_id for c in suite.cells()}) == 15


def test_train_size_is_a_stratified_subsample_shared_by_every_cell():
    data = load_task_data("digits")
    small = subsample_training(data, 200)
    again = subsample_training(data, 200)
    assert len(small.y_train) == 200 and torch.equal(small.y_train, again.y_train)
    counts = torch.bincount(small.y_train, minlength=10).double()
    assert counts.min() >= 17 and counts.max() <= 23  # stratified: 20 of each digit, ±rounding
    assert torch.equal(small.x_test, data.x_test)  # the test set is untouched


def test_mc_dropout_adds_calibrated_figures():
    cell = make_cell("synthetic", keep=0.5, epochs=3, hidden=(64,))
    plain = fit_cell(cell, load_task_data("synthetic"))
    assert math.isnan(plain.test_acc_mc) and 0 <= plain.test_ece <= 1
    mc_cell = replace(cell, mc_samples=20)
    mc = fit_cell(mc_cell, load_task_data("synthetic"))
    assert 0.4 < mc.test_acc_mc <= 1 and mc.test_loss_mc > 0 and 0 <= mc.test_ece_mc <= 1
    assert mc.test_loss_mc != mc.test_loss
    # Without dropout every pass is the eval-mode one: the MC figures are the plain ones (the loss to rounding).
    still = fit_cell(replace(make_cell("synthetic", epochs=3, hidden=(64,)), mc_samples=3), load_task_data("synthetic"))
    assert still.test_loss_mc == pytest.approx(still.test_loss, rel=1e-5) and still.test_acc_mc == still.test_acc


def test_mixup_and_label_smoothing_train_and_figures_stay_plain():
    data = load_task_data("wine")
    for reg in ("mixup", "label-smoothing"):
        model, result = train_model(make_cell("wine", reg=reg, epochs=3), data)
        assert result.status == "ok"
    with pytest.raises(Exception, match="label-smoothing needs a classification task"):
        train_model(
            make_cell("diabetes", reg="label-smoothing", epochs=1, optimizer=OptimizerConfig("adam", lr=1e-3)),
            load_task_data("diabetes"),
        )


def test_run_help_and_regularizers_document_every_entry(capsys):
    assert main(["run", "--help"]) == 0
    shown = capsys.readouterr().out
    for name, info in REGULARIZERS.items():
        line = next(line for line in shown.splitlines() if line.strip().startswith(name + " "))
        if info.default_strength is not None:
            assert format(info.default_strength, "g") in line, name
    for kind in DROPOUT_KINDS:
        assert re.search(rf"^\s+{kind}\s", shown, re.M), kind
    assert main(["regularizers"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in REGULARIZERS)


def test_every_dropout_kind_in_the_catalogue_is_implemented():
    for kind in DROPOUT_KINDS:
        layer = DropConnectLinear(4, 3, 0.5) if kind == "dropconnect" else make_dropout(kind, 0.5)
        assert layer is not None, kind


# ---- one tiny epoch of every registered task × regularizer × dropout kind

SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION = __import__("pathlib").Path("/usr/share/datasets/fashion-mnist")


def _available(task):
    info = TASKS[task]
    if info.source is None:
        return True
    if task == "fashion-mnist":
        return FASHION.is_dir() or (SHARED / "fashion-mnist").is_dir()
    return (SHARED / info.source.folder).is_dir()


def _kinds(task):
    return [k for k in DROPOUT_KINDS if k != ("alpha" if task == "cifar10" else "spatial")]


def _smoke_case(task, reg, kind):
    # Tasks with data files to read (MNIST, CIFAR-10, ...) take a second or more each: slow tests.
    return pytest.param(task, reg, kind, marks=[pytest.mark.slow] if TASKS[task].source else [])


SMOKE = [_smoke_case(t, r, k) for t in sorted(TASKS) for r in REGULARIZERS for k in _kinds(t)]


@pytest.mark.parametrize(("task", "reg", "kind"), SMOKE)
def test_smoke_every_task_regularizer_and_dropout_kind(task, reg, kind, monkeypatch):
    if not _available(task):
        pytest.skip(f"no data for {task} on this machine")
    if reg == "label-smoothing" and not TASKS[task].classification:
        pytest.skip("label smoothing is for classification")
    monkeypatch.setenv("DROPBENCH_DATA", str(SHARED))
    monkeypatch.setenv("DROPBENCH_OFFLINE", "1")
    data = load_task_data(task)
    small = subsample_training(data, 60) if len(data.y_train) > 1000 else data
    small = replace(
        small, x_val=small.x_val[:200], y_val=small.y_val[:200], x_test=small.x_test[:200], y_test=small.y_test[:200]
    )
    model = ModelConfig("cnn", (16,), (4,)) if task == "cifar10" else ModelConfig(hidden=(16,))
    optimizer = OptimizerConfig("adam", lr=1e-3)
    cell = make_cell(task, reg=reg, keep=0.5, epochs=1, hidden=(16,), optimizer=optimizer, input_keep=0.8)
    cell = replace(cell, dropout=kind, task=replace(cell.task, model=model))
    result = fit_cell(cell, small)
    assert result.status == "ok", result.error
    assert math.isfinite(result.test_loss) and result.n_params == count_parameters(
        build_model(model, small.input_shape, small.n_outputs, cell.layer_keep_rates, 0.8, kind)
    )
    assert np.isfinite(result.train_loss)


def test_ece_of_a_diverged_model_is_nan_not_an_error():
    assert math.isnan(expected_calibration_error([float("nan"), 0.5], [True, False]))


def test_devices_and_precision():
    from dropbench.devices import describe, resolve_device

    assert resolve_device("cpu") == "cpu" and describe("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="no CUDA device"):
            resolve_device("cuda")
    data = load_task_data("wine")
    assert data.to("cpu").x_train.data_ptr() == data.x_train.data_ptr()  # already there: nothing copied
    cell = make_cell("wine", keep=0.5, epochs=30)
    bf16 = replace(cell, precision="bf16")
    assert bf16.cell_id != cell.cell_id
    low, full = fit_cell(bf16, data), fit_cell(cell, data)
    assert low.status == "ok" and low.test_acc > 0.8 and abs(low.test_acc - full.test_acc) < 0.1
