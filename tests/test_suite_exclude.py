"""A suite's `exclude`: combinations left out of the grid, and everything that reads the grid seeing them gone."""

import json
import re
import textwrap

import pytest

from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.planning import Shard, shard_cells
from dropbench.runner import plan_run
from dropbench.suite import Overrides, apply_overrides, load_suite

# Srivastava et al.'s Table 9 as a grid: dropout is (0.5 hidden, 0.8 input), no dropout is (1.0, 1.0), and only
# l2 and max-norm are run with dropout.
TABLE9 = """
name = "t9"
seeds = 2
epochs = 1
keep_rates = [0.5, 1.0]
input_keep_rate = [0.8, 1.0]
regularizers = ["l2", "l1+l2", "l2+kl-sparsity", "max-norm"]
exclude = [
  { keep_rate = 0.5, input_keep_rate = 1.0 },
  { keep_rate = 1.0, input_keep_rate = 0.8 },
  { keep_rate = 0.5, regularizer = "l1+l2" },
  { keep_rate = 0.5, regularizer = "l2+kl-sparsity" },
]
[[task]]
name = "wine"
"""
TABLE9_LEFT = {
    ("l2", 0.5, 0.8),
    ("max-norm", 0.5, 0.8),
    ("l2", 1.0, 1.0),
    ("l1+l2", 1.0, 1.0),
    ("l2+kl-sparsity", 1.0, 1.0),
    ("max-norm", 1.0, 1.0),
}


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def without_exclude(text):
    return re.sub(r"exclude = \[.*?\n\]\n", "", text, flags=re.S)


def points(cells):
    return {(c.regularizer.name, c.keep_rate, c.input_keep_rate) for c in cells}


def grid(top, task="name = 'wine'"):
    """A suite of `top` keys over one task, seeds 1 unless given."""
    seeds = "" if re.search(r"^seeds\s*=", top, re.M) else "seeds = 1\n"
    return f"{seeds}{textwrap.dedent(top)}\n[[task]]\n{task}\n"


# ---------------------------------------------------------------- the grid left


def test_table9_leaves_exactly_the_combinations_the_paper_ran(tmp_path):
    cells = load_suite(write(tmp_path, TABLE9)).cells()
    assert points(cells) == TABLE9_LEFT
    assert len(cells) == len(TABLE9_LEFT) * 2  # every combination left runs at both seeds
    assert {c.seed for c in cells} == {0, 1}


def test_a_cell_left_is_the_same_cell_with_the_same_ids_in_the_same_order(tmp_path):
    excluded = load_suite(write(tmp_path, TABLE9)).cells()
    full = load_suite(write(tmp_path, without_exclude(TABLE9), "full.toml")).cells()
    assert len(full) == 2 * 2 * 4 * 2 > len(excluded)
    kept = [c for c in full if (c.regularizer.name, c.keep_rate, c.input_keep_rate) in TABLE9_LEFT]
    assert [c.cell_id for c in excluded] == [c.cell_id for c in kept]  # ids and the grid's order
    assert [c.setup_id for c in excluded] == [c.setup_id for c in kept]
    assert excluded == kept


def test_an_entry_matches_all_its_keys_and_any_entry_drops_a_cell(tmp_path):
    suite = load_suite(
        write(
            tmp_path,
            grid("""
            keep_rates = [0.5, 1.0]
            dropout = ["bernoulli", "gaussian"]
            regularizers = ["none", "l2"]
            exclude = [{ keep_rate = 1.0, dropout = "gaussian" }, { regularizer = "l2", dropout = "gaussian" }]
            """),
        )
    )
    left = {(c.regularizer.name, c.keep_rate, c.dropout) for c in suite.cells()}
    assert left == {
        ("none", 0.5, "bernoulli"),
        ("none", 1.0, "bernoulli"),
        ("none", 0.5, "gaussian"),  # neither entry matches all of its keys
        ("l2", 0.5, "bernoulli"),
        ("l2", 1.0, "bernoulli"),
    }


def test_tasks_train_sizes_and_per_layer_keep_rates_are_excluded_too(tmp_path):
    text = grid(
        """
        keep_rates = [1.0, [0.8, 0.5]]
        train_size = [50, 100]
        model = { kind = "mlp", hidden = [16, 16] }
        exclude = [{ task = "digits", train_size = 50 }, { keep_rate = [0.8, 0.5], train_size = 100 }]
        """,
        task="name = 'wine'\n[[task]]\nname = 'digits'",
    )
    left = {(c.task.name, c.keep_rate, c.train_size) for c in load_suite(write(tmp_path, text)).cells()}
    assert left == {
        ("wine", 1.0, 50),
        ("wine", (0.8, 0.5), 50),
        ("wine", 1.0, 100),
        ("digits", 1.0, 100),
    }


def test_a_regularizer_is_named_by_its_spec_and_every_swept_strength_of_it_goes(tmp_path):
    text = grid("""
    regularizers = ["none", "l1+l2"]
    keep_rates = [0.5, 1.0]
    exclude = [{ regularizer = "l2+l1", keep_rate = 0.5 }]
    [regularizer.l2]
    strength = [1e-4, 1e-3]
    """)
    cells = load_suite(write(tmp_path, text)).cells()
    assert {(c.regularizer.name, c.keep_rate) for c in cells} == {("none", 0.5), ("none", 1.0), ("l1+l2", 1.0)}
    assert {c.regularizer.strength_label for c in cells if c.regularizer.name == "l1+l2"} == {
        "1e-05+0.0001",
        "1e-05+0.001",
    }


def test_keep_rates_match_within_float_noise_only(tmp_path):
    path = write(tmp_path, grid("keep_rates = [0.3, 0.4, 1.0]"))
    noisy = load_suite(path, set={"exclude": [{"keep_rate": 0.1 + 0.2}]})  # 0.30000000000000004
    assert {c.keep_rate for c in noisy.cells()} == {0.4, 1.0}
    with pytest.raises(UserError, match=r"0.300001 is not one of the suite's keep rates 0.3, 0.4, 1.0"):
        load_suite(path, set={"exclude": [{"keep_rate": 0.300001}]}).cells()


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            "[{ keep = 0.5 }]",
            "s.toml: exclude[0]: unknown key 'keep' (did you mean 'keep_rate'?); allowed: task, regularizer, "
            "keep_rate, input_keep_rate, dropout, train_size",
        ),
        ("[{ seed = 1 }]", "s.toml: exclude[0].seed: seeds cannot be excluded"),
        ("[{ keep_rate = 0.5 }, { seeds = [1] }]", "exclude[1].seeds: seeds cannot be excluded"),
        ("[{}]", "s.toml: exclude[0]: an empty entry would match every cell; give one or more of task, regularizer"),
        ("[{ keep_rate = 'half' }]", "s.toml: exclude[0].keep_rate: expected a number, got 'half'"),
        ("[{ keep_rate = true }]", "exclude[0].keep_rate: expected a number, got True"),
        ("[{ input_keep_rate = [0.8] }]", "exclude[0].input_keep_rate: expected a number, got [0.8]"),
        ("[{ input_keep_rate = 1.5 }]", "exclude[0].input_keep_rate: keep rate 1.5 is outside (0, 1]"),
        ("[{ dropout = 1 }]", "exclude[0].dropout: expected a string, got 1"),
        ("[{ train_size = 0.5 }]", "exclude[0].train_size: expected an integer ≥ 1, got 0.5"),
        ("[{ task = ['wine'] }]", "exclude[0].task: expected a string, got ['wine']"),
        ("5", "s.toml: exclude: expected an array of tables"),
        ("[0.5]", "s.toml: exclude[0]: expected a table of grid values"),
        (
            "[{ keep_rate = 1.0 }, { keep_rate = 1.0, input_keep_rate = 0.8 }, { keep_rate = 0.3 }]",
            "s.toml: exclude[2].keep_rate: 0.3 is not one of the suite's keep rates 0.5, 1.0",
        ),
        ("[{ keep_rate = [0.5, 0.5] }]", "exclude[0].keep_rate: [0.5, 0.5] is not one of the suite's keep rates"),
        (
            "[{ input_keep_rate = 0.5 }]",
            "exclude[0].input_keep_rate: 0.5 is not one of the suite's input keep rates 0.8, 1.0",
        ),
        ("[{ regularizer = 'l1' }]", "exclude[0].regularizer: 'l1' is not one of the suite's regularizers none, l2"),
        ("[{ task = 'digits' }]", "exclude[0].task: 'digits' is not one of the suite's tasks wine"),
        (
            "[{ dropout = 'gaussian' }]",
            "exclude[0].dropout: 'gaussian' is not one of the suite's dropout kinds bernoulli",
        ),
        (
            "[{ train_size = 100 }]",
            "exclude[0].train_size: 100 is not one of the suite's train sizes (it sets no train_size",
        ),
        ("[{ keep_rate = 0.5 }, { keep_rate = 1.0 }]", "s.toml: exclude removes every cell of the grid"),
        ("[{ task = 'wine' }]", "s.toml: exclude removes every cell of the grid"),
    ],
)
def test_a_bad_exclude_is_one_line_naming_the_file_and_the_entry(tmp_path, entries, expected):
    text = grid(
        f"keep_rates = [0.5, 1.0]\ninput_keep_rate = [0.8, 1.0]\nregularizers = ['none', 'l2']\nexclude = {entries}"
    )
    path = write(tmp_path, text)
    with pytest.raises(UserError) as error:
        load_suite(path)
    message = str(error.value)
    assert expected in message and message.startswith(str(path)) and "\n" not in message


def test_a_bad_exclude_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    path = write(tmp_path, grid("keep_rates = [0.5, 1.0]\nexclude = [{ keep_rate = 0.3 }]"))
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "r.csv")]) == 2
    captured = capsys.readouterr()
    expected = f"dropbench: error: {path}: exclude[0].keep_rate: 0.3 is not one of the suite's keep rates 0.5, 1.0\n"
    assert captured.err == expected and "Traceback" not in captured.err
    assert captured.out == "" and not (tmp_path / "r.csv").exists()


TUNED = """
exclude = [{ dropout = "bernoulli" }]
[tuning]
methods = ["none", "l2"]
budget = 2
[tuning.space]
l2 = [1e-4, 1e-3]
[[task]]
name = "wine"
"""


def test_a_tuned_suite_refuses_exclude_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"s\.toml: exclude: not used beside \[tuning\] \(the \[tuning\] methods"):
        load_suite(write(tmp_path, TUNED))
    tuned = write(tmp_path, TUNED.replace('exclude = [{ dropout = "bernoulli" }]', ""), "t.toml")
    assert len(load_suite(tuned).cells()) > 0
    with pytest.raises(UserError, match=r"^--set exclude=\[\{dropout=\"bernoulli\"\}\]: not used beside \[tuning\]"):
        load_suite(tuned, set=['exclude=[{dropout="bernoulli"}]'])


# ---------------------------------------------------------------- overrides: flags and --set


@pytest.fixture
def table9(tmp_path):
    return write(tmp_path, TABLE9)


def test_a_flag_that_removes_an_excluded_value_leaves_its_entries_matching_nothing(table9):
    narrowed = apply_overrides(load_suite(table9), Overrides(keep_rates=(1.0,), regularizers=("l2", "l1+l2")))
    assert points(narrowed.cells()) == {("l2", 1.0, 1.0), ("l1+l2", 1.0, 1.0)}
    # a flag that adds a value no entry names: its combinations stay
    widened = apply_overrides(load_suite(table9), Overrides(input_keep_rates=(0.5, 0.8, 1.0)))
    assert {("l1+l2", 1.0, 0.5), ("max-norm", 0.5, 0.5), ("max-norm", 1.0, 0.5)} <= points(widened.cells())
    assert ("l1+l2", 0.5, 0.5) not in points(widened.cells())  # its own entry names no input keep rate


def test_a_flag_that_leaves_only_excluded_cells_is_refused_naming_the_flags(table9):
    with pytest.raises(UserError, match=r"s\.toml with --keep, --input-keep: exclude removes every cell of the grid"):
        apply_overrides(load_suite(table9), Overrides(keep_rates=(0.5,), input_keep_rates=(1.0,)))


def test_a_file_entry_must_name_the_file_s_own_grid_even_where_a_flag_adds_the_value(tmp_path):
    path = write(tmp_path, grid("keep_rates = [0.5, 1.0]\nexclude = [{ keep_rate = 0.3 }]"))
    with pytest.raises(
        UserError, match=r"exclude\[0\]\.keep_rate: 0\.3 is not one of the suite's keep rates 0\.5, 1\.0"
    ):
        apply_overrides(load_suite(path), Overrides(keep_rates=(0.3, 1.0)))


def test_set_exclude_replaces_the_file_s_list(table9, tmp_path, capsys):
    out = str(tmp_path / "r.csv")
    assert main(["run", str(table9), "--dry-run", "--out", out, "--set", "exclude=[{keep_rate=0.5}]"]) == 0
    assert re.search(r"all\s*│\s*16\s*│\s*0\s*│\s*16\s*│", capsys.readouterr().out)  # 4 regs × 2 inputs × 2 seeds
    suite = load_suite(table9, set={"exclude": [{"regularizer": "max-norm"}]})
    assert len(suite.cells()) == 3 * 2 * 2 * 2
    assert suite.describe()["exclude"] == [{"regularizer": "max-norm"}]
    assert suite.describe()["set"] == {"exclude": [{"regularizer": "max-norm"}]}


def test_set_exclude_is_checked_against_the_grid_the_flags_make(table9):
    entry = {"exclude": [{"keep_rate": 0.3}]}
    suite = apply_overrides(load_suite(table9, set=entry), Overrides(keep_rates=(0.3, 1.0)))
    assert {c.keep_rate for c in suite.cells()} == {1.0}
    with pytest.raises(UserError, match=r"^set\['exclude'\]: exclude\[0\]\.keep_rate: 0\.3 is not one of the suite's"):
        apply_overrides(load_suite(table9, set=entry), Overrides(keep_rates=(0.8, 1.0)))
    with pytest.raises(UserError, match=r"^set\['exclude'\]: exclude\[0\]\.keep_rate: 0\.3 is not one of the suite's"):
        load_suite(table9, set=entry).cells()  # no flag: the grid --set made is the final one


def test_set_exclude_errors_name_the_override(table9, capsys):
    args = ["run", str(table9), "--dry-run", "--set", "exclude=[{keep_rate='a'}]"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        err == "dropbench: error: --set exclude=[{keep_rate='a'}]: exclude[0].keep_rate: expected a number, got 'a'\n"
    )


def test_a_set_that_removes_a_value_a_file_entry_names_leaves_it_matching_nothing(table9):
    suite = load_suite(table9, set={"keep_rates": [1.0]})
    assert points(suite.cells()) == {(r, 1.0, 1.0) for r in ("l2", "l1+l2", "l2+kl-sparsity", "max-norm")}


# ---------------------------------------------------------------- what reads the grid


def test_the_dry_run_counts_the_cells_left(table9, tmp_path, capsys):
    assert main(["run", str(table9), "--dry-run", "--out", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"wine\s*│\s*12\s*│\s*0\s*│\s*12\s*│", out) and re.search(r"all\s*│\s*12\s*│", out), out


def test_shards_partition_the_grid_left(table9, tmp_path):
    suite = load_suite(table9)
    cells = suite.cells()
    shards = [plan_run(suite, tmp_path / "r.csv", shard=Shard(i, 3)).cells for i in (1, 2, 3)]
    ids = [c.cell_id for shard in shards for c in shard]
    assert sorted(ids) == sorted(c.cell_id for c in cells) and len(ids) == len(set(ids)) == 12
    assert all(shards)
    assert shard_cells(cells, Shard(2, 3)) == shards[1]


def test_the_recorded_suite_holds_the_exclude_list_and_none_without_one(table9, tmp_path):
    recorded = load_suite(table9).describe()
    assert recorded["exclude"][0] == {"keep_rate": 0.5, "input_keep_rate": 1.0}
    assert recorded["exclude"][2] == {"regularizer": "l1+l2", "keep_rate": 0.5}
    json.dumps(recorded)  # the sidecar is JSON
    assert "exclude" not in load_suite(write(tmp_path, without_exclude(TABLE9), "f.toml")).describe()


@pytest.mark.slow
def test_a_resume_after_adding_an_entry_runs_nothing_and_counts_only_the_cells_left(tmp_path, capsys):
    path = write(tmp_path, grid("keep_rates = [0.5, 1.0]\nepochs = 1"))
    out = tmp_path / "r.csv"
    assert main(["run", str(path), "--out", str(out), "-q", "--jobs", "1"]) == 0
    excluded = write(tmp_path, grid("keep_rates = [0.5, 1.0]\nepochs = 1\nexclude = [{ keep_rate = 0.5 }]"))
    plan = plan_run(load_suite(excluded), out)
    assert [c.keep_rate for c in plan.cells] == [1.0] and plan.todo == [] and plan.grid == 1
