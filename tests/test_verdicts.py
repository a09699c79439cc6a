"""What a careful reader relies on: choices made on validation only, marks with their numbers beside them,
and no two trainings pooled as seeds."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.report import summary as report
from dropbench.report.grid import task_grids
from dropbench.results import COLUMNS, read_results

TEST_COLUMNS = ["test_acc", "test_loss", "test_ece", "gap_acc", "gap_loss"]


def grid_rows(task="wine", seeds=6, setup_id="s1", max_epochs=3, rng_seed=0):
    """A classification task: none/l2 × keep 0.5/1.0, with validation and test figures drawn independently."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for reg in ("none", "l2"):
        for keep in (0.5, 1.0):
            for seed in range(seeds):
                val, test = rng.uniform(0.8, 0.95, size=2)
                cell_id = f"{task}-{reg}-{keep}-{seed}-{setup_id}-{max_epochs}"
                rows.append(
                    {
                        **dict.fromkeys(COLUMNS, ""),
                        "cell_id": cell_id,
                        "suite": "s",
                        "task": task,
                        "model": "mlp-8",
                        "regularizer": reg,
                        "strength": "0.01" if reg == "l2" else "",
                        "keep_rate": keep,
                        "input_keep_rate": 1.0,
                        "dropout": "bernoulli",
                        "train_size": 0,
                        "seed": seed,
                        "max_epochs": max_epochs,
                        "batch_size": 64,
                        "optimizer": "sgd",
                        "lr": 0.01,
                        "momentum": 0.9,
                        "precision": "fp32",
                        "mc_samples": 0,
                        "setup_id": setup_id,
                        "status": "ok",
                        "val_acc": val,
                        "val_loss": 1 - val,
                        "test_acc": test,
                        "test_loss": 1 - test,
                        "train_acc": 1.0,
                        "train_loss": 0.0,
                        "gap_acc": 1.0 - test,
                        "gap_loss": 1 - test,
                        "test_ece": 0.01,
                    }
                )
    return rows


def shuffled_test_columns(frame: pd.DataFrame, rng_seed: int) -> pd.DataFrame:
    order = np.random.default_rng(rng_seed).permutation(len(frame))
    shuffled = frame.copy()
    for column in TEST_COLUMNS:
        shuffled[column] = frame[column].to_numpy()[order]
    return shuffled


def chosen(frame: pd.DataFrame) -> list[tuple]:
    summary = report.summarize(frame)
    return [tuple(row[c] for c in report.CONFIG_COLUMNS) for _, row in summary[summary["best"]].iterrows()]


@pytest.mark.slow
def test_shuffling_the_test_columns_changes_no_choice():
    frame = pd.DataFrame(grid_rows() + grid_rows(task="digits", rng_seed=1))
    choices, best = chosen(frame), report.best_report(frame, report.summarize(frame))["configuration"].tolist()
    test_choices = set()
    for rng_seed in range(5):
        shuffled = shuffled_test_columns(frame, rng_seed)
        assert chosen(shuffled) == choices  # ★ is chosen on validation
        assert (
            report.best_report(shuffled, report.summarize(shuffled))["configuration"].tolist() == best
        )  # so is --best
        summary = report.summarize(shuffled)
        test_choices.add(tuple(summary.loc[summary.groupby("task")["test_acc_mean"].idxmax(), "keep_rate"]))
    assert len(test_choices) > 1  # choosing on test would have moved with the shuffle: the test can fail


def test_the_star_sits_on_the_validation_choice_and_reports_its_test_figure():
    frame = pd.DataFrame(grid_rows())
    summary = report.summarize(frame)
    best_val = summary.loc[summary["val_acc_mean"].idxmax()]
    (grid,) = task_grids(summary, "gap")
    assert grid.best == best_val.name
    assert summary.loc[summary["best"], "val_acc_mean"].item() == summary["val_acc_mean"].max()


def write(rows, path):
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_report_separates_cells_trained_with_other_settings(tmp_path, capsys):
    """Two runs into one file with other epochs (a merge of two files, or a schema-3 file): never pooled."""
    path = write(
        grid_rows(seeds=3, max_epochs=2, setup_id="a") + grid_rows(seeds=3, max_epochs=3, setup_id="b", rng_seed=5),
        tmp_path / "mixed.csv",
    )
    summary = report.summarize(read_results(path))
    assert len(summary) == 8 and set(summary["n"]) == {3}  # 2 setups × 4 configurations, 3 seeds each
    assert main(["report", str(path), "--paired"]) == 0
    out = capsys.readouterr().out
    assert "epochs 2" in out and "epochs 3" in out  # the labels say which training each row is
    assert main(["report", str(path), "--format", "json"]) == 0
    configurations = json.loads(capsys.readouterr().out)["configurations"]
    tested = [c for c in configurations if c.get("pairs") is not None]
    assert {c["pairs"] for c in tested} == {3}  # each paired with the baseline of its own setup
    assert main(["plot", str(path), "-o", str(tmp_path / "plots")]) == 0


def test_a_file_without_setup_ids_is_separated_by_its_setup_columns(tmp_path):
    rows = grid_rows(seeds=3, max_epochs=2, setup_id="") + grid_rows(seeds=3, max_epochs=3, setup_id="", rng_seed=5)
    summary = report.summarize(read_results(write(rows, tmp_path / "old.csv")))
    assert len(summary) == 8 and set(summary["n"]) == {3}


def test_paired_export_is_one_keystroke_from_every_mark(tmp_path, capsys):
    path = write(grid_rows(seeds=9), tmp_path / "r.csv")
    assert main(["report", str(path), "--paired", "--format", "csv"]) == 0
    tests = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert {"delta", "delta_low", "delta_high", "p_raw", "p_value", "min_p", "method", "family"} <= set(tests.columns)
    assert set(tests["family"]) == {3} and set(tests["method"]) == {"sign-flip"}
    assert (tests["min_p"] == 2 / 2**9).all()
    assert main(["report", str(path), "--paired", "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "configuration − baseline, paired by seed" in text and "exact sign-flip test" in text
    assert "Holm across 3 comparisons" in text


def test_the_legend_says_when_no_mark_is_possible(tmp_path, capsys):
    path = write(grid_rows(seeds=3), tmp_path / "r.csv")
    assert main(["report", str(path), "--format", "markdown"]) == 0
    assert "at 3 seeds no mark is possible (smallest p 0.25" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_best_honours_format(tmp_path, capsys, fmt):
    path = write(grid_rows(seeds=4), tmp_path / "r.csv")
    assert main(["report", str(path), "--best", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        assert json.loads(out)["rows"][0]["chosen_on"] == "val_acc"
    elif fmt == "csv":
        assert pd.read_csv(io.StringIO(out))["chosen_on"].tolist() == ["val_acc"]
    else:
        assert "chosen on validation" in out and "val_acc" in out


def test_a_run_into_a_file_of_other_settings_is_refused_and_the_file_is_untouched(tmp_path, capsys):
    out = tmp_path / "r.csv"
    grid = ["run", "--task", "wine", "--reg", "none", "--keep", "1.0", "--seeds", "1", "--jobs", "1", "-q"]
    assert main([*grid, "--epochs", "1", "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*grid, "--epochs", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "max_epochs = 1" in err and "max_epochs = 2" in err and "--fresh" in err
    assert out.read_bytes() == before
    assert main([*grid, "--epochs", "1", "--seeds", "2", "--out", str(out)]) == 0  # same settings: it resumes


def test_tests_for_uses_the_default_sign_flip_test():
    frame = pd.DataFrame(grid_rows(seeds=9))
    tests = report.tests_for(frame, report.summarize(frame), "gap")
    assert set(tests["method"]) == {"sign-flip"} and len(tests) == 3
