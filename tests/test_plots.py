import hashlib
import xml.etree.ElementTree as ET

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from dropbench.errors import UserError
from dropbench.report.plots import (
    PNG_DPI,
    plot_gap_heatmap,
    plot_keep_rate,
    plot_learning_curves,
    safe_name,
    write_plots,
)
from dropbench.report.summary import summarize
from dropbench.results import COLUMNS, EPOCH_COLUMNS, CsvTable, read_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLS, REG = "digits", "openml:1590"
CLS_REGS = (("none", ""), ("l2", "0.0001"), ("max-norm", "3"))
KEEPS = (0.5, 0.8, 1.0)
EPOCHS = 5


def _cell_id(*parts):
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _row(task, reg, strength, keep, seed, rng, classification):
    train_loss = 0.05 + 0.1 * (1 - keep) + 0.01 * rng.random()
    test_loss = train_loss + 0.2 * keep + 0.02 * rng.random()
    if classification:
        # max-norm is the worst everywhere, so it is the configuration the learning curves drop.
        penalty = 0.05 if reg == "max-norm" else 0.0
        train_acc = 0.99 - 0.02 * (1 - keep) - penalty + 0.005 * rng.random()
        test_acc = 0.90 + 0.04 * (1 - keep) - penalty + 0.01 * rng.random() + (0.01 if reg == "l2" else 0.0)
    else:
        train_acc = test_acc = float("nan")
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        cell_id=_cell_id(task, reg, keep, seed),
        suite="test",
        task=task,
        model="mlp-32",
        regularizer=reg,
        strength=strength,
        keep_rate=keep,
        input_keep_rate=1.0,
        dropout="bernoulli",
        seed=seed,
        max_epochs=EPOCHS,
        epochs_run=EPOCHS,
        best_epoch=EPOCHS,
        batch_size=64,
        optimizer="sgd",
        lr=0.01,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=test_loss,
        val_acc=test_acc,
        test_loss=test_loss,
        test_acc=test_acc,
        gap_acc=train_acc - test_acc,
        gap_loss=test_loss - train_loss,
        fit_seconds=1.0 + rng.random(),
        n_params=1000,
        status="ok",
        error="",
        device="cpu",
        dropbench_version="0.1.0",
        torch_version="2.3",
        git_commit="",
        started_at="2024-01-01T00:00:00Z",
        schema_version=1,
    )
    return row


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    rows = [
        _row(CLS, reg, strength, keep, seed, rng, True)
        for reg, strength in CLS_REGS
        for keep in KEEPS
        for seed in range(3)
    ]
    rows += [
        _row(REG, reg, strength, keep, seed, rng, False)
        for reg, strength in (("none", ""), ("l2", "0.0001"))
        for keep in (0.5, 1.0)
        for seed in range(2)
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["strength"] = frame["strength"].replace("", np.nan)  # as read_results gives an empty strength
    return frame


@pytest.fixture(scope="module")
def early_id():
    return _cell_id(CLS, "none", 0.5, 2)


@pytest.fixture(scope="module")
def epochs(results, early_id):
    rng = np.random.default_rng(1)
    points = []
    for cell_id in results["cell_id"]:
        last = 3 if cell_id == early_id else EPOCHS  # one cell stopped early
        for epoch in range(1, last + 1):
            points.append(
                dict(
                    cell_id=cell_id,
                    epoch=epoch,
                    fit_loss=1.0 / epoch + rng.random(),
                    val_loss=1.2 / epoch + rng.random(),
                    val_acc=0.9,
                )
            )
    return pd.DataFrame(points, columns=list(EPOCH_COLUMNS))


@pytest.fixture(scope="module")
def summary(results):
    return summarize(results)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _line(ax, label):
    matches = [line for line in ax.get_lines() if line.get_label() == label]
    assert len(matches) == 1, [line.get_label() for line in ax.get_lines()]
    return matches[0]


def _expected_pixels(fig):
    width, height = fig.get_size_inches()
    return int(height * PNG_DPI), int(width * PNG_DPI)  # Agg truncates to whole pixels


@pytest.mark.slow
def test_write_plots_png_files_are_valid_images_of_the_figure_size(results, epochs, summary, tmp_path):
    plt.close("all")
    paths = write_plots(results, epochs, tmp_path / "plots")
    assert [p.name for p in paths] == [
        "digits-keep-rate.png",
        "digits-gap-heatmap.png",
        "digits-learning-curves.png",
        "openml-1590-keep-rate.png",
        "openml-1590-gap-heatmap.png",
        "openml-1590-learning-curves.png",
    ]
    assert plt.get_fignums() == []  # every figure closed
    expected = {
        "digits-keep-rate.png": _expected_pixels(plot_keep_rate(summary, CLS)),
        "digits-gap-heatmap.png": _expected_pixels(plot_gap_heatmap(summary, CLS)),
        "openml-1590-learning-curves.png": _expected_pixels(plot_learning_curves(epochs, results, REG)),
    }
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        if path.name in expected:
            assert image.shape[:2] == expected[path.name]


@pytest.mark.slow
def test_write_plots_svg_parses_as_xml(results, tmp_path):
    paths = write_plots(results, None, tmp_path, fmt="svg", tasks=[REG])
    assert [p.name for p in paths] == ["openml-1590-keep-rate.svg", "openml-1590-gap-heatmap.svg"]
    for path in paths:
        root = ET.parse(path).getroot()
        assert root.tag.rsplit("}", 1)[-1] == "svg"
        assert "viewBox" in root.attrib and "width" in root.attrib
    assert plt.get_fignums() == []


@pytest.mark.slow
def test_write_plots_from_files_on_disk(results, epochs, tmp_path):
    # Through the real reader: text columns as pandas strings, empty strengths as NA.
    csv = tmp_path / "run.csv"
    CsvTable(csv, COLUMNS).append(results.fillna({"strength": ""}).to_dict("records"))
    epochs_csv = tmp_path / "run.epochs.csv"
    CsvTable(epochs_csv, EPOCH_COLUMNS).append(epochs.to_dict("records"))
    read = read_results(csv)
    read_epochs = pd.read_csv(epochs_csv, dtype={"cell_id": str})
    paths = write_plots(read, read_epochs, tmp_path / "out", tasks=[CLS])
    assert [p.name for p in paths] == ["digits-keep-rate.png", "digits-gap-heatmap.png", "digits-learning-curves.png"]
    assert plt.get_fignums() == []


def test_bad_format_raises_user_error_and_writes_nothing(results, tmp_path):
    with pytest.raises(UserError, match="format"):
        write_plots(results, None, tmp_path / "out", fmt="jpg")
    assert not (tmp_path / "out").exists()


def test_unknown_task_raises_user_error(results, summary, tmp_path):
    with pytest.raises(UserError, match="nope"):
        write_plots(results, None, tmp_path, tasks=["nope"])
    with pytest.raises(UserError, match="nope"):
        plot_keep_rate(summary, "nope")


def test_safe_names():
    assert safe_name("openml:1590") == "openml-1590"
    assert safe_name("a/b c:d_e.f-g") == "a-b-c-d_e.f-g"


@pytest.mark.slow
def test_colliding_safe_names_do_not_overwrite(results, tmp_path):
    other = results[results["task"] == REG].assign(task="openml-1590", cell_id=lambda f: f["cell_id"] + "x")
    paths = write_plots(pd.concat([results, other]), None, tmp_path, tasks=[REG, "openml-1590"])
    assert len({p.name for p in paths}) == len(paths) == 4


def test_keep_rate_figure_reads_back_test_and_training_error(results, summary):
    fig = plot_keep_rate(summary, CLS)
    assert len(fig.axes) == 2
    test_ax, train_ax = fig.axes
    assert "digits" in fig.get_suptitle()
    assert test_ax.get_ylabel() == "test error (%)" and train_ax.get_ylabel() == "training error (%)"
    cls = results[results["task"] == CLS]
    for ax, column in ((test_ax, "test_acc"), (train_ax, "train_acc")):
        assert {line.get_label() for line in ax.get_lines()} == {"none", "l2 0.0001", "max-norm 3"}
        line = _line(ax, "l2 0.0001")
        expected = 100 * (1 - cls[cls["regularizer"] == "l2"].groupby("keep_rate")[column].mean())
        np.testing.assert_allclose(line.get_xdata(), list(KEEPS))
        np.testing.assert_allclose(line.get_ydata(), expected.loc[list(KEEPS)].to_numpy())
        assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the CI bands
    labels = train_ax.get_legend_handles_labels()[1]
    assert "baseline (none, keep 1.0)" in labels


def test_keep_rate_regression_plots_mse_and_no_band_for_one_seed(results):
    one_seed = summarize(results[(results["task"] == REG) & (results["seed"] == 0)])
    fig, axes = plt.subplots(1, 2)
    assert plot_keep_rate(one_seed, REG, ax_pair=tuple(axes)) is fig
    assert "MSE" in axes[0].get_ylabel()
    line = _line(axes[0], "none")
    reg = results[(results["task"] == REG) & (results["seed"] == 0) & (results["regularizer"] == "none")]
    np.testing.assert_allclose(line.get_ydata(), reg.sort_values("keep_rate")["test_loss"].to_numpy())
    assert not any(isinstance(c, PolyCollection) for c in axes[0].collections)  # CI is NaN: no band


def test_keep_rate_splits_lines_by_input_keep_rate(results):
    other = results[results["task"] == CLS].assign(input_keep_rate=0.8, cell_id=lambda f: f["cell_id"] + "i")
    other["test_acc"] -= 0.01  # not identical to the input keep 1 lines, which would be drawn once
    fig = plot_keep_rate(summarize(pd.concat([results, other])), CLS)
    labels = {line.get_label() for line in fig.axes[0].get_lines()}
    assert "l2 0.0001 · in 0.8" in labels and "l2 0.0001 · in 1" in labels
    assert len(labels) == 6


def test_heatmap_is_the_pivot_of_gap_means(results, summary):
    fig = plot_gap_heatmap(summary, CLS)
    ax = fig.axes[0]
    shown = np.ma.filled(ax.images[0].get_array(), np.nan)
    cls = results[results["task"] == CLS]
    pivot = cls.pivot_table(index="regularizer", columns="keep_rate", values="gap_acc", aggfunc="mean") * 100
    pivot = pivot.loc[["none", "l2", "max-norm"], sorted(KEEPS)]  # rows in order of appearance
    np.testing.assert_allclose(shown, pivot.to_numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["none", "l2 0.0001", "max-norm 3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "0.8", "1"]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and f"{pivot.iloc[0, 0]:+.1f}" in texts
    assert fig.axes[1].get_ylabel() == "gap (percentage points)"  # the colorbar
    assert CLS in ax.get_title()


def test_learning_curves_average_only_the_cells_that_reached_each_epoch(results, epochs, early_id):
    fig = plot_learning_curves(epochs, results, CLS)
    ax = fig.axes[0]
    ids = results[(results["task"] == CLS) & (results["regularizer"] == "none") & (results["keep_rate"] == 0.5)]
    curves = epochs[epochs["cell_id"].isin(ids["cell_id"])]
    assert curves.groupby("epoch").size().tolist() == [3, 3, 3, 2, 2]
    expected = curves.groupby("epoch")[["fit_loss", "val_loss"]].mean()
    val = _line(ax, "none keep 0.5: validation loss")
    fit = _line(ax, "none keep 0.5: train loss (training mode, with dropout)")
    assert val.get_linestyle() == "-" and fit.get_linestyle() == "--" and val.get_color() == fit.get_color()
    np.testing.assert_array_equal(val.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(val.get_ydata(), expected["val_loss"].to_numpy())
    np.testing.assert_allclose(fit.get_ydata(), expected["fit_loss"].to_numpy())
    assert early_id in set(ids["cell_id"])


def test_learning_curves_keep_at_most_eight_with_the_baseline(results, epochs):
    fig = plot_learning_curves(epochs, results, CLS)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 16  # 8 configurations × (validation, train)
    assert "8 of 9" in ax.get_title() and CLS in ax.get_title()
    labels = {line.get_label().split(":")[0] for line in ax.get_lines()}
    assert "none keep 1.0" in labels  # the baseline, though not among the best
    assert "max-norm 3 keep 1.0" not in labels  # the worst mean test accuracy
    assert ax.get_ylabel() == "loss (cross-entropy)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "train loss (training mode, with dropout)" in legend
    fig_reg = plot_learning_curves(epochs, results, REG)
    assert "\n" not in fig_reg.axes[0].get_title()  # 4 configurations: nothing left out
    assert fig_reg.axes[0].get_ylabel() == "loss (MSE, standardized target)"
