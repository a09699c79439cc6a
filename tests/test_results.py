import math
from pathlib import Path

import pytest

from dropbench.errors import UserError
from dropbench.results import (
    COLUMN_TYPES,
    COLUMNS,
    SCHEMA_VERSION,
    CsvTable,
    format_value,
    read_results,
    read_table,
)


def test_values_are_written_exactly_and_spreadsheet_safe():
    assert float(format_value(0.1 + 0.2)) == 0.1 + 0.2
    assert format_value(math.nan) == ""
    assert format_value("=cmd()") == "'=cmd()"
    assert format_value("-1 is bad") == "'-1 is bad"
    assert format_value("two\nlines") == "two lines"


def test_a_torn_last_line_is_dropped_before_appending(tmp_path):
    table = CsvTable(tmp_path / "t.csv", ("a", "b"))
    table.append([{"a": "x", "b": 1}])
    with open(table.path, "a") as handle:
        handle.write("y,")  # a kill in the middle of a row
    table.append([{"a": "z", "b": 3}])
    assert table.path.read_text() == "a,b\nx,1\nz,3\n"


def test_a_file_with_other_columns_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(UserError, match="leaves it alone"):
        CsvTable(path, ("a", "b")).append([{"a": 1, "b": 2}])
    assert path.read_text() == "x,y\n1,2\n"  # nothing already written is lost


def test_reading_a_file_that_is_not_results_is_a_user_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a dropbench results CSV"):
        read_results(path)


ROOT = Path(__file__).resolve().parent.parent


def test_the_whole_training_split_is_an_empty_train_size_and_reads_back_as_0(tmp_path):
    rows = [
        {
            **dict.fromkeys(COLUMNS, ""),
            "cell_id": cell_id,
            "train_size": size,
            "seed": 0,
            "max_epochs": 3,
            "epochs_run": 3,
            "best_epoch": 3,
            "batch_size": 64,
            "mc_samples": 0,
            "n_params": 1,
            "threads": 1,
            "schema_version": SCHEMA_VERSION,
            "keep_rate": 1.0,
            "input_keep_rate": 1.0,
        }
        for cell_id, size in (("all", 0), ("some", 200))
    ]
    for row in rows:
        row.update({c: math.nan for c in COLUMNS if COLUMN_TYPES[c] is float and row[c] == ""})
    path = tmp_path / "r.csv"
    CsvTable(path, COLUMNS).append(rows)
    written = {r["cell_id"]: r["train_size"] for r in CsvTable(path, COLUMNS).read_rows()}
    assert written == {"all": "", "some": "200"}
    assert [r["train_size"] for r in read_table(path, COLUMN_TYPES)] == [0, 200]  # what merge writes back
    frame = read_results(path)
    assert frame["train_size"].tolist() == [0, 200] and frame["train_size"].dtype.kind == "i"


def test_a_schema_4_file_reads_in_the_current_columns():
    """tests/data/schema4.csv (rows of results/quick as schema 4 wrote them): its train_size 0 is the whole split,
    its test_nll (test_loss again) is dropped and its test_nll_mc is the current test_loss_mc."""
    path = ROOT / "tests" / "data" / "schema4.csv"
    header = path.read_text().split("\n", 1)[0].split(",")
    assert "test_nll" in header and "test_nll_mc" in header and "test_loss_mc" not in header
    frame = read_results(path)
    assert (frame["schema_version"] == 4).all()
    assert "test_nll" not in frame and "test_nll_mc" not in frame and "test_loss_mc" in frame
    assert (frame["train_size"] == 0).all() and frame["train_size"].dtype.kind == "i"
    assert set(frame.columns) <= set(COLUMNS)
