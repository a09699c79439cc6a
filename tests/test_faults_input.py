"""Bad input in suite files and flags (issue 14, items 3, 7, 8, 10, 11, 12): each is refused before any
training or any file is written, with exit code 2 and one line on stderr naming the key and the value."""

import contextlib
import json
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.planning import MAX_SHARDS, Shard, shard_cells
from dropbench.suite import MAX_GRID_CELLS, Overrides, apply_overrides, load_suite

# Refused cases run for real (not --dry-run), so a refusal that stopped working would write files the
# tests see; these flags keep such a run short.
FAST = ["--epochs", "1", "--jobs", "1", "-q"]
ONE_CELL = ["--task", "wine", "--reg", "none", "--keep", "1.0", "--seeds", "1", *FAST]
REFUSAL_SECONDS = 20  # a refusal is arithmetic; a grid expanded by mistake would take minutes or hang


def suite_file(folder, top="", task="name = 'wine'", name="s.toml"):
    """A suite with one cell unless `top` says otherwise: seeds and keep rates default to one value each."""
    defaults = {"seeds": "1", "keep_rates": "[1.0]"}
    lines = [f"{key} = {value}" for key, value in defaults.items() if not re.search(rf"^{key}\s*=", top, re.M)]
    blocks = [*lines, top] + (["[[task]]", task] if task is not None else [])
    path = folder / name
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    return path


def files_under(folder):
    return {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: SIGALRM interrupts a computation that runs past `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch folder two levels below tmp_path, so that a name like '../../x' would still land (visibly)
    inside tmp_path; default outputs (results/) go here."""
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    return folder


def assert_refused(args, capsys, root, *expected):
    """Exit 2, one 'dropbench: error:' line naming what is expected, no traceback, no file touched."""
    before = files_under(root)
    started = time.perf_counter()
    with deadline(REFUSAL_SECONDS):
        code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropbench: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0]
    assert files_under(root) == before
    assert time.perf_counter() - started < REFUSAL_SECONDS
    return lines[0]


def assert_all_refused_by_the_installed_command(cases, cwd, root):
    """Each (args, expected texts) run as `python -m dropbench` at once, side by side (a start costs seconds):
    the faults that used to end in a traceback or a hang."""
    before = files_under(root)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dropbench", *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _ in cases
    ]
    for proc, (args, expected) in zip(procs, cases):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dropbench: error: ") and "Traceback" not in err, err
        for text in expected:
            assert text in lines[0]
    assert files_under(root) == before


# ---------------------------------------------------------------- 3: the suite name names a file


NAME_RULE = "a suite name is 1 to 100 letters, digits, '_', '-' or '.'"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("../../escaped", "'../../escaped'"),
        ("a/b", "'a/b'"),
        ("-smoke", "'-smoke'"),  # escaped to '-smoke in the CSV, it could never be resumed
        ("=1+1", "'=1+1'"),
        ("+x", "'+x'"),
        ("@x", "'@x'"),
        (".hidden", "'.hidden'"),
        ("two words", "'two words'"),
        ("", "''"),
        ("x" * 101, "'" + "x" * 101 + "'"),
        ("line\nbreak", r"'line\nbreak'"),
    ],
)
def test_an_unsafe_suite_name_is_refused(workdir, tmp_path, capsys, name, shown):
    path = suite_file(workdir, f"name = {json.dumps(name)}")  # a TOML basic string
    line = assert_refused(["run", str(path), *FAST], capsys, tmp_path, str(path), "name: ", shown, NAME_RULE)
    assert "leading '-'" in line and "never be resumed" in line


def test_an_absolute_suite_name_is_refused(workdir, tmp_path, capsys):
    target = tmp_path / "elsewhere" / "escaped"
    path = suite_file(workdir, f"name = '{target}'")
    assert_refused(["run", str(path), *FAST], capsys, tmp_path, f"name: '{target}'", NAME_RULE)
    assert not (tmp_path / "elsewhere").exists()


def test_a_file_name_that_is_not_a_safe_suite_name_asks_for_a_name(workdir, tmp_path, capsys):
    path = suite_file(workdir, name="my suite.toml")
    assert_refused(["run", str(path), *FAST], capsys, tmp_path, "'my suite'", "taken from the file name")


def test_safe_names_are_accepted(workdir):
    for name in ("quick", "srivastava2014-figure9", "my_suite.v2-1", "_private", "x" * 100):
        assert load_suite(str(suite_file(workdir, f"name = '{name}'"))).name == name


# ---------------------------------------------------------------- 7: a value named twice


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--task", "wine,wine"], "'--task': 'wine' is listed twice"),
        (["--task", "wine", "--task", "wine"], "'--task': 'wine' is listed twice"),
        (["--reg", "none,none"], "'--reg': 'none' is listed twice"),
        (["--keep", "0.5,0.5"], "'--keep': 0.5 is listed twice"),
        (["--keep", "0.5", "--keep", "0.50"], "'--keep': 0.5 is listed twice"),
        (["--input-keep", "1.0,1"], "'--input-keep': 1 is listed twice"),
        (["--dropout", "bernoulli", "--dropout", "bernoulli"], "'--dropout': 'bernoulli' is listed twice"),
        (["--train-size", "50,50"], "'--train-size': 50 is listed twice"),
        (["--reg", "l1+l2,l2+l1"], "--reg: regularizer 'l1+l2' with strength 1e-05+0.01 is listed twice"),
    ],
)
def test_a_flag_value_named_twice_is_refused(workdir, tmp_path, capsys, args, expected):
    base = {"--task": "wine", "--reg": "none", "--keep": "1.0"}
    defaults = [item for flag, value in base.items() if flag not in args for item in (flag, value)]
    assert_refused(["run", *defaults, "--seeds", "1", *FAST, *args], capsys, tmp_path, expected)


def test_report_refuses_a_task_named_twice(workdir, tmp_path, capsys):
    assert_refused(["report", "r.csv", "--task", "wine", "--task", "wine"], capsys, tmp_path, "'wine' is listed twice")


@pytest.mark.parametrize(
    ("top", "task", "expected"),
    [
        ("", "name = 'wine'\n[[task]]\nname = 'wine'", "task: task 'wine' is listed twice"),
        ("keep_rates = [0.5, 0.5]", "name = 'wine'", "keep_rates: keep rate 0.5 is listed twice"),
        ("keep_rates = [[0.5, 0.8], [0.5, 0.8]]", "name = 'wine'", "keep rate [0.5, 0.8] is listed twice"),
        ("regularizers = ['l2', 'l2']", "name = 'wine'", "regularizers: regularizer 'l2' with strength 0.0001 is"),
        ("regularizers = ['l1+l2', 'l2+l1']", "name = 'wine'", "regularizer 'l1+l2' with strength"),
        ("regularizers = ['none', 'none']", "name = 'wine'", "regularizer 'none' is listed twice"),
        ("dropout = ['gaussian', 'gaussian']", "name = 'wine'", "dropout: dropout kind 'gaussian' is listed twice"),
        ("seeds = [0, 0]", "name = 'wine'", "seeds: seed 0 is listed twice"),
        ("train_size = [10, 10]", "name = 'wine'", "train_size: train size 10 is listed twice"),
        ("[regularizer.l2]\nstrength = [1e-4, 1e-4]", "name = 'wine'", "strength: strength 0.0001 is listed twice"),
        ("[regularizer.l2]\nstrength = [1e-4, 1.0000001e-4]", "name = 'wine'", "strength 0.0001 is listed twice"),
        (
            "[regularizer.l2]\nstrength = { log = [1e-3, 1.000001e-3], num = 10 }",
            "name = 'wine'",
            "num = 10 values over log = [0.001, 0.001000001] repeat at 6 significant digits",
        ),
    ],
)
def test_a_suite_value_listed_twice_is_refused(workdir, tmp_path, capsys, top, task, expected):
    path = suite_file(workdir, top, task)
    assert_refused(["run", str(path), *FAST], capsys, tmp_path, str(path), expected)


def test_a_repeated_flag_adds_up_like_a_comma_list(workdir, tmp_path, capsys):
    args = ["--task", "synthetic", "--task", "wine", "--reg", "none", "--keep", "1.0", "--seeds", "1", *FAST]
    assert main(["run", *args, "--out", "r.csv"]) == 0
    frame = pd.read_csv(workdir / "r.csv")
    assert sorted(frame["task"]) == ["synthetic", "wine"] and frame["cell_id"].is_unique


# ---------------------------------------------------------------- 8: a keep rate that would drop nothing


def test_a_hidden_keep_rate_without_hidden_layers_is_refused(workdir, tmp_path, capsys):
    path = suite_file(workdir, "keep_rates = [0.2, 1.0]", "name = 'wine'\nmodel = { hidden = [] }")
    assert_refused(
        ["run", str(path), *FAST],
        capsys,
        tmp_path,
        f"{path}: keep_rates: keep rate 0.2 would drop nothing",
        "task 'wine' has no hidden layer (model.hidden = [])",
    )


def test_a_keep_flag_for_a_model_without_hidden_layers_is_refused(workdir, tmp_path, capsys):
    path = suite_file(workdir, "model = { hidden = [] }")
    assert_refused(
        ["run", str(path), "--keep", "0.5", *FAST], capsys, tmp_path, "--keep: keep rate 0.5 would drop", "task 'wine'"
    )


def test_spatial_dropout_of_a_conv_net_without_hidden_layers_is_refused(workdir, tmp_path, capsys):
    # The conv blocks' spatial dropout takes its rate from the first hidden layer's: with none, conv_keep.
    model = "model = { kind = 'cnn', channels = [8], hidden = [] }"
    path = suite_file(workdir, "keep_rates = [0.5]\ndropout = 'spatial'", f"name = 'mnist'\n{model}")
    assert_refused(["run", str(path), *FAST], capsys, tmp_path, "keep rate 0.5 would drop nothing", "task 'mnist'")


def test_input_dropout_without_hidden_layers_is_accepted(workdir, capsys):
    path = suite_file(workdir, "input_keep_rate = [0.8, 1.0]", "name = 'wine'\nmodel = { hidden = [] }")
    assert main(["run", str(path), "--dry-run"]) == 0
    assert not list(workdir.rglob("*.csv"))


# ---------------------------------------------------------------- 11: grids too big to expand


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        (
            "regularizers = ['l2']\n[regularizer.l2]\nstrength = { log = [1e-6, 1e-2], num = 100000000 }",
            "regularizer.l2.strength.num: at most 1,000 values per sweep, got 100,000,000",
        ),
        ("seeds = 100000000", "seeds: the grid has 100000000 seeds = 100,000,000 cells; a suite may have at most"),
        (
            "regularizers = ['l1+l2']\n[regularizer.l1]\nstrength = { log = [1e-6, 1e-2], num = 1000 }\n"
            "[regularizer.l2]\nstrength = { log = [1e-6, 1e-2], num = 1000 }",
            "regularizers: 1,000,000 regularizer settings ('l1+l2' alone: 1,000,000 combinations",
        ),
    ],
)
def test_a_suite_too_big_to_expand_is_refused_at_once(workdir, tmp_path, capsys, top, expected):
    path = suite_file(workdir, top)
    assert_refused(["run", str(path), "--dry-run"], capsys, tmp_path, str(path), expected)


def test_a_seed_count_past_the_grid_limit_is_refused_at_once(workdir, tmp_path, capsys):
    args = ["run", "--task", "wine,digits", "--reg", "none", "--keep", "1.0", "--seeds", "100000000", "--dry-run"]
    assert_refused(args, capsys, tmp_path, "--seeds: the grid has 2 tasks × 100000000 seeds = 200,000,000 cells")


def test_the_grid_limit_counts_every_axis(workdir, tmp_path, capsys):
    args = ["run", "--task", "wine", "--reg", "none,l2", "--keep", "0.5,1.0", "--seeds", "25001", "--dry-run"]
    assert_refused(args, capsys, tmp_path, "2 regularizers × 2 keep rates × 25001 seeds = 100,004 cells")


def test_a_grid_at_the_limit_is_accepted_without_being_expanded(workdir):
    suite = load_suite(str(suite_file(workdir)))
    assert len(apply_overrides(suite, Overrides(seeds=MAX_GRID_CELLS)).seeds) == MAX_GRID_CELLS


# ---------------------------------------------------------------- 12: non-finite numbers, an empty suite


@pytest.mark.parametrize(
    ("top", "task", "expected"),
    [
        (
            "regularizers = ['l2']\n[regularizer.l2]\nstrength = { log = [1e-3, inf], num = 3 }",
            "name = 'wine'",
            "regularizer.l2.strength.log: strength must be a finite number, got inf",
        ),
        (
            "regularizers = ['l2']\n[regularizer.l2]\nstrength = nan",
            "name = 'wine'",
            "regularizer.l2.strength: strength must be a finite number, got nan",
        ),
        (
            "regularizers = ['max-norm']\n[regularizer.max-norm]\nstrength = inf",
            "name = 'wine'",
            "regularizer.max-norm.strength: strength must be a finite number, got inf",
        ),
        (
            "regularizers = ['l2']\n[regularizer.l2]\nstrength = [1e-4, -inf]",
            "name = 'wine'",
            "strength must be a finite number, got -inf",
        ),
        (
            "regularizers = ['kl-sparsity']\n[regularizer.kl-sparsity]\ntarget = nan",
            "name = 'wine'",
            "regularizer.kl-sparsity.target: expected a finite number, got nan",
        ),
        ("", "name = 'wine'\noptimizer = { lr = nan }", "task[0].optimizer.lr: expected a finite number, got nan"),
        ("", "name = 'wine'\noptimizer = { lr = inf }", "task[0].optimizer.lr: expected a finite number, got inf"),
        ("optimizer = { momentum = nan }", "name = 'wine'", "optimizer.momentum: expected a finite number, got nan"),
        (
            "optimizer = { name = 'adam', betas = [0.9, nan] }",
            "name = 'wine'",
            "optimizer.betas: expected a finite number, got nan",
        ),
        ("keep_rates = [nan]", "name = 'wine'", "keep_rates: expected a finite number, got nan"),
        ("keep_rates = [[0.5, inf]]", "name = 'wine'", "keep_rates: expected a finite number, got inf"),
        ("input_keep_rate = inf", "name = 'wine'", "input_keep_rate: expected a finite number, got inf"),
        (
            "model = { kind = 'cnn', channels = [8], conv_keep = nan }",
            "name = 'mnist'",
            "model.conv_keep: expected a finite number, got nan",
        ),
        ("epochs = inf", "name = 'wine'", "epochs: expected an integer ≥ 1, got inf"),
        ("", "name = 'wine'\nbatch_size = nan", "task[0].batch_size: expected an integer ≥ 1, got nan"),
        ("seeds = inf", "name = 'wine'", "seeds: expected an integer ≥ 0, got inf"),
        ("task = []", None, "task: the suite has no task"),
    ],
)
def test_a_non_finite_number_or_an_empty_suite_is_refused(workdir, tmp_path, capsys, top, task, expected):
    path = suite_file(workdir, top, task)
    assert_refused(["run", str(path), *FAST], capsys, tmp_path, str(path), expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", *ONE_CELL, "--keep", "inf"], "'--keep': inf is not a finite number"),
        (["run", *ONE_CELL, "--input-keep", "nan"], "'--input-keep': nan is not a finite number"),
        (["run", *ONE_CELL, "--gpus-per-cell", "nan"], "'--gpus-per-cell': nan is not a finite number"),
        (["run", *ONE_CELL, "--epochs", "inf"], "'--epochs': 'inf' is not a valid integer"),
        (["run", *ONE_CELL, "--seeds", "nan"], "'--seeds': 'nan' is not a seed"),
        (["report", "r.csv", "--alpha", "nan"], "'--alpha': nan is not a finite number"),
        (["compare", "a.csv", "b.csv", "--max-drop", "inf"], "'--max-drop': inf is not a finite number"),
    ],
)
def test_a_non_finite_flag_is_refused(workdir, tmp_path, capsys, args, expected):
    assert_refused(args, capsys, tmp_path, expected)


# ---------------------------------------------------------------- 10: tracebacks that became one line


def test_an_infinite_early_stopping_patience_is_refused(workdir, tmp_path, capsys):
    path = suite_file(workdir, "regularizers = ['early-stopping']\n[regularizer.early-stopping]\nstrength = inf")
    assert_refused(["run", str(path), *FAST], capsys, tmp_path, "strength must be a finite number, got inf")


def test_a_nan_early_stopping_patience_is_refused(workdir, tmp_path, capsys):
    path = suite_file(workdir, "regularizers = ['early-stopping']\n[regularizer.early-stopping]\nstrength = nan")
    assert_refused(["run", str(path), *FAST], capsys, tmp_path, "strength must be a finite number, got nan")


@pytest.mark.parametrize(
    ("shard", "expected"),
    [
        ("1/100000000000", "--shard '1/100000000000': N must be between 1 and 10,000"),
        ("1/10001", "N must be between 1 and 10,000"),
        ("1/0", "N must be between 1 and 10,000"),
        ("0/3", "--shard '0/3': I must be between 1 and N"),
        ("4/3", "--shard '4/3': I must be between 1 and N"),
        ("-1/3", "expected I/N with whole numbers"),
        ("1/3/5", "expected I/N with whole numbers"),
        ("1_0/2_0", "expected I/N with whole numbers"),
        ("١/٣", "expected I/N with whole numbers"),
    ],
)
def test_a_bad_shard_is_refused(workdir, tmp_path, capsys, shard, expected):
    assert_refused(["run", *ONE_CELL, "--shard", shard], capsys, tmp_path, expected)


def test_the_most_shards_allowed_split_a_grid_at_once(workdir):
    suite = apply_overrides(load_suite(str(suite_file(workdir))), Overrides(seeds=MAX_GRID_CELLS // 10))
    cells = suite.cells()
    with deadline(REFUSAL_SECONDS):
        parts = [shard_cells(cells, Shard(i, MAX_SHARDS)) for i in (1, MAX_SHARDS)]
    assert [len(p) for p in parts] == [1, 1]


@pytest.mark.slow
def test_faults_that_gave_a_traceback_are_one_line_from_the_installed_command(workdir, tmp_path):
    # The hangs and the MemoryError are refused in-process above, under a deadline; a process start costs
    # seconds, so only the two faults whose old traceback came from inside the suite loader run here.
    nul = suite_file(workdir, 'name = "a\\u0000b"', name="nul.toml")
    patience = suite_file(
        workdir, "regularizers = ['early-stopping']\n[regularizer.early-stopping]\nstrength = inf", name="patience.toml"
    )
    cases = [
        (["run", str(nul), *FAST], [str(nul), r"name: 'a\x00b'", NAME_RULE]),
        (["run", str(patience), *FAST], [str(patience), "early-stopping.strength: strength must be a finite number"]),
    ]
    assert_all_refused_by_the_installed_command(cases, workdir, tmp_path)
