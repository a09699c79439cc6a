import hashlib
import xml.etree.ElementTree as ET

import matplotlib
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from dropbench.errors import UserError
from dropbench.report.labels import keep_label
from dropbench.report.plots import (
    PNG_DPI,
    check_metric,
    plot_gap_heatmap,
    plot_keep_rate,
    plot_learning_curves,
    plot_train_size,
    safe_name,
    write_plots,
)
from dropbench.report.summary import summarize
from dropbench.results import COLUMNS, EPOCH_COLUMNS, CsvTable, read_epochs, read_results

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
    # read_epochs, as the CLI reads them: ids of schema 6 and before get their letter, as read_results gives them
    curves = read_epochs(csv)
    paths = write_plots(read, curves, tmp_path / "out", tasks=[CLS])
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
    panels = [ax for ax in fig.axes if ax.get_lines()]
    labels = {line.get_label().split(":")[0] for ax in panels for line in ax.get_lines()}
    assert len(labels) == 8  # 8 configurations × (validation, train), the baseline's in every panel
    assert "8 of 9" in fig.get_suptitle() and CLS in fig.get_suptitle()
    assert "none keep 1.0" in labels  # the baseline, though not among the best
    assert "max-norm 3 keep 1.0" not in labels  # the worst mean test accuracy
    for ax in panels:
        assert len(ax.get_lines()) <= 6  # at most 3 configurations a panel
        assert ax.get_lines()[0].get_label() == "none keep 1.0: validation loss"
        assert ax.get_ylabel() == "loss (cross-entropy)"
    legend = [t.get_text() for t in panels[min(2, len(panels)) - 1].get_legend().get_texts()]
    assert "train loss (training mode, with dropout)" in legend
    fig_reg = plot_learning_curves(epochs, results, REG)
    assert "\n" not in fig_reg.get_suptitle()  # 4 configurations: nothing left out
    assert fig_reg.axes[0].get_ylabel() == "loss (MSE, standardized target)"


# ---------------------------------------------------------------- plots a paper could use


def _variant(results, source=CLS, **changes):
    """`results`' rows of task `source`, each column in `changes` set (a value, or a function of the frame)."""
    rows = results[results["task"] == source].copy()
    for column, value in changes.items():
        rows[column] = value(rows) if callable(value) else value
    return rows


def _swept(results, strengths):
    """The digits rows, plus rows of more regularizers and strengths, each with figures of its own."""
    parts = [results[results["task"] == CLS]]
    for i, (reg, strength) in enumerate(strengths, start=1):
        parts.append(
            _variant(
                results,
                regularizer=reg,
                strength=strength,
                cell_id=lambda r, i=i: r["cell_id"] + f"s{i}",
                test_acc=lambda r, i=i: r["test_acc"] - 0.002 * i,
                train_acc=lambda r, i=i: r["train_acc"] - 0.001 * i,
            )
        )
    return pd.concat(parts, ignore_index=True)


def _band_vertices(ax):
    return np.concatenate([c.get_paths()[0].vertices[:, 1] for c in ax.collections if isinstance(c, PolyCollection)])


def test_bands_never_leave_what_is_possible(results):
    # Accuracies of 1.0, 0.97, 1.0 over 3 seeds: mean error 1%, but a t-interval of ±3.7 points reaches −2.7%.
    rows = _variant(results, test_acc=lambda r: np.where(r["seed"] == 1, 0.97, 1.0), train_acc=1.0)
    summary = summarize(rows)
    assert ((1 - summary["test_acc_mean"]) * 100 - summary["test_acc_ci"] * 100).min() < -2.0  # unclipped
    fig = plot_keep_rate(summary, CLS)
    test_ax = fig.axes[0]
    vertices = _band_vertices(test_ax)
    assert len(vertices) and vertices.min() >= 0.0 and vertices.max() <= 100.0
    assert vertices.min() == 0.0  # clipped, not dropped
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "95% CI, clipped to 0–100%" in legend


def test_a_keep_rate_that_fails_to_learn_is_drawn_at_the_edge_with_its_value(results):
    keeps = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    base = results[(results["task"] == CLS) & (results["regularizer"] == "none") & (results["keep_rate"] == 1.0)]
    rows = pd.concat(
        [
            base.assign(keep_rate=k, cell_id=base["cell_id"] + f"k{k}", test_acc=0.34 if k == 0.1 else 0.97 + 0.002 * k)
            for k in keeps
        ]
    )
    summary = summarize(rows)
    fig = plot_keep_rate(summary, CLS)
    test_ax = fig.axes[0]
    low, high = test_ax.get_ylim()
    assert high < 10.0 and low < 2.8  # the 9 others, not 0–66
    assert "66.0" in [t.get_text() for t in test_ax.texts]  # the value of the point beyond the axis
    edge = [c for c in test_ax.collections if c.get_offsets().shape[0] and c.get_offsets()[0][1] == high]
    assert len(edge) == 1 and edge[0].get_offsets()[0][0] == pytest.approx(0.1)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "beyond the axis (value beside)" in legend
    assert not [t for t in fig.axes[1].texts if t.get_text() == "66.0"]  # training errors: nothing cut


def test_identical_configurations_are_one_line_named_in_the_legend(results):
    rows = results[results["task"] == CLS].copy()
    max_norm = rows[rows["regularizer"] == "max-norm"]
    l2 = rows["regularizer"] == "l2"
    figures = ["test_acc", "train_acc", "gap_acc", "gap_loss", "test_loss", "train_loss", "val_acc", "val_loss"]
    for column in figures:  # l2 that never binds: exactly max-norm's figures, seed by seed
        rows.loc[l2, column] = max_norm[column].to_numpy()
    fig = plot_keep_rate(summarize(rows), CLS)
    merged = "l2 0.0001 = max-norm 3 (identical)"
    for ax in fig.axes:
        assert sorted(line.get_label() for line in ax.get_lines()) == sorted(["none", merged])
    assert merged in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


@pytest.mark.slow
def test_many_lines_are_split_into_panels_each_with_the_baseline(results):
    swept = _swept(results, [(r, s) for r in ("l2", "l1", "max-norm") for s in ("0.1", "0.01", "0.001")])
    fig = plot_keep_rate(summarize(swept), CLS)
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 6  # 3 families × (test, training)
    colors = {}
    drawn = set()
    for ax in panels:
        lines = ax.get_lines()
        assert len(lines) <= 6
        assert lines[0].get_label() == "none"  # the baseline's line in every panel
        for line in lines:
            assert colors.setdefault(line.get_label(), line.get_color()) == line.get_color()  # one colour each
            drawn.add(line.get_label())
    assert len(drawn) == 1 + 2 + 9  # every configuration (l2 0.0001 and max-norm 3 of the fixture included)
    tests = [ax for ax in panels if ax.get_ylabel() == "test error (%)"]
    assert len({ax.get_ylim() for ax in tests}) == 1  # panels of one task's families share their scale
    # Families in the order the results list them (the fixture's max-norm 3 before the l1 sweep).
    assert [ax.get_title() for ax in tests] == ["test set · l2", "test set · max-norm", "test set · l1"]


def test_heatmap_colours_fit_the_values(summary):
    fig = plot_gap_heatmap(summary, CLS)
    image = fig.axes[0].images[0]
    shown = np.ma.filled(image.get_array(), np.nan)
    assert shown.min() > 0  # every gap positive: a sequential map from the least to the greatest
    assert image.get_clim() == pytest.approx((shown.min(), shown.max()))
    assert image.get_cmap().name.startswith("Reds")
    straddling = summary.assign(gap_acc_mean=summary["gap_acc_mean"] - 0.07)
    image = plot_gap_heatmap(straddling, CLS).axes[0].images[0]
    low, high = image.get_clim()
    assert low == -high and image.get_cmap().name.startswith("RdBu_r")


def test_metric_draws_one_figure_and_refuses_what_a_task_lacks(results, summary):
    fig = plot_keep_rate(summary, CLS, metric="test_acc")
    assert len([ax for ax in fig.axes if ax.get_lines()]) == 1
    ax = fig.axes[0]
    assert ax.get_ylabel() == "test accuracy (%)" and "test_acc" in fig.get_suptitle()
    cls = results[(results["task"] == CLS) & (results["regularizer"] == "l2")]
    expected = 100 * cls.groupby("keep_rate")["test_acc"].mean()
    np.testing.assert_allclose(_line(ax, "l2 0.0001").get_ydata(), expected.loc[list(KEEPS)].to_numpy())
    gap = plot_keep_rate(summary, REG, metric="gap").axes[0]
    assert gap.get_ylabel() == "gap_loss"
    with pytest.raises(UserError, match=r"--metric test_acc: task openml:1590 has no test_acc .*regression.*test_loss"):
        check_metric(summary, [CLS, REG], "test_acc")


def test_bad_options_are_refused_before_anything_is_written(results, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"unknown style 'nope'; choose one of: default, .*grayscale"):
        write_plots(results, None, out, style="nope")
    with pytest.raises(UserError, match="pixels a side"):
        write_plots(results, None, out, size=(100.0, 5.0), dpi=1000)
    with pytest.raises(UserError, match="--metric test_ece: task digits has no test_ece"):
        write_plots(results, None, out, metric="test_ece")
    assert not out.exists()


@pytest.mark.slow
def test_size_dpi_style_and_font_size_reach_the_files(results, tmp_path):
    font = plt.rcParams["font.size"]
    paths = write_plots(results, None, tmp_path, tasks=[REG], size=(4.0, 3.0), dpi=50, style="grayscale", font_size=7)
    for path in paths:
        assert mpimg.imread(path).shape[:2] == (150, 200)
    assert plt.rcParams["font.size"] == font  # the style and font size held while drawing only


def _mnist(results):
    """digits rows as the paper's Table 9 net (784-1024-1024-2048) with max-norm 3 at input keep 0.8."""
    return _variant(
        results,
        task="mnist",
        model="mlp-1024-1024-2048",
        input_keep_rate=0.8,
        cell_id=lambda r: r["cell_id"] + "m",
    )


def test_published_numbers_sit_on_the_panel_of_the_configuration_they_match(results):
    summary = summarize(_mnist(results))
    fig = plot_keep_rate(summary, "mnist", reference="srivastava2014")
    test_ax, train_ax = fig.axes[0], fig.axes[1]
    crosses = [c for c in test_ax.collections if c.get_label() == "published"]
    # Table 9 "Dropout + L2" and "Dropout + Max-norm" (keep 0.5, input 0.8): 1.25% and 1.05%, each in the colour of
    # the line it matches; the rows of other nets or keep rates match nothing.
    points = {tuple(c.get_offsets()[0]): c.get_facecolor()[0][:3] for c in crosses}
    assert sorted(points) == [(0.5, pytest.approx(1.05)), (0.5, pytest.approx(1.25))]
    for (_, error), label in zip(sorted(points), ("max-norm 3", "l2 0.0001")):
        color = points[(0.5, error)]
        assert tuple(color) == pytest.approx(matplotlib.colors.to_rgb(_line(test_ax, label).get_color()))
    assert not [c for c in train_ax.collections if c.get_label() == "published"]
    legend = [t.get_text() for t in train_ax.get_legend().get_texts()]
    assert "srivastava2014 (published), coloured as its match" in legend
    assert test_ax.get_ylim()[0] < 1.05  # the published number is on the axis


def test_a_reference_that_matches_nothing_or_another_figure_is_refused(results, tmp_path):
    with pytest.raises(UserError, match=r"--reference srivastava2014: no configuration of task\(s\) digits, "):
        write_plots(results, None, tmp_path / "a", tasks=[CLS, REG], reference="srivastava2014")
    with pytest.raises(UserError, match="its rows expect mnist: mlp-1024-1024-1024"):
        write_plots(results, None, tmp_path / "a", reference="srivastava2014")
    with pytest.raises(UserError, match="draws published test errors.*not gap"):
        write_plots(_mnist(results), None, tmp_path / "a", reference="srivastava2014", metric="gap")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--style", "nope"], "unknown style 'nope'"),
        (["--size", "7"], "is not WIDTHxHEIGHT"),
        (["--size", "0.5x3"], "each side from 1 to 100 inches"),
        (["--dpi", "5"], "--dpi"),
        (["--metric", "test_acc", "--task", REG], "--metric test_acc: task openml:1590 has no test_acc"),
        (["--metric", "accuracy"], "--metric"),
        (["--font-size", "1"], "--font-size"),
    ],
)
def test_plot_options_are_checked_with_one_line(results, tmp_path, capsys, option, fragment):
    from dropbench.cli import main

    csv = tmp_path / "run.csv"
    CsvTable(csv, COLUMNS).append(results.fillna({"strength": ""}).to_dict("records"))
    assert main(["plot", str(csv), "-o", str(tmp_path / "out"), *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def _sized(results, sizes=(100, 1000, 10000)):
    """The digits rows at several training-set sizes, the error falling as the size grows (Figure 10's shape)."""
    parts = [
        _variant(
            results,
            train_size=size,
            cell_id=lambda r, size=size: r["cell_id"] + f"n{size}",
            test_acc=lambda r, i=i: r["test_acc"] + 0.01 * i,
        )
        for i, size in enumerate(sizes)
    ]
    return pd.concat(parts, ignore_index=True)


def _panels_of(fig, ylabel):
    return [ax for ax in fig.axes if ax.get_ylabel() == ylabel]


def _drawn(axes, label):
    """The one line of `label` among `axes` (a configuration may be drawn in several panels: the same points)."""
    lines = [line for ax in axes for line in ax.get_lines() if line.get_label() == label]
    assert lines, label
    return lines[0]


def test_train_size_figure_reads_back_each_configurations_error_by_size(results, tmp_path):
    sized = _sized(results)
    fig = plot_train_size(summarize(sized), CLS)
    test_axes, train_axes = _panels_of(fig, "test error (%)"), _panels_of(fig, "training error (%)")
    assert len(test_axes) == len(train_axes) > 1  # 9 lines: more than one panel holds (plot_rules.MAX_LINES)
    assert all(ax.get_xscale() == "log" and "training-set size" in ax.get_xlabel() for ax in test_axes)
    labels = {line.get_label() for ax in test_axes for line in ax.get_lines()}
    assert labels == {f"{reg} {keep_label(keep)}" for reg in ("none", "l2 0.0001", "max-norm 3") for keep in KEEPS}
    for axes, column in ((test_axes, "test_acc"), (train_axes, "train_acc")):
        line = _drawn(axes, "l2 0.0001 keep 0.5")
        mine = sized[(sized["regularizer"] == "l2") & (sized["keep_rate"] == 0.5)]
        expected = 100 * (1 - mine.groupby("train_size")[column].mean())
        np.testing.assert_allclose(line.get_xdata(), [100, 1000, 10000])
        np.testing.assert_allclose(line.get_ydata(), expected.loc[[100, 1000, 10000]].to_numpy())
    written = write_plots(sized, None, tmp_path)
    assert tmp_path / "digits-train-size.png" in written


def test_train_size_figure_leaves_out_the_whole_split_and_needs_two_sizes(results, tmp_path):
    whole = _variant(results, train_size=0, cell_id=lambda r: r["cell_id"] + "all")
    sized = pd.concat([_sized(results, (100, 1000)), whole], ignore_index=True)
    fig = plot_train_size(summarize(sized), CLS)
    np.testing.assert_allclose(_drawn(fig.axes, "none keep 1.0").get_xdata(), [100, 1000])
    one = pd.concat([_sized(results, (100,)), whole], ignore_index=True)
    with pytest.raises(UserError, match="fewer than two training-set sizes"):
        plot_train_size(summarize(one), CLS)
    assert not any("train-size" in p.name for p in write_plots(one, None, tmp_path))
