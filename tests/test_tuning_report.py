"""Tuned results: the choice on validation (blind to the test split and to the eval rows), report --tuned in
every format, and the tuning plot, on results frames built by hand where the validation-best and the test-best
trial of every method differ."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.report.exporters import names as format_names
from dropbench.report.tuning import choose_on_validation, trial_figures, tuned_report

METHODS = ("none", "l2", "dropout", "max-norm+dropout")
REGULARIZER = {"none": "none", "l2": "l2", "dropout": "none", "max-norm+dropout": "max-norm"}
TRIALS = 4
TUNE_SEEDS = (0, 1, 2)
EVAL_SEEDS = tuple(range(100, 108))
TASKS = (("digits", True), ("diabetes", False))
# What each method's chosen trial scores on test, over its evaluation seeds: l2 better than none on every seed.
EFFECT = {"none": 0.0, "l2": 0.05, "dropout": 0.0, "max-norm+dropout": -0.01}


def val_best(method: str) -> int:
    """The trial validation prefers (by construction), per method."""
    return (METHODS.index(method) + 1) % TRIALS


def split_best(method: str) -> int:
    """Another trial, the one the test split would prefer."""
    return (val_best(method) + 1) % TRIALS


def loss_best(method: str) -> int:
    """On classification tasks, the trial validation *loss* prefers (neither of the above)."""
    return (val_best(method) + 2) % TRIALS


def _row(task, classification, method, trial, phase, seed, rng, test_figure=None):
    good_val = 0.9 if trial == val_best(method) else 0.6 + 0.01 * trial
    good_test = 0.95 if trial == split_best(method) else 0.7
    if test_figure is not None:
        good_test = test_figure
    noise = rng.normal(0, 0.002, size=3)
    row = {
        "cell_id": f"{task}/{method}/{trial}/{phase}/{seed}",
        "suite": "tuned",
        "task": task,
        "model": "mlp",
        "method": method,
        "phase": phase,
        "trial": trial,
        "seed": seed,
        "status": "ok",
        "regularizer": REGULARIZER[method],
        "strength": "" if REGULARIZER[method] == "none" else f"{10.0 ** -(trial + 2):g}",
        "keep_rate": 0.5 + 0.1 * trial if "dropout" in method else 1.0,
        "layer_keep_rates": "",
        "input_keep_rate": 1.0,
        "dropout": "bernoulli",
        "lr": 0.01 * (trial + 1),
        "max_epochs": 5,
        "train_acc": math.nan,
        "train_loss": 0.1,
        "fit_seconds": 1.0,
    }
    if classification:
        test_acc = good_test + noise[1]
        row.update(
            val_acc=good_val + noise[0],
            val_loss=0.3 if trial == loss_best(method) else 0.5 + noise[2],
            test_acc=test_acc,
            test_loss=1 - test_acc,
            train_acc=1.0,
            gap_acc=1.0 - test_acc,
            gap_loss=0.9 - test_acc,
        )
    else:
        test_loss = 1.5 - good_test + noise[1]
        row.update(
            val_acc=math.nan,
            val_loss=1.5 - good_val + noise[0],
            test_acc=math.nan,
            test_loss=test_loss,
            gap_acc=math.nan,
            gap_loss=test_loss - 0.1,
        )
    return row


def tuned_frame(*, fresh: bool = True, methods=METHODS, seed: int = 0) -> pd.DataFrame:
    """Tune rows of every trial at TUNE_SEEDS; with `fresh`, eval rows of each method's validation-best trial at
    EVAL_SEEDS, whose test figure is 0.8 + EFFECT[method] + seed noise shared by every method (common random
    numbers) plus a little of its own."""
    rng = np.random.default_rng(seed)
    shared = {s: rng.normal(0, 0.02) for s in EVAL_SEEDS}
    rows = []
    for (task, classification), method in itertools.product(TASKS, methods):
        for trial, tune_seed in itertools.product(range(TRIALS), TUNE_SEEDS):
            rows.append(_row(task, classification, method, trial, "tune", tune_seed, rng))
        if fresh:
            for eval_seed in EVAL_SEEDS:
                figure = 0.8 + EFFECT[method] + shared[eval_seed] + rng.normal(0, 0.002)
                if not classification:
                    figure = 1.5 - (0.8 - EFFECT[method] + shared[eval_seed])  # test_loss = 0.7 + ...: l2 lower
                rows.append(_row(task, classification, method, val_best(method), "eval", eval_seed, rng, figure))
    return pd.DataFrame(rows)


def choices(frame: pd.DataFrame, **kwargs) -> dict[tuple[str, str], int]:
    chosen = choose_on_validation(frame, **kwargs)
    return {(r.task, r.method): int(r.trial) for r in chosen.itertuples()}


TEST_COLUMNS = lambda frame: [c for c in frame.columns if c.startswith(("test_", "gap_"))]  # noqa: E731


# ---------------------------------------------------------------- the choice


def test_the_choice_is_the_validation_best_where_the_test_split_would_choose_another():
    frame = tuned_frame()
    chosen = choose_on_validation(frame)
    assert list(zip(chosen["task"], chosen["method"])) == [(t, m) for t, _ in TASKS for m in METHODS]
    tune = frame[frame["phase"] == "tune"]
    for row in chosen.itertuples():
        rows = tune[(tune["task"] == row.task) & (tune["method"] == row.method)]
        classification = row.task == "digits"
        test_means = rows.groupby("trial")["test_acc" if classification else "test_loss"].mean()
        by_test = test_means.idxmax() if classification else test_means.idxmin()
        assert row.trial == val_best(row.method) != by_test
        assert row.selection_metric == ("val_acc" if classification else "val_loss")
        assert row.selection_seeds == len(TUNE_SEEDS) and row.trials == TRIALS
        metric = row.selection_metric
        expected = rows[rows["trial"] == row.trial][metric].mean()
        assert row.selection_mean == pytest.approx(expected)
        assert row.regularizer == REGULARIZER[row.method]
        assert row.keep_rate == pytest.approx(0.5 + 0.1 * row.trial if "dropout" in row.method else 1.0)
        assert row.lr == pytest.approx(0.01 * (row.trial + 1))
    assert not any(c.startswith("test_") for c in chosen.columns)


@pytest.mark.parametrize("corruption", ["shuffle", "nan", "random", "drop"])
def test_corrupting_every_test_column_changes_no_choice(corruption):
    frame = tuned_frame()
    expected = choose_on_validation(frame)
    rng = np.random.default_rng(7)
    corrupted = frame.copy()
    columns = TEST_COLUMNS(frame)
    if corruption == "drop":
        corrupted = corrupted.drop(columns=columns)
    for column in columns if corruption != "drop" else []:
        if corruption == "shuffle":
            corrupted[column] = rng.permutation(corrupted[column].to_numpy())
        elif corruption == "nan":
            corrupted[column] = np.nan
        else:
            corrupted[column] = rng.normal(0, 100, len(corrupted))
    pd.testing.assert_frame_equal(choose_on_validation(corrupted), expected)


class Poison:
    """A value that fails whatever reads it: compared, hashed, converted, printed."""

    def _touched(self, *args: object) -> None:
        raise AssertionError("a test column was read")

    __eq__ = __lt__ = __gt__ = __le__ = __ge__ = __hash__ = __float__ = __bool__ = __repr__ = _touched  # type: ignore


def test_the_choice_never_touches_a_test_column():
    frame = tuned_frame()
    expected = choose_on_validation(frame)
    poisoned = frame.copy()
    for column in TEST_COLUMNS(frame):
        poisoned[column] = pd.Series([Poison() for _ in range(len(frame))], index=frame.index, dtype=object)
    pd.testing.assert_frame_equal(choose_on_validation(poisoned), expected)


def test_ties_go_to_the_lowest_trial():
    frame = tuned_frame(methods=("none",))
    digits = frame["task"] == "digits"
    frame.loc[digits & frame["trial"].isin([1, 3]), "val_acc"] = 0.99  # trials 1 and 3 tie at the top
    frame.loc[~digits & frame["trial"].isin([0, 2]), "val_loss"] = 0.01
    assert choices(frame) == {("digits", "none"): 1, ("diabetes", "none"): 0}


def test_regression_minimises_val_loss_and_a_metric_can_be_named():
    frame = tuned_frame()
    chosen = choose_on_validation(frame)
    regression = chosen[chosen["task"] == "diabetes"]
    assert set(regression["selection_metric"]) == {"val_loss"}
    # Lowest validation loss wins: the construction gives val_best the lowest.
    assert list(regression["trial"]) == [val_best(m) for m in METHODS]
    by_loss = choices(frame, metric="val_loss")
    assert [by_loss["digits", m] for m in METHODS] == [loss_best(m) for m in METHODS]
    for bad in ("test_acc", "gap_acc", "train_acc"):
        with pytest.raises(UserError, match="validation"):
            choose_on_validation(frame, metric=bad)


def test_only_ok_tune_rows_count():
    frame = tuned_frame()
    loser = (frame["method"] == "l2") & (frame["trial"] == split_best("l2")) & (frame["phase"] == "tune")
    frame.loc[loser, "val_acc"] = 1.0
    frame.loc[loser, "val_loss"] = 0.0
    frame.loc[loser, "status"] = "diverged"
    assert choices(frame) == choices(tuned_frame())
    figures = trial_figures(frame)
    assert len(figures[(figures["method"] == "l2") & (figures["task"] == "digits")]) == TRIALS - 1


def test_eval_rows_never_change_the_choice():
    frame = tuned_frame()
    expected = choose_on_validation(frame)
    rng = np.random.default_rng(3)
    # Eval rows of every other trial too, and with the best validation figures of all: still not chosen.
    extra = frame[(frame["phase"] == "tune")].copy()
    extra = extra[extra["trial"] != extra["method"].map(val_best)]
    extra = extra.assign(phase="eval", val_acc=1.0, val_loss=0.0, cell_id=extra["cell_id"] + "/e")
    corrupted = pd.concat([frame, extra], ignore_index=True)
    evaluated = corrupted["phase"] == "eval"
    corrupted.loc[evaluated, "val_acc"] = rng.normal(0, 10, evaluated.sum())
    pd.testing.assert_frame_equal(choose_on_validation(corrupted), expected)


def test_no_tuning_rows_is_a_user_error():
    frame = tuned_frame().drop(columns=["phase", "method", "trial"])
    with pytest.raises(UserError, match="no tuning rows"):
        choose_on_validation(frame)


# ---------------------------------------------------------------- tuned_report


def brute_sign_flip(diffs: list[float]) -> float:
    observed = abs(sum(diffs))
    flips = [abs(sum(s * d for s, d in zip(signs, diffs))) for signs in itertools.product((1, -1), repeat=len(diffs))]
    return sum(f >= observed - 1e-12 for f in flips) / len(flips)


def brute_holm(p_values: list[float]) -> list[float]:
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def test_fresh_protocol_reports_the_eval_rows_and_the_paired_test_matches_a_brute_force_one():
    frame = tuned_frame()
    report = tuned_report(frame)
    assert set(report["protocol"]) == {"fresh"}
    assert set(report["n"]) == {len(EVAL_SEEDS)}
    for task, classification in TASKS:
        figure = "test_acc" if classification else "test_loss"
        rows = report[report["task"] == task].set_index("method")
        evaluated = frame[(frame["task"] == task) & (frame["phase"] == "eval")]
        by_seed = {m: evaluated[evaluated["method"] == m].set_index("seed")[figure] for m in METHODS}
        raw = {}
        for method in METHODS[1:]:
            diffs = list(by_seed[method] - by_seed["none"])
            raw[method] = brute_sign_flip(diffs)
            assert rows.loc[method, "delta"] == pytest.approx(np.mean(diffs))
            assert rows.loc[method, "p_raw"] == pytest.approx(raw[method])
            assert rows.loc[method, "pairs"] == len(EVAL_SEEDS)
            assert rows.loc[method, "family"] == len(METHODS) - 1
        for method, holm_p in zip(raw, brute_holm(list(raw.values()))):
            assert rows.loc[method, "p_value"] == pytest.approx(holm_p)
        assert rows.loc["none", "delta"] != rows.loc["none", "delta"]  # the baseline is not tested against itself
        assert rows.loc["none", "test_mean"] == pytest.approx(by_seed["none"].mean())
        assert rows.loc["l2", "test_metric"] == figure
        # l2 gains 5 points (or 0.05 of loss) on every seed: 2/2^8 · 3 < 0.05.
        assert rows.loc["l2", "significant"] and rows.loc["l2", "change"] == "improvement"
        assert (
            rows.loc["l2", "configuration"]
            == f"l2 {10.0 ** -(val_best('l2') + 2):g} · lr {0.01 * (val_best('l2') + 1)}"
        )


def test_same_protocol_reads_the_chosen_trials_tune_rows():
    frame = tuned_frame(fresh=False)
    report = tuned_report(frame).set_index(["task", "method"])
    assert set(report["protocol"]) == {"same"}
    assert set(report["n"]) == {len(TUNE_SEEDS)}
    tune = frame[(frame["task"] == "digits") & (frame["method"] == "dropout")]
    chosen = tune[tune["trial"] == val_best("dropout")]
    assert report.loc[("digits", "dropout"), "test_mean"] == pytest.approx(chosen["test_acc"].mean())
    assert report.loc[("digits", "dropout"), "pairs"] == len(TUNE_SEEDS)


def test_the_report_chooses_what_choose_on_validation_chooses():
    frame = tuned_frame()
    report = tuned_report(frame, test="wilcoxon")
    chosen = choose_on_validation(frame)
    assert list(report["trial"]) == list(chosen["trial"])
    assert set(report["test"]) == {"wilcoxon"}
    with pytest.raises(UserError, match="unknown test"):
        tuned_report(frame, test="t")


def test_without_a_tuned_baseline_nothing_is_tested_and_the_legend_says_so():
    from dropbench.report.text import tuned_legend, tuned_lines

    report = tuned_report(tuned_frame(methods=("l2", "dropout")))
    assert report["p_raw"].isna().all() and not report["significant"].any()
    digits = report[report["task"] == "digits"]
    assert "No tuned baseline (none)" in tuned_legend(digits)
    assert all(line[-1] == "" for line in tuned_lines(digits))


# ---------------------------------------------------------------- the command line and the plot


@pytest.fixture
def tuned_csv(tmp_path):
    path = tmp_path / "tuned.csv"
    tuned_frame().to_csv(path, index=False)
    return path


@pytest.mark.parametrize("fmt", format_names())
def test_every_exporter_prints_tuned(tuned_csv, fmt, capsys):
    assert main(["report", str(tuned_csv), "--tuned", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        document = json.loads(out)
        assert document["kind"] == "tuned" and len(document["rows"]) == len(TASKS) * len(METHODS)
        assert "fresh evaluation seeds" in document["legends"]["digits"]
    elif fmt == "csv":
        from io import StringIO

        rows = pd.read_csv(StringIO(out))
        assert list(rows["method"]) == [*METHODS, *METHODS]
        assert set(rows["protocol"]) == {"fresh"}
        assert list(rows["trial"]) == [val_best(m) for m in METHODS] * 2
    else:
        for text in ("digits", "diabetes", "max-norm+dropout", "fresh", "val_acc", "val_loss", "Holm", "α = 0.05"):
            assert text in out
        assert "exact sign-flip test" in out and "▲" in out and "unbiased" in out


def test_tuned_refuses_other_views_and_test_metrics(tuned_csv, capsys):
    assert main(["report", str(tuned_csv), "--tuned", "--best"]) == 2
    assert "--best" in capsys.readouterr().err
    assert main(["report", str(tuned_csv), "--tuned", "--metric", "test_acc"]) == 2
    assert "chooses on validation" in capsys.readouterr().err


def test_a_plain_report_of_tuned_results_is_the_tuned_report(tuned_csv, capsys):
    """Without --tuned a tuned file's trials would pool into one configuration per method: the tuned view, said."""
    assert main(["report", str(tuned_csv), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "showing report --tuned" in captured.err
    assert main(["report", str(tuned_csv), "--tuned", "--format", "csv"]) == 0
    assert capsys.readouterr().out == captured.out


@pytest.mark.parametrize("view", ["--best", "--paired"])
def test_a_grid_view_of_tuned_results_is_refused(tuned_csv, view, capsys):
    assert main(["report", str(tuned_csv), view]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tuned_csv) in err[0] and view in err[0] and "report --tuned" in err[0]


def test_a_file_without_tuning_rows_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "plain.csv"
    tuned_frame().drop(columns=["phase", "method", "trial"]).to_csv(path, index=False)
    assert main(["report", str(path), "--tuned"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(path) in err[0] and "hold no tuning rows" in err[0] and "[tuning]" in err[0]


@pytest.mark.slow
def test_the_tuning_plot_marks_the_chosen_trial():
    import matplotlib.pyplot as plt

    from dropbench.report.plots import plot_tuning

    frame = tuned_frame()
    fig = plot_tuning(frame, "digits")
    first = fig.axes[0]  # none's panel of the first hyperparameter: not tuned, hidden (none sweeps only lr)
    assert not first.axison
    l2 = fig.axes[1]  # l2's strength panel
    assert l2.get_xscale() == "log"
    stars = [c for c in l2.collections if c.get_label() == "chosen on validation"]
    ((x, y),) = stars[0].get_offsets()
    trial = val_best("l2")
    tune = frame[(frame["task"] == "digits") & (frame["method"] == "l2") & (frame["phase"] == "tune")]
    assert x == pytest.approx(10.0 ** -(trial + 2))
    assert y == pytest.approx(100 * tune[tune["trial"] == trial]["val_acc"].mean())
    plt.close(fig)


@pytest.mark.slow
def test_plot_command_writes_the_tuning_figure(tuned_csv, tmp_path, capsys):
    import matplotlib.image

    assert main(["plot", str(tuned_csv), "-o", str(tmp_path / "plots"), "--task", "diabetes"]) == 0
    written = capsys.readouterr().out.split()
    path = tmp_path / "plots" / "diabetes-tuning.png"
    assert str(path) in written
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 1000 and height > 400  # four methods side by side


def test_the_tuned_plot_draws_each_methods_chosen_setting_with_report_tuneds_figures():
    import matplotlib.pyplot as plt

    from dropbench.report.plot_tuned import plot_tuned, plot_tuned_figures

    frame = tuned_frame()
    report = tuned_report(frame)
    for task, classification in TASKS:
        figures = plot_tuned_figures(frame, task)
        rows = report[report["task"] == task]
        assert list(figures["method"]) == list(METHODS)
        # Never pooled: each method is its one chosen trial, at the evaluation seeds report --tuned reads.
        assert list(figures["trial"]) == [val_best(m) for m in METHODS]
        assert set(figures["seeds"]) == {len(EVAL_SEEDS)}
        expected = 100 * (1 - rows["test_mean"]) if classification else rows["test_mean"]
        np.testing.assert_allclose(figures["value"], expected)
    fig = plot_tuned(frame, "digits")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "none · lr 0.02"  # the tuned baseline on top
    assert ax.get_xlabel() == "test error (%)" and "chosen on validation" in ax.get_title()
    marks = [t.get_text() for t in ax.texts if t.get_text() in ("▲", "▼")]
    changes = report.loc[report["task"] == "digits", "change"]
    assert marks == [{"improvement": "▲", "degradation": "▼"}[c] for c in changes if c]  # report --tuned's marks
    assert marks[0] == "▲"  # l2, better than none on every seed
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "tuned baseline (none)" in legend and "Holm across 3" in legend
    plt.close(fig)


@pytest.mark.slow
def test_plot_of_tuned_results_never_pools_trials_into_a_keep_rate_plot(tuned_csv, tmp_path, capsys):
    assert main(["plot", str(tuned_csv), "-o", str(tmp_path / "plots"), "--format", "svg"]) == 0
    names = [line.rsplit("/", 1)[-1] for line in capsys.readouterr().out.split()]
    assert names == [f"{task}-{kind}.svg" for task, _ in TASKS for kind in ("tuned", "tuning")]
    assert main(["plot", str(tuned_csv), "-o", str(tmp_path / "p"), "--reference", "srivastava2014"]) == 2
    assert "tuned comparison" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tuned_task_whose_tuning_failed_is_not_pooled_into_a_grid_plot(tmp_path):
    from dropbench.report.plots import write_plots

    frame = tuned_frame()
    frame.loc[(frame["task"] == "diabetes") & (frame["phase"] == "tune"), "status"] = "failed"
    paths = write_plots(frame, None, tmp_path)
    assert [p.name for p in paths] == ["digits-tuned.png", "digits-tuning.png"]  # no diabetes keep-rate plot
