"""`--set KEY=VALUE` and `--seeds` specs: each kind of override, its refusals, and that an override gives exactly the
cells of the equivalent suite file."""

import json
import re

import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.overrides import MAX_SEEDS, parse_seeds, parse_set, resolve_suite
from dropbench.suite import MAX_GRID_CELLS, Overrides, load_suite

BASE = """\
name = "small"
seeds = 2
keep_rates = [0.5, 1.0]
regularizers = ["none", "l2"]
epochs = 4
model = { kind = "mlp", hidden = [16] }
optimizer = { name = "sgd", lr = 0.01, momentum = 0.9 }

[regularizer.l2]
strength = 1e-2

[[task]]
name = "wine"

[[task]]
name = "diabetes"
optimizer = { name = "adam", lr = 1e-3 }
"""


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(BASE)
    return path


def ids(suite):
    return [cell.cell_id for cell in suite.cells()]


def resolved(path, *sets, **flags):
    return resolve_suite(str(path), list(sets), Overrides(**flags))


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("optimizer.lr=0.05", ("optimizer", "lr"), 0.05),
        ("epochs=5", ("epochs",), 5),
        ("model.hidden=[512,512]", ("model", "hidden"), [512, 512]),
        ("optimizer.name=adam", ("optimizer", "name"), "adam"),  # one word needs no quotes
        ('optimizer.name="adam"', ("optimizer", "name"), "adam"),
        ("regularizers=[none, l2]", None, None),  # not TOML and not one word: refused below
        ("regularizer.l2.strength=1e-3", ("regularizer", "l2", "strength"), 1e-3),
        ("regularizer.max-norm.strength={ log = [0.5, 4], num = 3 }", ("regularizer", "max-norm", "strength"), None),
        ("model.fixed_pn=true", ("model", "fixed_pn"), True),
        ('task."openml:1590".epochs = 5', ("task", "openml:1590", "epochs"), 5),
        ("task.0.batch_size=32", ("task", "0", "batch_size"), 32),
    ],
)
def test_a_set_is_a_toml_dotted_key_and_a_toml_value(text, path, value):
    if path is None:
        with pytest.raises(UserError, match=re.escape(f"--set {text}: '[none, l2]' is not a value")):
            parse_set(text)
        return
    parsed = parse_set(text)
    assert parsed.path == path and parsed.label == f"--set {text}"
    if value is not None:
        assert parsed.value == value and type(parsed.value) is type(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optimizer.lr", "--set optimizer.lr: expected KEY=VALUE"),
        ("=0.05", "--set =0.05: expected KEY=VALUE"),
        ("optimizer..lr=1", "--set optimizer..lr=1: expected KEY=VALUE"),
        ("model.hidden=[512,", "--set model.hidden=[512,: '[512,' is not a value: give a TOML value"),
        ("name=my suite", "--set name=my suite: 'my suite' is not a value"),
        ("epochs=", "--set epochs=: '' is not a value"),
    ],
)
def test_bad_syntax_is_one_line_naming_the_set(text, expected):
    with pytest.raises(UserError) as caught:
        parse_set(text)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- each kind of override


def test_a_number_a_list_and_a_nested_key_change_the_suite(base):
    suite = resolved(
        base,
        "optimizer.lr=0.05",
        "model.hidden=[32,32]",
        "regularizer.l2.strength=1e-3",
        "optimizer.schedule={ kind = 'exponential', gamma = 0.9 }",
    )
    wine, diabetes = suite.tasks
    assert wine.optimizer.lr == 0.05 and wine.model.hidden == (32, 32)
    assert wine.optimizer.schedule.kind == "exponential" and wine.optimizer.schedule.gamma == 0.9
    assert diabetes.optimizer.lr == 1e-3  # the task's own optimizer keeps its own lr
    assert [r.strength_label for r in suite.regularizers] == ["", "0.001"]


def test_a_string_switches_the_optimizer(base):
    suite = resolved(base, "optimizer.name=adam")
    assert suite.tasks[0].optimizer.name == "adam"


def test_a_task_is_addressed_by_name_or_by_index(base):
    by_name = resolved(base, "task.diabetes.epochs=2", "task.wine.optimizer.lr=0.1")
    by_index = resolved(base, "task.1.epochs=2", "task.0.optimizer.lr=0.1")
    assert [t.epochs for t in by_name.tasks] == [4, 2] and by_name.tasks[0].optimizer.lr == 0.1
    assert ids(by_name) == ids(by_index)


def test_a_missing_table_is_created(base):
    suite = resolved(base, "regularizer.l1.strength=1e-4", "regularizers=['none', 'l1']")
    assert [(r.name, r.strength_label) for r in suite.regularizers] == [("none", ""), ("l1", "0.0001")]


def test_a_set_gives_the_cells_of_the_equivalent_file(base, tmp_path):
    edited = tmp_path / "edited.toml"
    edited.write_text(
        BASE.replace("lr = 0.01", "lr = 0.05")
        .replace("hidden = [16]", "hidden = [8, 8]")
        .replace("strength = 1e-2", "strength = 1e-3")
        .replace('name = "diabetes"\n', 'name = "diabetes"\nepochs = 2\n')
        .replace("seeds = 2", "seeds = [0, 3, 7]")
    )
    sets = [
        "optimizer.lr=0.05",
        "model.hidden=[8, 8]",
        "regularizer.l2.strength=1e-3",
        "task.diabetes.epochs=2",
        "seeds=[0, 3, 7]",
    ]
    overridden, file = resolved(base, *sets), load_suite(str(edited))
    assert ids(overridden) == ids(file)
    described = {key: value for key, value in overridden.describe().items() if key not in ("source", "set")}
    assert described == {key: value for key, value in file.describe().items() if key != "source"}


def test_the_set_keys_are_recorded_with_the_suite(base):
    suite = resolved(base, "optimizer.lr=0.05", "model.hidden=[8]")
    described = suite.describe()
    assert described["set"] == {"optimizer.lr": 0.05, "model.hidden": [8]}
    assert described["tasks"][0]["optimizer"]["lr"] == 0.05 and described["tasks"][0]["model"] == "mlp-8"
    json.dumps(described)  # the JSON sidecar's suite section
    assert "set" not in load_suite(str(base)).describe()


def test_python_values_set_keys_as_toml_ones_do(base):
    from_python = load_suite(str(base), set={"model.hidden": (8, 8), "optimizer.lr": 0.05, "task.wine.epochs": 2})
    from_text = load_suite(str(base), set=["model.hidden=[8,8]", "optimizer.lr=0.05", "task.wine.epochs=2"])
    assert ids(from_python) == ids(from_text)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            ["optimizer.lrr=0.05"],
            "--set optimizer.lrr=0.05: unknown key 'lrr' in optimizer (did you mean 'lr'?); allowed: name, lr,",
        ),
        (["epoch=3"], "--set epoch=3: unknown key 'epoch' at the top of the suite (did you mean 'epochs'?)"),
        (["task.wine.epoch=3"], "--set task.wine.epoch=3: unknown key 'epoch' in task.wine (did you mean 'epochs'?)"),
        (["regularizer.l3.strength=1"], "--set regularizer.l3.strength=1: regularizer.l3: unknown regularizer; known:"),
        (["regularizer.l2.strenght=1"], "--set regularizer.l2.strenght=1: regularizer.l2: unknown key 'strenght'"),
        (
            ["optimizer.schedule.gama=0.9"],
            "--set optimizer.schedule.gama=0.9: unknown key 'gama' in optimizer.schedule",
        ),
        (["optimizer.lr=-1"], "--set optimizer.lr=-1: must be > 0, got -1"),
        (["optimizer.lr=fast"], "--set optimizer.lr=fast: expected a number, got 'fast'"),
        (["optimizer.lr=inf"], "--set optimizer.lr=inf: expected a finite number, got inf"),
        (["model.hidden=[0]"], "--set model.hidden=[0]: expected an integer ≥ 1, got 0"),
        (["keep_rates=[0.5, 2]"], "--set keep_rates=[0.5, 2]: keep rate 2 is outside (0, 1]"),
        (["model.kind=cnn"], "--set model.kind=cnn: model.channels: a 'cnn' needs conv channels"),
        (["epochs.max=3"], "--set epochs.max=3: epochs is 4 in the suite, not a table"),
        (
            ["task.mnist.epochs=3"],
            "--set task.mnist.epochs=3: the suite has no task 'mnist' (its tasks: wine, diabetes)",
        ),
        (["task.2.epochs=3"], "--set task.2.epochs=3: the suite has 2 tasks, task.0 to task.1"),
        (["seeds=[1, 1]"], "--set seeds=[1, 1]: seed 1 is listed twice"),
        (
            ["optimizer.lr=0.1", "optimizer.lr=0.2"],
            "--set optimizer.lr=0.2: optimizer.lr is set twice (also by --set optimizer.lr=0.1)",
        ),
        (
            ["optimizer={ lr = 0.1 }", "optimizer.lr=0.2"],
            "--set optimizer.lr=0.2: optimizer.lr lies inside optimizer, which --set optimizer={ lr = 0.1 } sets whole",
        ),
    ],
)
def test_a_refused_set_is_named_with_its_key(base, sets, expected):
    with pytest.raises(UserError) as caught:
        resolved(base, *sets)
    assert str(caught.value).startswith(expected), str(caught.value)


def test_a_problem_of_the_file_is_named_as_the_file_s(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace("epochs = 4", "epoch = 4"))
    with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}: unknown key 'epoch'"):
        resolved(bad, "optimizer.lr=0.05")


@pytest.mark.parametrize(
    ("sets", "flags", "expected"),
    [
        (["epochs=3"], {"epochs": 2}, "--set epochs=3 and --epochs both set epochs: give one of them"),
        (["task.wine.epochs=3"], {"epochs": 2}, "--set task.wine.epochs=3 and --epochs both set task.wine.epochs"),
        (["task.0={ name = 'wine', epochs = 3 }"], {"epochs": 2}, "--epochs both set task.0"),
        (["seeds=[0, 3]"], {"seeds": 2}, "--set seeds=[0, 3] and --seeds both set seeds"),
        (["keep_rates=[0.5]"], {"keep_rates": (0.5,)}, "and --keep both set keep_rates"),
        (["regularizers=['l2']"], {"regularizers": ("l2",)}, "and --reg both set regularizers"),
    ],
)
def test_a_flag_and_a_set_of_the_same_key_are_refused(base, sets, flags, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        resolved(base, *sets, **flags)


def test_a_flag_beside_a_set_of_other_keys_applies(base):
    suite = resolved(base, "regularizer.l2.strength=1e-3", "task.wine.optimizer.lr=0.1", regularizers=("l2",))
    assert [r.strength_label for r in suite.regularizers] == ["0.001"]
    # A task added by --task trains with the suite's top-level keys, as they are after --set.
    suite = resolved(base, "optimizer.lr=0.05", tasks=("wine", "breast-cancer"))
    assert [(t.name, t.optimizer.lr) for t in suite.tasks] == [("wine", 0.05), ("breast-cancer", 0.05)]


# ---------------------------------------------------------------- seeds


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("5", 5),
        ("0,3,7", (0, 3, 7)),
        ("10..19", tuple(range(10, 20))),
        ("7..7", (7,)),
        ("7,", (7,)),
        ("0, 10..12", (0, 10, 11, 12)),
    ],
)
def test_seeds_are_a_count_a_list_or_an_inclusive_range(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3..1", "3..1: the range is empty (its end is included"),
        ("a,b", "'a' is not a seed"),
        ("0,3,3", "seed 3 is listed twice"),
        ("0..5,3", "seed 3 is listed twice"),
        ("0", "a count of seeds is at least 1"),
        ("-1,2", "'-1' is not a seed"),
        ("1.5", "'1.5' is not a seed"),
        ("0,,1", "give a count (5), a list (0,3,7) or an inclusive range (10..19)"),
        ("0..1000000000", "more than 100,000 seeds"),
    ],
)
def test_bad_seeds_are_refused(text, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        parse_seeds(text)


def test_the_seed_limit_is_the_grid_limit():
    assert MAX_SEEDS == MAX_GRID_CELLS


def test_a_listed_seed_is_the_same_cell_as_a_counted_one(base):
    """Seed 3 of `--seeds 0,3,7` is seed 3 of `--seeds 5`: results resume and merge across the two."""
    counted = resolved(base, seeds=5).cells()
    listed = resolved(base, seeds=parse_seeds("0,3,7")).cells()
    ranged = resolved(base, seeds=parse_seeds("3..4")).cells()
    by_seed = {seed: {c.cell_id for c in counted if c.seed == seed} for seed in range(5)}
    for seed in (0, 3):
        assert {c.cell_id for c in listed if c.seed == seed} == by_seed[seed]
    assert {c.cell_id for c in ranged} == by_seed[3] | by_seed[4]
    assert not {c.cell_id for c in listed if c.seed == 7} & {c.cell_id for c in counted}
    assert sorted({c.seed for c in listed}) == [0, 3, 7]


def test_seeds_in_a_list_are_checked_like_the_file_s(base):
    with pytest.raises(UserError, match="--seeds: seed 3 is listed twice"):
        resolved(base, seeds=(3, 3))


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "optimizer.lrr=0.05"], "dropbench: error: --set optimizer.lrr=0.05: unknown key 'lrr' in optimizer"),
        (["--set", "optimizer.lr"], "dropbench: error: --set optimizer.lr: expected KEY=VALUE"),
        (["--set", "optimizer.lr=-1"], "dropbench: error: --set optimizer.lr=-1: must be > 0, got -1"),
        (["--seeds", "3..1"], "Invalid value for '--seeds': 3..1: the range is empty"),
        (["--seeds", "a,b"], "Invalid value for '--seeds': 'a' is not a seed"),
        (["--seeds", "1,1"], "Invalid value for '--seeds': seed 1 is listed twice"),
        (["--epochs", "2", "--set", "epochs=3"], "dropbench: error: --set epochs=3 and --epochs both set epochs"),
    ],
)
def test_a_bad_set_or_seeds_flag_is_one_line_and_exit_2(base, args, expected, capsys):
    assert main(["run", str(base), *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dropbench: error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_command_line_takes_sets_and_seed_lists(base, tmp_path, capsys):
    out = tmp_path / "r.csv"
    args = ["run", str(base), "--set", "task.wine.epochs=2", "--set", "optimizer.lr=0.05", "--seeds", "0,3,7"]
    assert main([*args, "--task", "wine", "--out", str(out), "--dry-run"]) == 0
    assert "12" in capsys.readouterr().out  # 2 regularizers × 2 keep rates × 3 seeds


@pytest.mark.slow
def test_a_run_records_the_overridden_suite_and_the_command(base, tmp_path):
    out = tmp_path / "r.csv"
    args = ["run", str(base), "--task", "wine", "--reg", "none", "--keep", "1.0", "--seeds", "3..4"]
    args += ["--set", "task.wine.epochs=1", "--set", "optimizer.lr=0.05", "-q", "--jobs", "1", "--out", str(out)]
    assert main(args) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["suite"]["set"] == {"task.wine.epochs": 1, "optimizer.lr": 0.05}
    assert meta["suite"]["tasks"] == [
        {
            "name": "wine",
            "model": "mlp-16",
            "optimizer": meta["suite"]["tasks"][0]["optimizer"],
            "batch_size": 64,
            "epochs": 1,
        }
    ]
    assert meta["suite"]["tasks"][0]["optimizer"]["lr"] == 0.05 and meta["suite"]["seeds"] == [3, 4]
    assert "--set task.wine.epochs=1 --set optimizer.lr=0.05" in meta["runs"][0]["command"]
    rows = pd.read_csv(out)
    assert sorted(rows["seed"]) == [3, 4] and (rows["lr"] == 0.05).all() and (rows["max_epochs"] == 1).all()
