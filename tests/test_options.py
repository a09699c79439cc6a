"""The run command's options object, its clashing flags, and data settings from flags or the environment."""

import os
import subprocess
import sys

import pytest

from dropbench.cli import main
from dropbench.data.fetch import DATA_ENV, OFFLINE_ENV
from dropbench.options import RunOptions


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--address", "auto"], "--address needs --executor ray"),
        (["--gpus-per-cell", "0.5"], "--gpus-per-cell needs --executor ray"),
        (["--executor", "ray", "--jobs", "2"], "--jobs is for the local executor"),
        (["--fresh", "--rerun-failed"], "--fresh starts the file over"),
    ],
)
def test_clashing_flags_are_a_usage_error_naming_them(args, says, capsys):
    assert main(["run", "--task", "wine", "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "see 'dropbench run --help'" in err and "Traceback" not in err


def test_flags_left_at_their_defaults_never_clash():
    options = RunOptions.from_cli({"executor_kind": "ray", "jobs": None, "cpus_per_cell": 1}, given={"executor_kind"})
    assert options.clash() is None and options.executor == "ray" and options.stack


def test_grid_flags_go_to_the_overrides_and_the_rest_to_options():
    options = RunOptions.from_cli({"keep_rates": (0.5,), "seeds": None, "no_stack": True, "quiet": True}, given=set())
    assert options.grid == {"keep_rates": (0.5,)} and not options.stack and options.quiet


def test_data_settings_come_from_the_flags_or_the_environment(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    assert main(["tasks", "--data-dir", str(tmp_path / "flag")]) == 0
    assert os.environ[DATA_ENV] == str(tmp_path / "flag")  # where worker processes read it
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert main(["tasks"]) == 0
    assert str(tmp_path / "env") in capsys.readouterr().out
    monkeypatch.setenv(OFFLINE_ENV, "1")
    assert main(["download", "mnist", "--data-dir", str(tmp_path / "empty")]) == 2
    assert "offline" in capsys.readouterr().err


def test_help_names_the_environment_variables(capsys):
    assert main(["tasks", "--help"]) == 0
    out = capsys.readouterr().out
    assert "env var: DROPBENCH_DATA" in out and "env var: DROPBENCH_OFFLINE" in out


@pytest.mark.slow  # a fresh interpreter
def test_help_and_the_catalogue_commands_never_import_torch():
    code = (
        "import sys; from dropbench.cli import main\n"
        "for args in (['--help'], ['run', '--help'], ['compare', '--help'], ['plot', '--help'], ['regularizers']):\n"
        "    assert main(args) == 0, args\n"
        "print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.rstrip().endswith("[]")
