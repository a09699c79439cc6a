"""Results files survive a spreadsheet: ids and text come back as written, numbers as the same numbers.

The round trip runs LibreOffice Calc headless (Debian's libreoffice-calc-nogui; .ci/run installs it) with the CSV
import set to read values the way Excel does: US English, "detect special numbers" on (dates, times, scientific
notation). It skips, saying so, where soffice is absent.
"""

import io
import itertools
import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dropbench.results import (
    COLUMN_TYPES,
    COLUMNS,
    TEXT_COLUMNS,
    CsvTable,
    format_value,
    read_results,
    read_table,
    read_text,
    spreadsheet_reads_as_value,
)

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "results" / "quick" / "quick.csv"
SOFFICE = shutil.which("soffice")
# Field separator, text delimiter, UTF-8, from line 1, no column types, US English, quoted fields not forced to
# text, detect special numbers: what a user double-clicking a CSV gets from Excel.
CSV_IMPORT = "CSV:44,34,76,1,,1033,false,true"
# The same on the way out, cells saved as their values rather than as shown.
CSV_EXPORT = "csv:Text - txt - csv (StarCalc):44,34,76,1,,1033,false,false,false"
# A spreadsheet keeps 15 significant digits of a number (LibreOffice rounds on reading, as Excel does); the CSV
# holds 17 (repr), so a number may come back changed in its last two digits and in nothing else.
SPREADSHEET_DIGITS = 1e-14

# Text that spreadsheets turn into something else, each in the column where dropbench could meet it.
TRICKY = [
    {"error": "=1+1", "host": "Jan 5", "cpu": "1/2", "strength": "1e-05", "layer_keep_rates": "0.8/0.5"},
    {"suite": "-smoke", "task": "SEPT2", "dropbench_version": "1.10", "device": "12-31", "strength": "1e-05+0.01"},
    {"error": "@SUM(A1)", "host": "'quoted", "python_version": "3.11.2", "torch_version": "2.13", "cpu": "TRUE"},
    {"git_commit": "0123456789" * 4, "sklearn_version": "50%", "optimizer": "adam(0.9,0.99)", "method": "l2+dropout"},
    {"git_commit": "1234567e10", "error": "+cmd|' /C calc'!A0", "host": "(5)", "phase": "tune", "trial": 3},
]


def test_text_a_spreadsheet_reads_as_a_value_is_written_behind_an_apostrophe():
    for text in ("0.8/0.5", "1e-05", "3.11.2", "12-31", "50%", "(5)", "Jan 5", "5-may", "SEPT2", "TRUE", "false"):
        assert spreadsheet_reads_as_value(text) and format_value(text) == "'" + text, text
    for text in ("c7893406999e0", "s0123456789ab", "mlp-128-128", "2.13.0+cpu", "adam(0.9,0.99)", "cuda:0", "May"):
        assert not spreadsheet_reads_as_value(text) and format_value(text) == text, text
    assert format_value(7) == "7" and format_value(0.5) == "0.5"  # numbers stay numbers


def test_every_short_text_reads_back_as_written():
    """format_value's escaping is undone by read_text exactly, whatever the text (including ones that start with the
    apostrophe itself, or that only look escaped)."""
    alphabet = ["'", "=", "-", "1", ".", "/", "e", "a", " ", "jan", "true"]
    for size in range(4):
        for parts in itertools.product(alphabet, repeat=size):
            text = "".join(parts)
            assert read_text(format_value(text)) == text, text


def tricky_results(path: Path) -> Path:
    """The committed quick run's first rows, with TRICKY's text in them, written as dropbench writes a run."""
    rows = read_table(QUICK, COLUMN_TYPES)[: len(TRICKY)]
    CsvTable(path, COLUMNS).append([{**row, **tricky} for row, tricky in zip(rows, TRICKY)])
    return path


def soffice(source: Path, target: str, out: Path, profile: Path, infilter: str | None = None) -> Path:
    """Convert `source` with LibreOffice headless (a profile of its own, so that runs never share one)."""
    command = [SOFFICE, f"-env:UserInstallation={profile.as_uri()}", "--headless"]
    command += [f"--infilter={infilter}"] if infilter else []
    subprocess.run(
        [*command, "--convert-to", target, "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    converted = out / f"{source.stem}.{target.split(':')[0]}"
    assert converted.is_file(), f"soffice wrote no {converted}"
    return converted


def assert_cells_survive(original: Path, workbook: Path) -> None:
    """Every cell of the xlsx as the CSV held it: text columns as the same text, number columns as numbers."""
    import openpyxl

    sheet = openpyxl.load_workbook(workbook, read_only=True).active
    sheet_rows = list(sheet.iter_rows(values_only=True))
    csv_rows = pd.read_csv(original, dtype=str, keep_default_na=False).to_dict("records")
    assert list(sheet_rows[0]) == list(COLUMNS)
    assert len(sheet_rows) == len(csv_rows) + 1
    for line, (cells, written) in enumerate(zip(sheet_rows[1:], csv_rows), start=2):
        for column, value in zip(COLUMNS, cells):
            text = written[column]
            where = f"line {line}, {column}: {text!r} came back as {value!r}"
            if column in TEXT_COLUMNS:
                assert value == (text or None), where
            elif text == "":
                assert value is None, where
            else:
                assert isinstance(value, int | float) and not isinstance(value, bool), where
                assert math.isclose(value, float(text), rel_tol=SPREADSHEET_DIGITS), where


def assert_same_results(back: Path, original: Path) -> None:
    """What dropbench reads from the spreadsheet's CSV: the same text, and numbers within 15 digits."""
    before, after = read_results(original), read_results(back)
    assert list(after.columns) == list(before.columns)
    for column in before.columns:
        if column in TEXT_COLUMNS:
            assert after[column].fillna("").tolist() == before[column].fillna("").tolist(), column
        else:
            pd.testing.assert_series_equal(
                after[column].astype(float), before[column].astype(float), rtol=SPREADSHEET_DIGITS, check_dtype=False
            )


@pytest.mark.slow  # LibreOffice: ~3 s a conversion
@pytest.mark.skipif(
    SOFFICE is None, reason="LibreOffice (soffice) is not installed: apt-get install libreoffice-calc-nogui"
)
@pytest.mark.parametrize("source", ["committed", "tricky"])
def test_a_results_file_survives_a_round_trip_through_libreoffice_calc(tmp_path, source):
    original = QUICK if source == "committed" else tricky_results(tmp_path / "tricky.csv")
    profile = tmp_path / "profile"
    workbook = soffice(original, "xlsx", tmp_path / "xlsx", profile, infilter=CSV_IMPORT)
    assert_cells_survive(original, workbook)
    back = soffice(workbook, CSV_EXPORT, tmp_path / "back", profile)
    assert_same_results(back, original)


def workbook(path: Path) -> dict[str, list[tuple]]:
    import openpyxl

    book = openpyxl.load_workbook(path)
    assert all(sheet.freeze_panes == "B2" for sheet in book), "header row and label column frozen"
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in book}


def test_report_as_xlsx_has_a_sheet_per_table_and_numbers_as_numbers(tmp_path, capsys):
    from dropbench.cli import main

    out = tmp_path / "report.xlsx"
    assert main(["report", str(QUICK), "--format", "xlsx", "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    sheets = workbook(out)
    assert list(sheets) == ["breast-cancer", "wine", "diabetes", "synthetic", "tests", "summary", "legend"]
    assert ("synthetic", "gap_acc = train acc − test acc in percentage points, eval mode") in sheets["legend"]
    header, *rows = sheets["synthetic"]
    assert main(["report", str(QUICK), "--format", "csv", "--task", "synthetic"]) == 0
    wide = pd.read_csv(io.StringIO(capsys.readouterr().out))
    for (_, expected), row in zip(wide.iterrows(), rows):
        cells = dict(zip(header, row))
        assert cells["configuration"] == expected["row"]
        for keep in ("0.5", "1"):
            mean, low, high = (cells[f"keep {keep} {c}"] for c in ("gap_acc (pp)", "95% CI low", "95% CI high"))
            assert all(isinstance(v, float) for v in (mean, low, high))
            assert mean == pytest.approx(expected[f"keep_{keep}"], rel=1e-5)
            assert high - mean == pytest.approx(expected[f"keep_{keep}_ci"], rel=1e-4)
            assert isinstance(cells[f"keep {keep} seeds"], int)
    assert dict(zip(header, rows[0]))["keep 1 marks"] == "◆"  # the baseline
    tests = dict(zip(sheets["tests"][0], sheets["tests"][1]))
    assert all(isinstance(tests[c], int | float) for c in ("p_value", "delta", "delta_low", "delta_high"))


def test_comparison_as_xlsx_holds_the_verdict(tmp_path):
    from dropbench.cli import main

    out = tmp_path / "compare.xlsx"
    assert main(["compare", str(QUICK), str(QUICK), "--format", "xlsx", "--out", str(out)]) == 0
    sheets = workbook(out)
    verdict = dict(sheets["verdict"][1:])
    assert verdict["verdict"] == "no regression" and verdict["exit_code"] == 0
    header, *rows = sheets["comparison"]
    assert len(rows) == 3 * 4 * 2  # test_acc: the three classification tasks' configurations
    assert all(isinstance(dict(zip(header, r))["delta"], int | float) for r in rows)


def test_xlsx_keeps_text_as_text(tmp_path):
    """An xlsx types its cells: text that looks like a formula or a date stays text, with no apostrophe."""
    from dropbench.report.exporters.xlsx import workbook_bytes

    frame = pd.DataFrame({"label": ["=1+1", "0.8/0.5", "Jan 5"], "value": [1.5, math.nan, 3]})
    path = tmp_path / "t.xlsx"
    path.write_bytes(workbook_bytes([("a/b:c", frame), ("a-b-c", frame)]))
    sheets = workbook(path)
    assert list(sheets) == ["a-b-c", "a-b-c (2)"]
    assert sheets["a-b-c"][1:] == [("=1+1", 1.5), ("0.8/0.5", None), ("Jan 5", 3)]


def test_other_formats_go_to_out_too(tmp_path, capsys):
    from dropbench.cli import main

    out = tmp_path / "sub" / "report.md"
    assert main(["report", str(QUICK), "--format", "markdown", "--out", str(out)]) == 0
    assert capsys.readouterr().out == "" and out.read_text().startswith("###")
    assert main(["report", str(QUICK), "--out", str(tmp_path / "table.txt")]) == 0
    assert "synthetic · gap_acc" in (tmp_path / "table.txt").read_text()
    assert main(["report", str(QUICK), "--format", "xlsx", "--out", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def later_copy(path: Path, year: str) -> Path:
    """results/quick as if run again in `year`: the same cells and figures, a later started_at."""
    frame = pd.read_csv(QUICK, dtype=str, keep_default_na=False)
    frame["started_at"] = year + frame["started_at"].str[4:]
    frame.to_csv(path, index=False)
    return path


def test_history_as_xlsx_holds_each_point_the_runs_and_the_verdict(tmp_path, capsys):
    from dropbench.cli import main

    later = later_copy(tmp_path / "later.csv", "2030")
    out = tmp_path / "history.xlsx"
    assert main(["history", str(QUICK), str(later), "--format", "xlsx", "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    sheets = workbook(out)
    assert list(sheets) == ["history", "runs", "verdict", "legend"]
    header, *rows = sheets["history"]
    records = [dict(zip(header, row)) for row in rows]
    assert {r["run"] for r in records} == {1, 2} and len(records) == 2 * 3 * 4 * 2  # test_acc: 3 tasks' configs
    assert all(isinstance(r["mean"], float) and r["95% CI low"] <= r["mean"] <= r["95% CI high"] for r in records)
    second = [r for r in records if r["run"] == 2]
    assert all(r["delta"] == 0 and r["verdict"] == "no change" and r["change"] is None for r in second)
    assert [r[0] for r in sheets["runs"][1:]] == ["#1", "#2"] and sheets["runs"][0][0] == "run"
    verdict = dict(sheets["verdict"][1:])
    assert verdict["verdict"] == "no regression" and verdict["exit_code"] == 0 and verdict["runs"] == 2
    assert any("moved significantly" in str(line) for _, line in sheets["legend"][1:])


def test_a_report_with_its_comparison_and_history_as_xlsx(tmp_path):
    from dropbench.cli import main

    later = later_copy(tmp_path / "later.csv", "2030")
    out = tmp_path / "report.xlsx"
    args = ["report", str(later), "--compare", str(QUICK), "--history", str(QUICK), "--format", "xlsx"]
    assert main([*args, "--out", str(out)]) == 0
    names = list(workbook(out))
    assert names[:7] == ["breast-cancer", "wine", "diabetes", "synthetic", "tests", "summary", "legend"]
    history = ["history", "history runs", "history verdict", "history legend"]
    assert names[7:] == ["comparison", "compare verdict", *history]


@pytest.mark.slow  # the page draws every figure
def test_html_and_history_go_to_out_too(tmp_path, capsys):
    from dropbench.cli import main

    page = tmp_path / "report.html"
    assert main(["report", str(QUICK), "--format", "html", "--out", str(page)]) == 0
    assert capsys.readouterr().out == "" and page.read_text().lstrip().lower().startswith("<!doctype html>")
    later = later_copy(tmp_path / "later.csv", "2030")
    trend = tmp_path / "history.html"
    assert main(["history", str(QUICK), str(later), "--format", "html", "--out", str(trend)]) == 0
    assert capsys.readouterr().out == "" and "</html>" in trend.read_text()
    text = tmp_path / "history.md"
    assert main(["history", str(QUICK), str(later), "--format", "markdown", "--out", str(text)]) == 0
    assert "**Verdict: no regression**" in text.read_text()
