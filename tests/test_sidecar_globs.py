"""A shell glob over a results folder also matches each run's per-epoch sidecar: commands skip it with a note."""

import shutil
from pathlib import Path

import pytest

from dropbench.cli import main

QUICK = Path(__file__).resolve().parent.parent / "results" / "quick"


@pytest.fixture
def folder(tmp_path):
    for name in ("quick.csv", "quick.epochs.csv", "quick.json"):
        shutil.copy(QUICK / name, tmp_path / name)
    return tmp_path


def glob(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("quick*.csv"))  # what `quick*.csv` expands to in a shell


def test_report_on_a_glob_skips_the_epochs_sidecar_with_a_note(folder, capsys):
    assert len(glob(folder)) == 2
    assert main(["report", *glob(folder), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "quick.epochs.csv: skipped, the per-epoch sidecar of quick.csv" in captured.err
    assert captured.out.startswith("task,")


@pytest.mark.slow  # trains two one-epoch shards
def test_merge_on_a_glob_of_shards_takes_the_results_only(tmp_path, capsys):
    for part in ("1/2", "2/2"):
        out = tmp_path / f"shard-{part[0]}.csv"
        args = ["run", "--task", "wine", "--seeds", "2", "--epochs", "1", "--jobs", "1", "-q", "--shard", part]
        assert main([*args, "--out", str(out)]) == 0
    shards = sorted(str(p) for p in tmp_path.glob("shard-*.csv"))
    assert len(shards) == 4  # two results files and their two epochs sidecars
    capsys.readouterr()
    assert main(["merge", *shards, "-o", str(tmp_path / "all.csv")]) == 0
    captured = capsys.readouterr()
    assert "from 2 files" in captured.out and captured.err.count("skipped, the per-epoch sidecar") == 2


def test_a_sidecar_alone_is_refused_in_one_line(folder, capsys):
    assert main(["report", str(folder / "quick.epochs.csv")]) == 2
    assert "only per-epoch sidecars" in capsys.readouterr().err


def test_an_epochs_file_without_its_results_file_is_not_taken_for_a_sidecar(folder, capsys):
    (folder / "quick.csv").unlink()
    assert main(["report", str(folder / "quick.epochs.csv")]) == 2
    assert "not a dropbench results CSV" in capsys.readouterr().err
