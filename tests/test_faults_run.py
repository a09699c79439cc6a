"""Faults of the run itself (issue 14: items 6, 12 and 13), through the real CLI, signals in subprocesses.

Each case checks the exit code, the lines on stderr (one, no traceback) and the files: a cell's figures are
the same bit for bit whatever the flags that regroup cells (--jobs, --shard, --no-stack, a kill and resume);
an empty shard leaves a header-only file; SIGTERM and Ctrl-C stop a run in one line that says how to resume.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import subprocess_env

from dropbench.cli import main
from dropbench.merge import CIRCUMSTANCE_COLUMNS
from dropbench.results import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
# wine: classification, SGD, 3 outputs (a width no vector divides); diabetes: regression, Adam, 1 output.
GRID = ["--task", "wine,diabetes", "--reg", "none,l2", "--keep", "0.5,1.0", "--seeds", "2", "--epochs", "1", "-q"]
CELLS = 16
ENTRY = "import sys; from dropbench.cli import entry; sys.argv[0] = 'dropbench'; entry()"


def dropbench(*args: str) -> list[str]:
    """The command line a user types, as a subprocess of this interpreter running this checkout."""
    return [sys.executable, "-c", ENTRY, *args]


def env(**extra: str) -> dict[str, str]:
    return subprocess_env(**extra)


def figures(path: Path) -> pd.DataFrame:
    """Every column but the circumstances (time, host, threads), as the CSV's text: equal means bit for bit."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame.drop(columns=sorted(CIRCUMSTANCE_COLUMNS)).set_index("cell_id").sort_index()


def curves(path: Path) -> pd.DataFrame:
    epochs = path.with_name(path.name.removesuffix(".csv") + ".epochs.csv")
    return pd.read_csv(epochs, dtype=str, keep_default_na=False).set_index(["cell_id", "epoch"]).sort_index()


def last_run(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())["runs"][-1]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid in one process, every cell in one stack per task."""
    out = tmp_path_factory.mktemp("reference") / "ref.csv"
    assert main(["run", *GRID, "--jobs", "1", "--out", str(out)]) == 0
    return out


def wait_for_rows(path: Path, rows: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") > rows:  # the header, then `rows` whole lines
            return
        time.sleep(0.05)
    pytest.fail(f"{path}: fewer than {rows} rows while the run was going")


# ---------------------------------------------------------------- item 6: figures whatever the flags


@pytest.mark.slow
def test_shards_at_1_and_2_jobs_and_unstacked_merge_to_the_one_process_figures(reference, tmp_path, capsys):
    """The issue's case: one shard run at --jobs 1 and at --jobs 2 merges (its rows are duplicates, not
    conflicts), and the merge of shards run with other flags, in another order, equals the one-process run."""
    runs = {
        "s1_j1": ["--shard", "1/2", "--jobs", "1"],
        "s1_j2": ["--shard", "1/2", "--jobs", "2"],
        "s2_unstacked": ["--shard", "2/2", "--jobs", "1", "--no-stack"],
        "all_unstacked": ["--jobs", "1", "--no-stack"],
    }
    paths = {name: tmp_path / f"{name}.csv" for name in runs}
    for name, flags in runs.items():
        assert main(["run", *GRID, *flags, "--out", str(paths[name])]) == 0
    capsys.readouterr()
    merged = tmp_path / "merged.csv"
    shard_1 = len(pd.read_csv(paths["s1_j1"]))
    assert main(["merge", str(paths["s2_unstacked"]), str(paths["s1_j2"]), str(paths["s1_j1"]), "-o", str(merged)]) == 0
    assert f"{CELLS} cells ({shard_1} duplicates dropped)" in capsys.readouterr().out
    for path in (merged, paths["all_unstacked"]):
        pd.testing.assert_frame_equal(figures(path), figures(reference))
        pd.testing.assert_frame_equal(curves(path), curves(reference))


@pytest.mark.slow
def test_kill_then_resume_regroups_cells_and_changes_no_figure(reference, tmp_path):
    """SIGKILL once some rows are written: the rerun stacks the rest in other groups; one row per cell, the
    uninterrupted run's figures and curves."""
    out = tmp_path / "killed.csv"
    paused = env(DROPBENCH_TEST_WRITE_PAUSE="0.1")  # each write in two halves 0.1 s apart: time to kill
    proc = subprocess.Popen(
        dropbench("run", *GRID, "--jobs", "1", "--out", str(out)),
        env=paused,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_rows(out, 3, proc)
    proc.kill()
    proc.wait()
    written = len(pd.read_csv(out))
    assert 3 <= written < CELLS
    assert main(["run", *GRID, "--jobs", "1", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == CELLS and frame["cell_id"].is_unique
    pd.testing.assert_frame_equal(figures(out), figures(reference))
    pd.testing.assert_frame_equal(curves(out), curves(reference))


# ---------------------------------------------------------------- item 12: an empty shard


def test_an_empty_shard_exits_0_with_one_line_a_header_only_csv_and_its_json(tmp_path, capsys):
    # 4 cells: the fifth of five shards gets none.
    grid = ["--task", "wine", "--reg", "none,l2", "--keep", "1.0", "--seeds", "2", "--epochs", "1", "-q", "--jobs", "1"]
    empty = tmp_path / "s5.csv"
    assert main(["run", *grid, "--shard", "5/5", "--out", str(empty)]) == 0
    captured = capsys.readouterr()
    assert (
        one_line(captured.err) == f"shard 5/5 holds none of the grid's 4 cells: nothing to run -> {empty} (header only)"
    )
    assert captured.out == ""  # no table of nothing
    assert empty.read_text() == ",".join(COLUMNS) + "\n"
    run = last_run(empty)
    assert run["shard"] == "5/5" and run["completed"] is True and run["finished_at"]
    # In a CI matrix it is merged with the shards that got the cells.
    full = tmp_path / "full.csv"
    assert main(["run", *grid, "--out", str(full)]) == 0
    assert main(["merge", str(empty), str(full), "-o", str(tmp_path / "merged.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "merged.csv")) == 4
    # With JSON lines, the end is a JSON object like any run's.
    capsys.readouterr()
    assert main(["run", *grid, "--shard", "5/5", "--log-format", "json", "--out", str(tmp_path / "j.csv")]) == 0
    finish = json.loads(one_line(capsys.readouterr().err))
    assert finish["event"] == "finish" and (finish["cells"], finish["grid"], finish["shard"]) == (0, 4, "5/5")


# ---------------------------------------------------------------- item 13: signals and JSON lines


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_records_the_stop_and_prints_the_command_that_resumes(
    reference, tmp_path, monkeypatch
):
    out = tmp_path / "terminated.csv"
    # No --out on the command line: the line must add it, or a rerun would start a new file.
    args = ["run", *GRID, "--jobs", "1", "--fresh"]
    proc = subprocess.Popen(
        dropbench(*args),
        env=env(DROPBENCH_TEST_WRITE_PAUSE="0.1"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline, found = time.time() + 60, []
    while not found and time.time() < deadline:
        found = [p for p in (tmp_path / "results").glob("quick-*.csv") if not p.name.endswith(".epochs.csv")]
        time.sleep(0.05)
    (written,) = found
    wait_for_rows(written, 1, proc)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143
    line = one_line(stderr)
    default_out = written.relative_to(tmp_path)
    assert line.startswith(f"dropbench: interrupted (SIGTERM): the finished cells are in {default_out}; to resume: ")
    resume = shlex.split(line.split("; to resume: ", 1)[1])
    assert resume[:2] == ["dropbench", "run"] and "--fresh" not in resume  # --fresh would set the rows aside
    assert resume[-2:] == ["--out", str(default_out)]
    run = last_run(written)
    assert run["completed"] is False and run["stopped_by"] == "SIGTERM" and run["finished_at"]
    # The printed command, run as printed from where the run was started, finishes the grid.
    monkeypatch.chdir(tmp_path)
    assert main(resume[1:]) == 0
    os.replace(written, out)  # its sidecars stay beside the old name; only the rows are compared
    frame = pd.read_csv(out)
    assert len(frame) == CELLS and frame["cell_id"].is_unique
    pd.testing.assert_frame_equal(figures(out), figures(reference))


def _pool_workers(driver: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(driver), "-f", "spawn_main"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _blocks_sigint(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        blocked = next(line for line in status if line.startswith("SigBlk:")).split()[1]
    return bool(int(blocked, 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads worker signal masks from /proc")
def test_ctrl_c_while_the_pool_starts_is_one_line_and_no_worker_traceback(tmp_path):
    """Ctrl-C goes to the whole process group, workers included, while they still import torch: they were
    spawned with SIGINT blocked, so only the driver acts on it."""
    out = tmp_path / "pool.csv"
    proc = subprocess.Popen(
        dropbench("run", *GRID, "--jobs", "2", "--out", str(out)),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline, workers = time.time() + 60, []
    while not workers and time.time() < deadline and proc.poll() is None:
        workers = _pool_workers(proc.pid)
        time.sleep(0.02)
    assert workers, "no pool worker was started"
    assert all(_blocks_sigint(pid) for pid in workers)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    assert one_line(stderr).startswith(f"dropbench: interrupted (SIGINT): the finished cells are in {out}; to resume: ")
    assert last_run(out)["stopped_by"] == "SIGINT"


DIVERGING_SUITE = """name = "diverge"
epochs = 2
seeds = 1
keep_rates = [1.0]
regularizers = ["none", "l2"]
[regularizer.l2]
strength = 1e12
[[task]]
name = "wine"
"""


@pytest.mark.parametrize("quiet", [False, True], ids=["every cell", "quiet"])
def test_json_log_lines_last_to_the_end_problems_included(tmp_path, capsys, quiet):
    suite = tmp_path / "diverge.toml"
    suite.write_text(DIVERGING_SUITE)
    out = tmp_path / "r.csv"
    assert (
        main(["run", str(suite), "--jobs", "1", "--log-format", "json", *(["-q"] if quiet else []), "--out", str(out)])
        == 1
    )
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    events = [json.loads(line) for line in captured.err.splitlines()]  # every line is JSON
    (problem,) = [e for e in events if e["event"] == "problem"]
    assert problem["status"] == "diverged" and problem["cell"].startswith("wine l2") and problem["error"]
    assert events[-1]["event"] == "finish" and events[-1]["counts"] == {"ok": 1, "diverged": 1}
    assert {e["event"] for e in events} == ({"problem", "finish"} if quiet else {"start", "cell", "problem", "finish"})


def test_json_log_lines_report_bad_input_as_json_too(tmp_path, capsys):
    assert main(["run", "--task", "mnsit", "--log-format", "json", "--out", str(tmp_path / "r.csv")]) == 2
    error = json.loads(one_line(capsys.readouterr().err))
    assert error["event"] == "error" and error["message"].startswith("unknown task 'mnsit'")
