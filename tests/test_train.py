"""Training measured the way the design says: eval mode, whole splits, right sets, reproducible."""

import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from conftest import FIGURES, make_cell

from dropbench.data import load_task_data
from dropbench.results import format_value
from dropbench.runner import make_row
from dropbench.train import Training, fit_cell, train_model

PROVENANCE = (
    "device",
    "threads",
    "host",
    "cpu",
    "dropbench_version",
    "torch_version",
    "sklearn_version",
    "python_version",
    "git_commit",
)

TIMING = {"fit_seconds"}


def figures(result):
    return {k: v for k, v in asdict(result).items() if k not in TIMING}


def test_figures_are_measured_in_eval_mode_on_each_whole_split():
    data = load_task_data("digits")
    model, result = train_model(make_cell(keep=0.5, input_keep=0.8), data)
    result_again = fit_cell(make_cell(keep=0.5, input_keep=0.8), data)
    model.eval()
    with torch.no_grad():
        for which in ("train", "val", "test"):
            x, y = data.split(which)
            logits = model(x)
            acc = (logits.argmax(1) == y).double().mean().item()
            loss = torch.nn.functional.cross_entropy(logits, y).item()
            assert getattr(result_again, f"{which}_acc") == acc
            assert math.isclose(getattr(result_again, f"{which}_loss"), loss, rel_tol=1e-5)


def test_same_seed_same_figures_other_seed_other_figures():
    data = load_task_data("wine")
    a = fit_cell(make_cell("wine", keep=0.5, seed=3), data)
    b = fit_cell(make_cell("wine", keep=0.5, seed=3), data)
    c = fit_cell(make_cell("wine", keep=0.5, seed=4), data)
    assert figures(a) == figures(b)
    assert figures(a) != figures(c)


def test_early_stopping_returns_the_best_validation_weights():
    data = load_task_data("synthetic")
    # Overfits quickly: validation loss bottoms out early and rises after.
    cell = make_cell("synthetic", reg="early-stopping", epochs=40, hidden=(128, 128), strengths={"early-stopping": 5})
    result = fit_cell(cell, data)
    val_losses = [p.val_loss for p in result.curves]
    assert result.epochs_run < 40  # it stopped
    assert result.epochs_run == result.best_epoch + 5
    assert result.best_epoch == 1 + int(np.argmin(val_losses))
    assert result.val_loss == min(val_losses)  # the final figures come from the restored weights
    assert result.val_loss < val_losses[-1]


def test_without_early_stopping_the_last_weights_are_kept():
    data = load_task_data("synthetic")
    result = fit_cell(make_cell("synthetic", epochs=15, hidden=(128, 128)), data)
    assert result.epochs_run == 15
    assert result.val_loss == result.curves[-1].val_loss
    assert result.best_epoch == 1 + int(np.argmin([p.val_loss for p in result.curves]))


def test_a_diverging_cell_is_marked_not_raised():
    from dropbench.config import OptimizerConfig

    data = load_task_data("diabetes")
    result = fit_cell(make_cell("diabetes", epochs=5, optimizer=OptimizerConfig(lr=10.0, momentum=0.9)), data)
    assert result.status == "diverged" and "non-finite" in result.error
    assert all(math.isnan(getattr(result, name)) for name in FIGURES)


def test_a_diverged_classifier_has_no_figures_even_where_its_restored_weights_are_finite(monkeypatch):
    """Diverging at epoch 2 under early stopping restores the finite epoch-1 weights, which would measure
    real-looking accuracies (and MC figures); the run diverged all the same, so its row holds none."""
    epochs_run = []
    run_epoch = Training.run_epoch

    def diverging_at_epoch_2(self):
        epochs_run.append(1)
        loss = run_epoch(self)
        return math.nan if len(epochs_run) == 2 else loss

    monkeypatch.setattr(Training, "run_epoch", diverging_at_epoch_2)
    cell = replace(make_cell("digits", reg="early-stopping", keep=0.5, epochs=4), mc_samples=3)
    result = fit_cell(cell, load_task_data("digits"))
    assert result.status == "diverged" and result.epochs_run == 2 and result.best_epoch == 1
    assert result.fit_seconds > 0 and result.n_params > 0
    assert all(math.isnan(getattr(result, name)) for name in FIGURES)
    provenance = dict.fromkeys(PROVENANCE, "") | {"threads": 1}
    row = make_row(cell, result, "2024-01-01T00:00:00Z", provenance)
    assert row.status == "diverged"
    assert all(format_value(getattr(row, name)) == "" for name in (*FIGURES, "gap_acc", "gap_loss"))


def test_a_cell_that_blows_up_has_no_figures():
    from dropbench.config import OptimizerConfig

    cell = make_cell("digits", epochs=3, optimizer=OptimizerConfig(lr=1e4, momentum=0.9))
    result = fit_cell(cell, load_task_data("digits"))
    assert result.status == "diverged"
    assert all(math.isnan(getattr(result, name)) for name in FIGURES)


@pytest.mark.slow
def test_dropout_shrinks_the_gap_on_the_synthetic_task():
    """The science the quick suite exists to show, at its own settings (3 seeds)."""
    data = load_task_data("synthetic")

    def mean_gap(keep):
        gaps = []
        for seed in range(3):
            r = fit_cell(make_cell("synthetic", keep=keep, seed=seed, epochs=30, hidden=(128, 128)), data)
            gaps.append(r.train_acc - r.test_acc)
        return float(np.mean(gaps))

    assert mean_gap(0.5) < mean_gap(1.0) - 0.03


def test_max_norm_holds_for_every_hidden_unit_after_training():
    data = load_task_data("digits")
    model, _ = train_model(make_cell(reg="max-norm", strengths={"max-norm": 0.5}, epochs=2, hidden=(64, 64)), data)
    for weight in model.max_norm_weights():
        assert weight.norm(dim=1).max() <= 0.5 + 1e-5
    free, _ = train_model(make_cell(epochs=2, hidden=(64, 64)), data)
    assert max(w.norm(dim=1).max() for w in free.max_norm_weights()) > 0.5  # the constraint did bind
