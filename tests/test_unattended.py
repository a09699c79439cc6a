"""Unattended runs: kills, concurrent writers, shards and merge, reruns, dry runs, JSON logs."""

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import subprocess_env

from dropbench.cli import main
from dropbench.merge import CIRCUMSTANCE_COLUMNS
from dropbench.results import COLUMNS, SCHEMA_VERSION, CsvTable

GRID = [
    "--task",
    "wine,breast-cancer",
    "--keep",
    "0.5,1.0",
    "--reg",
    "none,l2",
    "--seeds",
    "3",
    "--epochs",
    "4",
    "--jobs",
    "1",
    "-q",
]
GRID_CELLS = 2 * 2 * 2 * 3


def figures(path):
    frame = pd.read_csv(path).drop(columns=sorted(CIRCUMSTANCE_COLUMNS))
    return frame.set_index("cell_id").sort_index()


def cli(*args):
    return [sys.executable, "-m", "dropbench", *args]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference.csv"
    assert main(["run", *GRID, "--out", str(reference)]) == 0
    out = tmp_path / "killed.csv"
    # Each batch of rows is written in two halves 0.1 s apart, so a kill often lands mid-line.
    env = subprocess_env(DROPBENCH_TEST_WRITE_PAUSE="0.1")
    rng = random.Random(7)
    kills, torn = 0, 0
    for _ in range(6):
        proc = subprocess.Popen(
            cli("run", *GRID, "--out", str(out)), env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        try:
            proc.wait(timeout=rng.uniform(2.5, 4.5))  # python + torch start in ~2 s; then cells run
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            torn += out.exists() and not out.read_bytes().endswith(b"\n")
        if proc.returncode == 0:
            break
    assert kills >= 3, "the run finished before it could be killed three times"
    # The last resume runs to the end.
    assert subprocess.run(cli("run", *GRID, "--out", str(out)), capture_output=True).returncode == 0
    final = pd.read_csv(out)
    assert len(final) == GRID_CELLS and final["cell_id"].is_unique
    pd.testing.assert_frame_equal(figures(out), figures(reference))
    epochs = pd.read_csv(tmp_path / "killed.epochs.csv")
    assert not epochs.duplicated(["cell_id", "epoch"]).any() and len(epochs) == final["epochs_run"].sum()
    print(f"{kills} kills, {torn} left a torn last line")


def _append_many(path, writer, count):
    table = CsvTable(path, ("writer", "index", "payload"))
    for i in range(count):
        table.append([{"writer": writer, "index": i, "payload": f"{writer}-{i}-" + "x" * 500}])


@pytest.mark.slow
def test_two_processes_appending_at_once_never_interleave(tmp_path):
    path = tmp_path / "shared.csv"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 150)) for w in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert lines[0] == "writer,index,payload" and len(lines) == 301
    rows = [line.split(",") for line in lines[1:]]
    assert all(len(r) == 3 and r[2] == f"{r[0]}-{r[1]}-" + "x" * 500 for r in rows)
    for writer in ("a", "b"):
        assert [int(r[1]) for r in rows if r[0] == writer] == list(range(150))


@pytest.mark.slow
def test_shards_merged_equal_the_unsharded_run(tmp_path, capsys):
    whole = tmp_path / "whole.csv"
    assert main(["run", *GRID, "--out", str(whole)]) == 0
    parts = []
    for i in (1, 2, 3):
        part = tmp_path / f"shard{i}.csv"
        assert main(["run", *GRID, "--shard", f"{i}/3", "--out", str(part)]) == 0
        parts.append(part)
    sizes = [len(pd.read_csv(p)) for p in parts]
    assert sum(sizes) == GRID_CELLS and min(sizes) >= 5  # balanced, disjoint
    merged = tmp_path / "merged.csv"
    # The first shard twice: its rows are exact duplicates and are dropped.
    assert main(["merge", str(parts[0]), *map(str, parts), "-o", str(merged)]) == 0
    assert "24 cells (8 duplicates dropped)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(figures(merged), figures(whole))
    merged_epochs = pd.read_csv(tmp_path / "merged.epochs.csv")
    assert len(merged_epochs) == pd.read_csv(merged)["epochs_run"].sum()


def test_merge_refuses_conflicting_rows(tmp_path, capsys):
    a = tmp_path / "a.csv"
    assert main(["run", *GRID[:8], "--seeds", "1", "--epochs", "2", "--jobs", "1", "-q", "--out", str(a)]) == 0
    b = tmp_path / "b.csv"
    frame = pd.read_csv(a, dtype=str, keep_default_na=False)
    frame.loc[0, "test_acc"] = "0.5"
    frame.to_csv(b, index=False)
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m.csv")]) == 2
    assert "conflicting rows for 1 cell" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.slow
def test_rerun_failed_replaces_failed_rows_and_fresh_sets_the_file_aside(tmp_path):
    out = tmp_path / "r.csv"
    assert main(["run", *GRID, "--out", str(out)]) == 0
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    frame.loc[[0, 3], "status"] = "failed"
    frame.loc[[0, 3], "error"] = "RuntimeError: boom"
    frame.to_csv(out, index=False)
    assert main(["run", *GRID, "--out", str(out)]) == 0  # a plain resume leaves failed cells alone
    assert (pd.read_csv(out)["status"] == "failed").sum() == 2
    assert main(["run", *GRID, "--out", str(out), "--rerun-failed"]) == 0
    rerun = pd.read_csv(out)
    assert len(rerun) == GRID_CELLS and rerun["cell_id"].is_unique and (rerun["status"] == "ok").all()
    assert main(["run", *GRID, "--out", str(out), "--fresh", "--seeds", "1"]) == 0
    assert len(pd.read_csv(out)) == GRID_CELLS // 3
    (aside,) = tmp_path.glob("r.*.bak.csv")
    assert len(pd.read_csv(aside)) == GRID_CELLS  # moved, never deleted


def test_a_file_of_another_suite_is_refused(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["run", *GRID, "--seeds", "1", "--out", str(out)]) == 0
    suite = tmp_path / "other.toml"
    suite.write_text('name = "other"\nepochs = 1\n[[task]]\nname = "wine"\n')
    before = out.read_bytes()
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 2
    assert "holds results of suite 'quick', not 'other'" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_dry_run_counts_done_cells_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["run", *GRID, "--seeds", "1", "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["run", *GRID, "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "wine" in printed and "breast-cancer" in printed
    all_row = next(line for line in printed.splitlines() if "all" in line)
    cells = [c.strip() for c in all_row.split("│") if c.strip()]
    assert cells[:4] == ["all", "24", "8", "16"]  # grid, done, to run
    assert out.read_bytes() == before


def test_json_log_lines_one_per_cell(tmp_path, capsys):
    out = tmp_path / "r.csv"
    args = ["run", *GRID[:-1], "--seeds", "1", "--log-format", "json", "--out", str(out)]
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    cells = [e for e in events if e["event"] == "cell"]
    assert len(cells) == GRID_CELLS // 3 and set(COLUMNS) <= set(cells[0])
    assert events[0]["event"] == "start" and events[-1]["event"] == "finish"


@pytest.mark.slow
@pytest.mark.parametrize("stacked", [False, True])
def test_failed_cells_are_recorded_the_run_goes_on_and_exits_1(tmp_path, monkeypatch, capsys, stacked):
    import dropbench.executors as executors

    real_alone, real_stacked = executors.fit_alone, executors.fit_stacked

    def flaky(cell, data, *rest):
        if cell.keep_rate == 0.5 and cell.seed == 0:
            raise RuntimeError("simulated failure")
        return real_alone(cell, data, *rest)

    def broken_stack(cells, data, *rest):
        if len(cells) > 1:  # a cell alone trains as a stack of one: that one works
            raise RuntimeError("simulated stacked failure")
        return real_stacked(cells, data, *rest)

    monkeypatch.setattr(executors, "fit_alone", flaky)
    # A stacked group that raises is fitted again cell by cell, so the one bad cell fails alone.
    monkeypatch.setattr(executors, "fit_stacked", broken_stack)
    out = tmp_path / "r.csv"
    assert main(["run", *GRID, "--out", str(out), *([] if stacked else ["--no-stack"])]) == 1
    frame = pd.read_csv(out)
    failed = frame[frame["status"] == "failed"]
    assert len(frame) == GRID_CELLS and len(failed) == 4
    assert (failed["error"] == "RuntimeError: simulated failure").all()
    assert "simulated failure" in capsys.readouterr().err


def test_provenance_in_rows_and_sidecar(tmp_path):
    out = tmp_path / "r.csv"
    assert main(["run", *GRID, "--seeds", "1", "--out", str(out)]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["python_version"].count(".") == 2 and row["sklearn_version"] and row["host"] and row["cpu"]
    assert row["threads"] >= 1 and row["schema_version"] == SCHEMA_VERSION
    meta = json.loads((tmp_path / "r.json").read_text())
    assert meta["runs"][0]["machine"]["cpu_count"] >= 1 and meta["data_files"] == {"wine": {}, "breast-cancer": {}}


def _pool_workers(driver: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(driver), "-f", "spawn_main"], capture_output=True, text=True)
    return [int(pid) for pid in children.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_for_rows(path, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) > count:
            return
        time.sleep(0.3)
    pytest.fail(f"fewer than {count} rows in {path} after {timeout} s")


# Unstacked: twelve units of one cell, so the pool is still busy when the first rows are written.
POOL_GRID = [
    "run",
    "--task",
    "synthetic",
    "--keep",
    "0.5,0.8,1.0",
    "--reg",
    "none,l2",
    "--seeds",
    "2",
    "--epochs",
    "40",
    "--jobs",
    "2",
    "--no-stack",
    "-q",
]


@pytest.mark.slow
def test_pool_workers_leave_when_the_driver_is_killed(tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(cli(*POOL_GRID, "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_rows(out, 2, 120)  # the workers are past their start-up once cells have finished
    workers = _pool_workers(proc.pid)
    assert workers, "no pool workers found"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers)


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced_and_its_cell_retried(tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(cli(*POOL_GRID, "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_rows(out, 2, 120)
    os.kill(_pool_workers(proc.pid)[0], signal.SIGKILL)
    assert proc.wait(timeout=300) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 12 and frame["cell_id"].is_unique and (frame["status"] == "ok").all()
