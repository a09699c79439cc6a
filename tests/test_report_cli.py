"""report, compare and plot as a user runs them: exports parsed back, exit codes, files read back."""

import io
import json
import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from dropbench.cli import main

GRID = [
    "--task",
    "wine,diabetes",
    "--keep",
    "0.5,1.0",
    "--reg",
    "none,l2",
    "--seeds",
    "6",
    "--epochs",
    "3",
    "--jobs",
    "1",
    "-q",
]
# Six seeds: the exact sign-flip test's smallest p is 2/2^6, so a drop on every seed of wine's four
# configurations reaches 4 · 2/64 = 0.125 after Holm (at three seeds no verdict could ever be a regression).


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "r.csv"
    assert main(["run", *GRID, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_report_and_compare_take_the_same_metrics(results, capsys):
    from dropbench.cli import cli

    choices = {
        name: next(p for p in command.params if p.name == "metric").type.choices
        for name, command in cli.commands.items()
        if name in ("report", "compare")
    }
    assert choices["report"] == choices["compare"]
    assert main(["report", str(results), "--metric", "val_acc", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy (%)" in out and "significantly higher" in out  # higher is better, from the catalogue
    assert main(["compare", str(results), str(results), "--metric", "train_loss"]) == 0
    # 'gap' is in both lists; compare, which needs one unit for --max-drop, says why it cannot take it.
    assert main(["compare", str(results), str(results), "--metric", "gap"]) == 2
    assert "takes gap_acc or gap_loss" in capsys.readouterr().err


def test_markdown_export_is_a_table_per_task(results, capsys):
    assert main(["report", str(results), "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert text.count("### ") == 2
    lines = [line for line in text.splitlines() if line.startswith("|")]
    widths = {line.count("|") for line in lines}
    assert widths == {4}  # | regularizer | keep 0.5 | keep 1.0 |
    assert "|---|---:|---:|" in text and "◆" in text


def test_wide_csv_has_one_row_per_task_and_regularizer_and_a_column_per_keep_rate(results, capsys):
    assert main(["report", str(results), "--format", "csv", "--metric", "test_error"]) == 0
    wide = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(wide) == 2 * 2
    assert {"task", "regularizer", "keep_0.5", "keep_0.5_ci", "keep_1", "keep_1_ci"} <= set(wide.columns)
    frame = pd.read_csv(results)
    mine = frame[(frame.task == "wine") & (frame.regularizer == "none") & (frame.keep_rate == 0.5)]
    row = wide[(wide.task == "wine") & (wide.regularizer == "none")].iloc[0]
    assert row["keep_0.5"] == pytest.approx(100 * (1 - mine["test_acc"].mean()), rel=1e-5)


@pytest.mark.slow
def test_json_export_lists_every_configuration_with_its_test(results, capsys):
    assert main(["report", str(results), "--format", "json", "--metric", "test_acc"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["metric"] == "test_acc" and len(payload["configurations"]) == 8
    tested = [c for c in payload["configurations"] if c.get("p_value") is not None]
    assert tested and all({"delta", "delta_low", "delta_high", "significant"} <= set(c) for c in tested)


def test_best_and_task_filter(results, capsys):
    assert main(["report", str(results), "--best", "--task", "wine"]) == 0
    out = capsys.readouterr().out
    assert "wine" in out and "diabetes" not in out
    assert main(["report", str(results), "--task", "mnist"]) == 2


def test_report_shows_failed_cells(results, tmp_path, capsys):
    broken = tmp_path / "broken.csv"
    frame = pd.read_csv(results, dtype=str, keep_default_na=False)
    frame.loc[0, "status"] = "failed"
    frame.loc[0, "error"] = "RuntimeError: boom"
    frame.to_csv(broken, index=False)
    assert main(["report", str(broken)]) == 0
    out = capsys.readouterr().out
    assert "1 cell(s) not ok" in out and "RuntimeError: boom" in out


def _variant(path, tmp_path, name, shift):
    """A copy of `path` whose wine test accuracies moved by `shift(seed)` (fractions)."""
    frame = pd.read_csv(path)
    wine = frame["task"] == "wine"
    frame.loc[wine, "test_acc"] = frame.loc[wine, "test_acc"] + frame.loc[wine, "seed"].map(shift)
    out = tmp_path / name
    frame.to_csv(out, index=False)
    return out


@pytest.mark.slow
def test_compare_exit_codes(results, tmp_path, capsys):
    same = _variant(results, tmp_path, "same.csv", lambda s: 0.0)
    assert main(["compare", str(results), str(same)]) == 0
    drop = _variant(results, tmp_path, "drop.csv", lambda s: -0.05 + 0.001 * s)  # 5 pp lower on every seed
    assert main(["compare", str(results), str(drop), "--max-drop", "0.5", "--alpha", "0.2"]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "4 of 4 configurations worse" in out
    # The same drop on three seeds: 4 · 2/2^3 > 0.2, never significant, but no pass in silence either.
    three = tmp_path / "three.csv"
    frame = pd.read_csv(drop)
    frame[frame["seed"] < 3].to_csv(three, index=False)
    assert main(["compare", str(results), str(three), "--max-drop", "0.5", "--alpha", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "inconclusive" in out and "0 of 4 configurations worse" in out and "no change" not in out
    noisy = _variant(results, tmp_path, "noisy.csv", lambda s: [-0.03, 0.01, -0.004, -0.02, 0.012, -0.016][s])
    assert main(["compare", str(results), str(noisy), "--max-drop", "0.5"]) == 0
    assert "inconclusive" in capsys.readouterr().out
    partial = tmp_path / "partial.csv"
    pd.read_csv(results).iloc[:-3].to_csv(partial, index=False)
    assert main(["compare", str(results), str(partial), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["missing_in_new"]) == 3 and (payload["verdict"], payload["exit_code"]) == ("no regression", 0)


def test_compare_against_a_run_that_failed_everywhere_exits_2(results, tmp_path, capsys):
    frame = pd.read_csv(results)
    frame["status"], frame["error"], frame["test_acc"] = "failed", "RuntimeError: boom", float("nan")
    broken = tmp_path / "broken.csv"
    frame.to_csv(broken, index=False)
    assert main(["compare", str(results), str(broken), "--format", "markdown"]) == 2
    out, err = capsys.readouterr()
    # wine's 24 cells: diabetes is a regression task, so test_acc does not apply to it either way.
    assert err == "dropbench: error: nothing to compare: every matched cell of NEW failed or diverged (24 of 24)\n"
    assert out.rstrip().splitlines()[-1].startswith("**Verdict: not comparable**") and out.rstrip().endswith("exit 2")


@pytest.mark.slow
def test_plots_are_valid_png_and_svg_of_the_expected_size(results, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["plot", str(results), "-o", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"wine-keep-rate.png", "wine-gap-heatmap.png", "wine-learning-curves.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(png)
        assert image.shape[0] >= 400 and image.shape[1] >= 600 and np.ptp(image) > 0  # a drawn figure
    assert main(["plot", str(results), "-o", str(out), "--format", "svg", "--task", "diabetes"]) == 0
    svg = ET.parse(out / "diabetes-keep-rate.svg").getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox")


@pytest.mark.slow
def test_reference_numbers_sit_beside_matching_rows(results, tmp_path, capsys):
    frame = pd.read_csv(results, dtype={"strength": str})
    rows = frame[(frame.task == "wine") & (frame.regularizer == "l2") & (frame.keep_rate == 0.5)].copy()
    rows["task"], rows["regularizer"], rows["strength"], rows["input_keep_rate"] = "mnist", "max-norm", "3", 0.8
    rows["model"] = "mlp-1024-1024-2048"  # the paper's architecture: a reference row matches on it
    rows["cell_id"] = rows["cell_id"].str[::-1]
    mnist = tmp_path / "mnist.csv"
    rows.to_csv(mnist, index=False)
    assert main(["report", str(mnist), "--reference", "srivastava2014"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "Dropout + Max-norm" in line)
    ours = 100 * (1 - rows["test_acc"].mean())
    assert "1.05" in line and f"{ours:.2f}" in line and f"{ours - 1.05:+.2f}" in line
    assert "cifar10" not in out.split("srivastava2014")[1]  # only the run's tasks
    assert main(["plot", str(mnist), "-o", str(tmp_path), "--format", "svg", "--reference", "srivastava2014"]) == 0
    assert "srivastava2014 (published)" in (tmp_path / "mnist-keep-rate.svg").read_text()
