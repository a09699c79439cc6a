"""The command line as a user meets it: a small grid end to end, resume, reports, and bad input."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.results import COLUMNS, EPOCH_COLUMNS

SMALL = [
    "--task",
    "wine,diabetes",
    "--keep",
    "0.5,1.0",
    "--reg",
    "none,l2,early-stopping",
    "--seeds",
    "2",
    "--epochs",
    "3",
    "-q",
    "--jobs",
    "1",
]
SMALL_CELLS = 2 * 2 * 3 * 2
TIMING = ["fit_seconds", "started_at", "threads"]  # circumstances, not figures


def run_small(tmp_path, name="r.csv", extra=()):
    out = tmp_path / name
    code = main(["run", *SMALL, "--out", str(out), *extra])
    return code, out


@pytest.mark.slow
def test_run_writes_one_ok_row_per_cell_with_sidecars(tmp_path, capsys):
    code, out = run_small(tmp_path)
    assert code == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == SMALL_CELLS and frame["cell_id"].is_unique
    assert (frame["status"] == "ok").all()
    cls = frame[frame["task"] == "wine"]
    assert (cls["gap_acc"] == cls["train_acc"] - cls["test_acc"]).all()
    assert (frame["gap_loss"] == frame["test_loss"] - frame["train_loss"]).all()
    assert frame[frame["task"] == "diabetes"]["test_acc"].isna().all()  # regression: losses only
    epochs = pd.read_csv(tmp_path / "r.epochs.csv")
    assert list(epochs.columns) == list(EPOCH_COLUMNS)
    assert len(epochs) == frame["epochs_run"].sum()
    meta = json.loads((tmp_path / "r.json").read_text())
    assert meta["runs"][0]["command"] == "dropbench run " + " ".join(SMALL) + f" --out {out}"
    assert meta["runs"][0]["completed"] is True and meta["runs"][0]["versions"]["torch"]
    printed = capsys.readouterr().out
    assert "wine · gap_acc (pp)" in printed and "diabetes · gap_loss" in printed and "◆" in printed


@pytest.mark.slow
def test_two_runs_with_the_same_seeds_write_identical_figures(tmp_path):
    _, a = run_small(tmp_path, "a.csv")
    _, b = run_small(tmp_path, "b.csv")
    _, c = run_small(tmp_path, "c.csv", ["--seeds", "3"])
    fa, fb, fc = (pd.read_csv(p).drop(columns=TIMING) for p in (a, b, c))
    pd.testing.assert_frame_equal(fa, fb)
    new_seed = fc[fc["seed"] == 2].set_index(["task", "regularizer", "keep_rate"])
    old_seed = fa[fa["seed"] == 1].set_index(["task", "regularizer", "keep_rate"])
    assert not (new_seed["test_loss"] == old_seed["test_loss"]).any()


@pytest.mark.slow
def test_an_interrupted_run_resumes_without_duplicates(tmp_path):
    _, full = run_small(tmp_path, "full.csv")
    code, out = run_small(tmp_path, "part.csv")
    lines = out.read_text().splitlines(keepends=True)
    # Keep 5 rows and half of the sixth, as a kill in the middle of a write would leave it.
    out.write_text("".join(lines[:6]) + lines[6][:20])
    code, _ = run_small(tmp_path, "part.csv")
    assert code == 0
    resumed = pd.read_csv(out)
    assert len(resumed) == SMALL_CELLS and resumed["cell_id"].is_unique
    expected = pd.read_csv(full).drop(columns=TIMING).set_index("cell_id").sort_index()
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMING).set_index("cell_id").sort_index(), expected)
    epochs = pd.read_csv(tmp_path / "part.epochs.csv")
    assert not epochs.duplicated(["cell_id", "epoch"]).any()
    assert len(epochs) == resumed["epochs_run"].sum()
    assert len(json.loads((tmp_path / "part.json").read_text())["runs"]) == 2


@pytest.mark.slow
def test_default_output_goes_to_results_with_a_utc_timestamp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--task", "wine", "--keep", "1.0", "--reg", "none", "--seeds", "1", "--epochs", "1", "-q"]) == 0
    (written,) = (tmp_path / "results").glob("quick-*Z.csv")
    assert len(pd.read_csv(written)) == 1


@pytest.mark.slow
def test_report_renders_an_earlier_csv(tmp_path, capsys):
    _, out = run_small(tmp_path)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wine · gap_acc (pp) · mean ± 95% CI over 2 seeds" in printed
    assert "keep 0.5" in printed and "★" in printed


def test_listing_commands(capsys):
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("digits", "breast-cancer", "wine", "diabetes", "synthetic"))
    assert main(["regularizers"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("none", "l1", "l2", "max-norm", "early-stopping", "0.0001"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--task", "mnsit"], "unknown task 'mnsit' (did you mean 'mnist'?); known: breast-cancer, cifar10,"),
        (["run", "--reg", "l3"], "unknown regularizer 'l3'"),
        (["run", "--keep", "0.5,1.5"], "keep rate 1.5 is outside (0, 1]"),
        (["run", "--keep", "1e-9,0.5"], "keep rate 1e-09 is below 1/65536 ≈ 1.5e-05, the smallest rate the masks"),
        (["run", "--input-keep", "1e-9"], "keep rate 1e-09 is below 1/65536 ≈ 1.5e-05, the smallest rate the masks"),
        (["run", "--keep", "half"], "is not a list of numbers"),
        (["run", "missing.toml"], "suite file not found: missing.toml"),
        (["run", "--seeds", "0"], "--seeds"),
        (["report", "missing.csv"], "results file not found: missing.csv"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, expected, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_misspelled_suite_key_is_named(tmp_path, capsys):
    suite = tmp_path / "bad.toml"
    suite.write_text("epoch = 3\n[[task]]\nname = 'wine'\n")
    assert main(["run", str(suite)]) == 2
    assert f"{suite}: unknown key 'epoch' (did you mean 'epochs'?)" in capsys.readouterr().err


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dropbench", "run", "--keep", "2"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("dropbench: error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # nothing was written for a refused run


@pytest.mark.slow
def test_a_process_pool_gives_the_same_figures_as_one_process(tmp_path):
    _, alone = run_small(tmp_path, "alone.csv", ["--jobs", "1", "--threads", "2"])
    _, pooled = run_small(tmp_path, "pooled.csv", ["--jobs", "2"])
    a = pd.read_csv(alone).drop(columns=TIMING).set_index("cell_id").sort_index()
    b = pd.read_csv(pooled).drop(columns=TIMING).set_index("cell_id").sort_index()
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_stacked_and_single_cell_training_give_the_same_figures(tmp_path):
    _, stacked = run_small(tmp_path, "stacked.csv")
    _, alone = run_small(tmp_path, "alone.csv", ["--no-stack"])
    a = pd.read_csv(stacked).drop(columns=TIMING).set_index("cell_id").sort_index()
    b = pd.read_csv(alone).drop(columns=TIMING).set_index("cell_id").sort_index()
    assert (a["test_acc"].fillna(-1) == b["test_acc"].fillna(-1)).all()
    assert ((a["epochs_run"] == b["epochs_run"]) & (a["best_epoch"] == b["best_epoch"])).all()
    for column in ("train_loss", "val_loss", "test_loss"):
        assert (a[column] - b[column]).abs().max() < 1e-5  # bmm and mm round the last bits differently
