import math
import textwrap

import pytest

from dropbench.errors import UserError
from dropbench.suite import Overrides, apply_overrides, bundled_suite_names, find_suite, load_suite


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = """
name = "mini"
keep_rates = [1.0, 0.5]
regularizers = ["none", "l1+l2"]
seeds = 2
epochs = 2
[regularizer.l2]
strength = 0.001
[[task]]
name = "wine"
[[task]]
name = "diabetes"
optimizer = { name = "adam", lr = 0.001 }
"""


def test_the_quick_suite_is_the_default_and_its_grid_is_the_full_product():
    suite = load_suite()
    assert suite.name == "quick" and "quick" in bundled_suite_names()
    cells = suite.cells()
    assert len(cells) == len(suite.tasks) * len(suite.regularizers) * len(suite.keep_rates) * len(suite.seeds)
    assert len(cells) == 288
    assert len({c.cell_id for c in cells}) == len(cells)


def test_a_suite_file_is_parsed_with_defaults_and_per_task_settings(tmp_path):
    suite = load_suite(str(write(tmp_path, MINIMAL)))
    assert suite.keep_rates == (0.5, 1.0)
    assert [r.name for r in suite.regularizers] == ["none", "l1+l2"]
    assert suite.regularizers[1].strength_label == "1e-05+0.001"
    assert suite.seeds == (0, 1)
    wine, diabetes = suite.tasks
    assert wine.optimizer.name == "sgd" and wine.epochs == 2
    assert diabetes.optimizer.name == "adam" and diabetes.optimizer.lr == 0.001
    assert len(suite.cells()) == 2 * 2 * 2 * 2


def test_cell_ids_are_stable_and_ignore_the_suite_name(tmp_path):
    a = load_suite(str(write(tmp_path, MINIMAL))).cells()
    b = load_suite(str(write(tmp_path, MINIMAL.replace('"mini"', '"other"'), "t.toml"))).cells()
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    changed = load_suite(str(write(tmp_path, MINIMAL.replace("epochs = 2", "epochs = 3"), "u.toml"))).cells()
    assert not {c.cell_id for c in a} & {c.cell_id for c in changed}


def test_overrides_replace_the_file_values(tmp_path):
    suite = load_suite(str(write(tmp_path, MINIMAL)))
    changed = apply_overrides(
        suite, Overrides(tasks=("digits", "wine"), keep_rates=(0.8,), regularizers=("l2",), seeds=1, epochs=4)
    )
    assert [t.name for t in changed.tasks] == ["digits", "wine"]
    assert all(t.epochs == 4 for t in changed.tasks)
    assert changed.keep_rates == (0.8,)
    assert changed.regularizers[0].strength_label == "0.001"  # the suite's strength still applies
    assert len(changed.cells()) == 2


def test_the_smallest_keep_rate_the_masks_realise_is_allowed_and_the_next_float_below_is_not(tmp_path):
    smallest = 2.0**-16
    suite = load_suite(str(write(tmp_path, f"keep_rates = [{smallest!r}]\n[[task]]\nname = 'wine'\n")))
    assert suite.keep_rates == (smallest,)
    below = math.nextafter(smallest, 0.0)
    with pytest.raises(UserError, match=r"is below 1/65536"):
        load_suite(str(write(tmp_path, f"keep_rates = [{below!r}]\n[[task]]\nname = 'wine'\n", "b.toml")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keep_rate = [0.5]", "unknown key 'keep_rate' (did you mean 'keep_rates'?)"),
        ("keep_rates = [0.5, 1.2]", "keep rate 1.2 is outside (0, 1]"),
        ("keep_rates = [0.0]", "keep rate 0 is outside (0, 1]"),
        ("keep_rates = [1e-9, 0.5]", "keep_rates: keep rate 1e-09 is below 1/65536 ≈ 1.5e-05, the smallest rate"),
        ("keep_rates = [[0.5, 1e-9]]", "keep_rates: keep rate 1e-09 is below 1/65536"),
        ("input_keep_rate = [1e-9, 1.0]", "input_keep_rate: keep rate 1e-09 is below 1/65536"),
        ("model = { kind = 'cnn', channels = [8], conv_keep = 1e-9 }", "conv_keep: keep rate 1e-09 is below 1/65536"),
        ("keep_rates = 'half'", "expected a number"),
        ("regularizers = ['l3']", "unknown regularizer 'l3'"),
        ("seeds = 0", "expected an integer ≥ 1"),
        ("epochs = 2.5", "expected an integer ≥ 1"),
        ("[regularizer.l2]\nstrenght = 1", "unknown key 'strenght' (did you mean 'strength'?)"),
        ("[regularizer.l2]\nstrength = -1", "strength must be > 0"),
        ("[regularizer.early-stopping]\nstrength = 2.5", "an integer ≥ 1"),
        ("optimizer = { name = 'rmsprop' }", "unknown value 'rmsprop'; allowed: sgd, adam"),
        ("model = { kind = 'mlp', hidden = [0] }", "hidden: expected an integer ≥ 1"),
    ],
)
def test_bad_suites_name_the_file_the_key_and_what_is_allowed(tmp_path, text, expected):
    path = write(tmp_path, text + "\n[[task]]\nname = 'wine'\n")
    with pytest.raises(UserError) as error:
        load_suite(str(path))
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_bad_tasks_and_files_are_named(tmp_path):
    with pytest.raises(UserError, match=r"task\[0\].name: unknown task 'mnsit' \(did you mean 'mnist'\?\); known: "):
        load_suite(str(write(tmp_path, "[[task]]\nname = 'mnsit'\n")))
    with pytest.raises(UserError, match="unknown key 'lr'"):
        load_suite(str(write(tmp_path, "[[task]]\nname = 'wine'\nlr = 0.1\n")))
    with pytest.raises(UserError, match="no \\[\\[task\\]\\] table"):
        load_suite(str(write(tmp_path, "name = 'x'\n")))
    with pytest.raises(UserError, match="not valid TOML"):
        load_suite(str(write(tmp_path, "name = \n")))
    with pytest.raises(UserError, match="suite file not found: nope.toml"):
        find_suite("nope.toml")
    with pytest.raises(UserError, match="unknown suite 'nope'; bundled: .*quick"):
        find_suite("nope")
    with pytest.raises(UserError, match="listed twice"):
        load_suite(str(write(tmp_path, "[[task]]\nname = 'wine'\n[[task]]\nname = 'wine'\n")))


@pytest.mark.parametrize(
    ("suite", "results"),
    [
        ("quick", "quick/quick.csv"),
        ("srivastava2014-table9", "srivastava2014/table9.csv"),
        ("srivastava2014-figure9", "srivastava2014/figure9.csv"),
        ("srivastava2014-figure10", "srivastava2014/figure10.csv"),
    ],
)
def test_ordinary_cell_ids_are_those_of_the_committed_results(suite, results):
    """Schema 6 added the tuning columns to Cell; an ordinary grid's cells leave them out of their identity, so
    every committed results file is still this suite's grid, cell for cell (a resume skips all of it). Schema 7 put
    a letter before the ids (the committed files were migrated); a file of an earlier schema gets it when read."""
    import csv
    import io
    from pathlib import Path

    from dropbench.ids import upgrade_id

    path = Path(__file__).resolve().parent.parent / "results" / results
    written = {upgrade_id("cell_id", row["cell_id"]) for row in csv.DictReader(io.StringIO(path.read_text()))}
    cells = load_suite(suite).cells()
    assert {c.cell_id for c in cells} == written
    assert all(c.seed_key == c.cell_id[1:] for c in cells)  # the hash their figures' random streams derive from
    assert all(c.method == "" and c.phase == "" and c.trial is None for c in cells)


def test_a_tuning_table_beside_an_ordinary_grid_key_is_refused(tmp_path):
    text = MINIMAL.replace("[[task]]", "[tuning]\nmethods = ['none']\nbudget = 2\n[[task]]", 1)
    with pytest.raises(UserError, match=r"s.toml: keep_rates: not used beside \[tuning\]"):
        load_suite(str(write(tmp_path, text)))
