"""Outputs are exporters: one module per format in dropbench/report/exporters, found by its file name."""

import io
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import scipy.stats
from rich.console import Console
from test_verdicts import grid_rows

from dropbench.cli import main
from dropbench.report import exporters
from dropbench.report.compare import compare
from dropbench.report.data import build_report
from dropbench.report.history import Run, history
from dropbench.report.runs import run_info

FRAME = pd.DataFrame(grid_rows(seeds=4) + grid_rows(task="digits", seeds=4, rng_seed=1))


def text_of(output):
    if isinstance(output, str):
        return output
    console = Console(width=140, file=io.StringIO())
    console.print(output)
    return console.file.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("name", exporters.names())
def test_every_format_exports_a_report_a_comparison_and_a_history(name):
    exporter = exporters.get(name)
    assert exporter.name == name and exporter.suffix.startswith(".")
    for options in ({}, {"paired": True}, {"best": True}):
        assert "digits" in text_of(exporter.export(build_report(FRAME, metric="test_acc", **options)))
    assert "digits" in text_of(exporter.export_comparison(compare(FRAME, FRAME)))
    later = FRAME.assign(started_at="2026-12-07T00:00:00Z", git_commit="c" * 40)
    runs = [Run(run_info([], frame), frame) for frame in (FRAME.assign(started_at="2026-11-30T00:00:00Z"), later)]
    assert "digits" in text_of(exporter.export_history(history(runs)))


def test_the_formats_are_the_modules_and_the_default_comes_first():
    assert exporters.names() == ("table", "csv", "html", "json", "markdown")


def test_a_format_is_one_file(tmp_path, monkeypatch):
    """A new format is one module, registered by its name, listed by its file."""
    (tmp_path / "latex.py").write_text(
        textwrap.dedent("""
        from dropbench.report.exporters import Exporter, register

        @register
        class LatexExporter(Exporter):
            name = "latex"
            suffix = ".tex"

            def export(self, report):
                return "".join("% " + grid.title for grid in report.grids)
    """)
    )
    (tmp_path / "misnamed.py").write_text(
        textwrap.dedent("""
        from dropbench.report.exporters import Exporter, register

        @register
        class Misnamed(Exporter):
            name = "xlsx"
    """)
    )
    monkeypatch.setattr(exporters, "__path__", [*exporters.__path__, str(tmp_path)])
    assert "latex" in exporters.names()
    assert exporters.get("latex").export(build_report(FRAME)).startswith("% wine · gap_acc (pp)")
    with pytest.raises(TypeError, match="named 'xlsx' but lives in misnamed.py"):
        exporters.get("misnamed")
    monkeypatch.delitem(sys.modules, "dropbench.report.exporters.latex")
    monkeypatch.delitem(exporters._REGISTRY, "latex")


@pytest.mark.slow  # a fresh interpreter
def test_help_lists_the_formats_without_importing_pandas_torch_or_rich():
    code = (
        "import sys; from dropbench.cli import main; main(['report', '--help']); "
        "print(sorted(m for m in ('pandas', 'torch', 'rich', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "[table|csv|html|json|markdown]" in out and out.rstrip().endswith("[]")


@pytest.mark.slow  # a fresh interpreter
def test_the_progress_reporters_do_not_import_the_comparison():
    code = "import sys, dropbench.progress; print('dropbench.report.compare' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_reference_numbers_join_each_format_in_its_own_form(tmp_path, capsys):
    path = tmp_path / "r.csv"
    FRAME.to_csv(path, index=False)
    assert main(["report", str(path), "--format", "json", "--reference", "srivastava2014"]) == 0
    document = json.loads(capsys.readouterr().out)  # one document, not two
    assert document["reference"]["name"] == "srivastava2014" and document["reference"]["rows"] == []
    assert main(["report", str(path), "--format", "markdown", "--reference", "srivastava2014"]) == 0
    assert "### srivastava2014: published test error" in capsys.readouterr().out
    assert main(["report", str(path), "--format", "csv", "--reference", "srivastava2014", "--paired"]) == 2
    assert "one table" in capsys.readouterr().err


def test_the_wide_csv_gives_seeds_and_the_test_figure_with_its_interval(tmp_path, capsys):
    path = tmp_path / "r.csv"
    frame = FRAME[~((FRAME["regularizer"] == "l2") & (FRAME["keep_rate"] == 0.5) & (FRAME["seed"] == 3))]
    frame.to_csv(path, index=False)
    assert main(["report", str(path), "--format", "csv"]) == 0
    wide = pd.read_csv(io.StringIO(capsys.readouterr().out))
    row = wide[(wide["task"] == "wine") & (wide["regularizer"] == "l2")].iloc[0]
    assert (row["metric"], row["test_figure"]) == ("gap_acc (pp)", "test accuracy (%)")
    cells = frame[(frame["task"] == "wine") & (frame["regularizer"] == "l2") & (frame["keep_rate"] == 0.5)]
    acc = 100 * cells["test_acc"].to_numpy()
    half = scipy.stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / len(acc) ** 0.5
    assert row["keep_0.5_seeds"] == 3 and row["keep_1_seeds"] == 4
    assert row["keep_0.5_test"] == pytest.approx(acc.mean(), rel=1e-5)
    assert (row["keep_0.5_test_low"], row["keep_0.5_test_high"]) == pytest.approx(
        (acc.mean() - half, acc.mean() + half), rel=1e-5
    )
    assert row["keep_0.5"] == pytest.approx(100 * cells["gap_acc"].mean(), rel=1e-5)  # the gap stays beside them
