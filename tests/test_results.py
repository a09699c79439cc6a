import math

import pytest

from dropbench.errors import UserError
from dropbench.results import CsvTable, format_value, read_results


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
    with pytest.raises(UserError, match="not this dropbench's schema"):
        CsvTable(path, ("a", "b")).append([{"a": 1, "b": 2}])
    assert path.read_text() == "x,y\n1,2\n"  # nothing already written is lost


def test_reading_a_file_that_is_not_results_is_a_user_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a dropbench results CSV"):
        read_results(path)
