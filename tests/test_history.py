"""dropbench history: runs lined up by configuration and date, flags only where a figure truly moved, exit codes a
pipeline can trust."""

import io
import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from test_compare import frame, row

from dropbench.cli import main
from dropbench.report.history import Run, history, read_runs
from dropbench.report.runs import run_info

SEEDS = range(9)  # the fewest at which the sign-flip test passes Holm across four configurations (4 · 2/2^9)
CONFIGS = [("none", "", 1.0), ("none", "", 0.5), ("l2", "0.01", 1.0), ("l2", "0.01", 0.5)]
EXAMPLES = 200  # accuracies in whole test examples, as real ones are
BASE = np.random.default_rng(7).integers(160, 185, size=(len(CONFIGS), len(SEEDS))) / EXAMPLES
DATES = ["2026-11-02T03:00:00Z", "2026-11-09T03:00:00Z", "2026-11-16T03:00:00Z", "2026-11-23T03:00:00Z"]


def run_rows(week, *, noise_seed=None, drop=None, epochs=3, commit=None, task="wine"):
    """One run of a 4-configuration grid over 9 seeds of `task`: the BASE accuracies, with ±1 example of noise per
    cell (`noise_seed`), and `drop` = (configuration index, examples lost on every seed). `epochs` other than 3 is
    another training setup: another setup_id and other cell ids, as a run of a changed suite writes them."""
    rng = np.random.default_rng(noise_seed)
    rows = []
    for c, (reg, strength, keep) in enumerate(CONFIGS):
        for seed in SEEDS:
            acc = BASE[c, seed]
            if noise_seed is not None:
                acc += rng.integers(-1, 2) / EXAMPLES
            if drop is not None and drop[0] == c:
                acc -= drop[1] / EXAMPLES
            rows.append(
                row(
                    task,
                    reg,
                    strength,
                    keep,
                    seed,
                    suite="weekly",
                    test_acc=acc,
                    cell_id=f"{task}|{reg}|{keep}|{seed}|e{epochs}",
                    setup_id=f"setup-e{epochs}",
                    max_epochs=epochs,
                    started_at=DATES[week],
                    git_commit=commit or f"{week:x}" * 40,
                    dropbench_version="0.1.0",
                    torch_version="2.13.0+cpu",
                    host="ci",
                    cpu="AMD EPYC",
                    device="cpu",
                )
            )
    return rows


def write(tmp_path, name, rows):
    path = tmp_path / name
    frame(rows).to_csv(path, index=False)
    return path


def as_runs(*row_lists):
    """Runs built in memory, as read_runs builds them from files."""
    runs = []
    for i, rows in enumerate(row_lists):
        data = frame(rows)
        runs.append(Run(run_info([f"run{i}.csv"], data), data))
    return runs


def trend_of(found, reg, keep, epochs=3):
    (trend,) = [
        t
        for t in found.trends
        if t.config["regularizer"] == reg and t.config["keep_rate"] == keep and t.config["setup"] == f"setup-e{epochs}"
    ]
    return trend


def test_a_real_drop_is_flagged_in_its_run_and_fails_the_newest_step():
    found = history(as_runs(run_rows(0), run_rows(1, noise_seed=1), run_rows(2, noise_seed=2, drop=(3, 6))))
    dropped = trend_of(found, "l2", 0.5)
    assert dropped.changes == ("", "", "degradation")
    assert all(not any(t.changes) for t in found.trends if t is not dropped)  # noise moves nothing
    step = dropped.steps[2]
    assert step.verdict == "regression" and step.delta < -0.005 and step.p_value < 0.05
    assert found.exit_code == 1 and found.verdict == "regression"
    assert found.bases == ((0,), (1,))  # each run against the one before
    # The trend's points: mean and 95% t-interval over seeds, computed here independently.
    values = np.asarray([r["test_acc"] for r in run_rows(2, noise_seed=2, drop=(3, 6))][27:36])
    half = scipy.stats.t.ppf(0.975, 8) * values.std(ddof=1) / 3
    point = dropped.points[2]
    assert (point.n, point.mean, point.ci, point.not_ok) == (9, pytest.approx(values.mean()), pytest.approx(half), 0)


def test_a_move_that_only_noise_makes_is_not_flagged():
    found = history(as_runs(*(run_rows(week, noise_seed=week + 10) for week in range(4))))
    assert not any(change for trend in found.trends for change in trend.changes)
    assert found.exit_code == 0 and found.verdict == "no regression"
    assert len(found.trends) == 4 and all(len(t.points) == 4 for t in found.trends)


# Holm's families are per task (compare), so the tasks of one run are independent families: a history of 4 runs of
# 10 tasks gives 3 steps × 10 tasks = 30 null steps, each drawn as one step of a one-task history is.
NULL_TASKS = [f"task{i}" for i in range(10)]


@pytest.mark.slow
def test_flags_hold_their_error_rate_when_nothing_changes():
    """300 null steps of a task (the same cells again, each ±1 example of independent noise, as a rerun on another
    machine gives): the share of steps with any flag stays at or below α (Holm across the task's four
    configurations)."""
    # Still 300 steps, each with its own noise, under the same tolerance, so the test fails a broken flag rate with
    # the same power as the 100 one-task histories it used to build; 10 histories of 10 tasks take half the time,
    # as a history's cost is mostly per run and per step, not per row.
    flagged, steps = 0, 0
    for trial in range(10):
        weeks = [
            [
                cell
                for t, task in enumerate(NULL_TASKS)
                for cell in run_rows(week, noise_seed=trial * 1000 + week * 100 + t, task=task)
            ]
            for week in range(4)
        ]
        found = history(as_runs(*weeks))
        for task in NULL_TASKS:
            trends = [trend for trend in found.trends if trend.config["task"] == task]
            assert len(trends) == len(CONFIGS)
            for k in range(1, 4):
                flagged += any(trend.changes[k] for trend in trends)
                steps += 1
    assert steps == 300 and flagged / steps <= 0.05 + 2 * (0.05 * 0.95 / steps) ** 0.5  # α plus two standard errors


def test_runs_are_ordered_by_date_not_by_the_order_given(tmp_path, capsys):
    paths = [
        write(tmp_path, "c.csv", run_rows(2, drop=(1, 6))),
        write(tmp_path, "a.csv", run_rows(0)),
        write(tmp_path, "b.csv", run_rows(1, noise_seed=3)),
    ]
    assert main(["history", *map(str, paths), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert [run["paths"] for run in document["runs"]] == [[str(tmp_path / n)] for n in ("a.csv", "b.csv", "c.csv")]
    assert [run["label"] for run in document["runs"]] == [
        "2026-11-02 03:00 · 0000000",
        "2026-11-09 03:00 · 1111111",
        "2026-11-16 03:00 · 2222222",
    ]
    (dropped,) = [c for c in document["configurations"] if c["regularizer"] == "none" and c["keep_rate"] == 0.5]
    assert [s and s["change"] for s in dropped["steps"]] == [None, "", "degradation"]  # a drop, not a rise
    assert document["verdict"] == "regression" and document["exit_code"] == 1


def test_a_run_with_other_settings_is_not_lined_up_with_the_others():
    """Week 2 ran with 5 epochs: its cells are configurations of their own, and week 3 (3 epochs again) is
    compared with week 1, the latest run of its own setup."""
    found = history(as_runs(run_rows(0), run_rows(1, epochs=5, drop=(0, 30)), run_rows(2, drop=(2, 6))))
    assert len(found.trends) == 8
    other = [t for t in found.trends if t.config["setup"] == "setup-e5"]
    assert len(other) == 4 and all(t.points[0] is None and t.points[2] is None for t in other)
    assert all(t.label.endswith("· epochs 5") for t in other)  # named apart
    assert not any(change for t in other for change in t.changes)  # compared with nothing
    mine = trend_of(found, "l2", 1.0)
    assert mine.points[1] is None and mine.steps[1] is None
    assert mine.changes == ("", "", "degradation") and mine.steps[2].n_pairs == 9
    assert found.bases == ((), (0,))
    for step in found.steps:  # no comparison pairs a 3-epoch cell with a 5-epoch one
        assert len({r.setup for r in step.rows}) <= 1


def test_nothing_comparable_in_the_newest_step_exits_2_after_printing(tmp_path, capsys):
    other_task = [dict(r, task="digits", cell_id="digits" + r["cell_id"]) for r in run_rows(1)]
    paths = [write(tmp_path, "a.csv", run_rows(0)), write(tmp_path, "b.csv", other_task)]
    assert main(["history", *map(str, paths), "--format", "markdown"]) == 2
    out, err = capsys.readouterr()
    assert "**Verdict: not comparable**" in out
    assert err.startswith("dropbench: error: the newest run") and "nothing to compare" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one run", "history needs 2 runs or more"),
        ("not results", "not a dropbench results CSV"),
        ("missing", "results file not found"),
        ("undated", "no started_at in its rows"),
        ("empty folder", "a folder without any results CSV"),
        ("plot suffix", "name a .png or .svg file"),
        ("gap", "Invalid value for '--metric'"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys, case, expected):
    a, b = write(tmp_path, "a.csv", run_rows(0)), write(tmp_path, "b.csv", run_rows(1))
    args = {
        "one run": [a],
        "not results": [a, tmp_path / "other.csv"],
        "missing": [a, tmp_path / "absent.csv"],
        "undated": [a, write(tmp_path, "u.csv", [dict(r, started_at="") for r in run_rows(1)])],
        "empty folder": [a, tmp_path / "empty"],
        "plot suffix": [a, b, "--plot", tmp_path / "trend.txt"],
        "gap": [a, b, "--metric", "gap"],
    }[case]
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty").mkdir()
    assert main(["history", *map(str, args)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("dropbench: error: ") and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_folder_of_job_artifacts_skips_sidecars_shards_and_copies(tmp_path, capsys):
    """What a scheduled job downloads: per week a merged results file with its epochs sidecar, and for one week
    the shards beside their merged file; a copy of a week under another name."""
    week0, week1 = run_rows(0), run_rows(1, noise_seed=4)
    (tmp_path / "w0").mkdir()
    write(tmp_path / "w0", "quick.csv", week0)
    (tmp_path / "w0" / "quick.epochs.csv").write_text("cell_id,epoch,fit_loss,val_loss,val_acc\n")
    (tmp_path / "w1").mkdir()
    write(tmp_path / "w1", "quick.csv", week1)
    write(tmp_path / "w1", "shard-1.csv", week1[:18])
    write(tmp_path / "w1", "shard-2.csv", week1[18:])
    write(tmp_path, "copy-of-w0.csv", week0)
    notes = []
    runs = read_runs([[p] for p in sorted(tmp_path.rglob("*.csv")) if not p.name.endswith(".epochs.csv")], notes.append)
    assert len(notes) == 3  # the two shards and the second copy of week 0
    assert sorted(str(run.info.paths[0].relative_to(tmp_path)) for run in runs) == ["copy-of-w0.csv", "w1/quick.csv"]
    assert main(["history", str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "quick.epochs.csv: skipped, the per-epoch sidecar of quick.csv" in err
    assert "shard-1.csv: skipped, its cells are all in" in err and "w0/quick.csv: skipped" in err
    long = pd.read_csv(io.StringIO(out))
    assert sorted(set(long["run"])) == [1, 2] and len(long) == 2 * 4
    assert set(long["metric"]) == {"test_acc"} and {"mean", "ci", "delta", "p_value", "change"} <= set(long.columns)


@pytest.mark.slow  # draws a figure
def test_the_plot_and_every_format(tmp_path, capsys):
    paths = [write(tmp_path, f"w{i}.csv", run_rows(i, noise_seed=i, drop=(3, 6) if i == 2 else None)) for i in range(3)]
    plot = tmp_path / "trend.png"
    assert main(["history", *map(str, paths), "--plot", str(plot), "--format", "table"]) == 1
    out, err = capsys.readouterr()
    assert "Verdict: regression" in out and "▼" in out and f"trends drawn into {plot}" in err
    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 300 and image.std() > 0.05  # a real figure, not a blank canvas
    assert main(["history", *map(str, paths), "--format", "markdown", "--last", "2"]) == 1
    text = capsys.readouterr().out
    assert text.rstrip().splitlines()[-1].startswith("**Verdict: regression** — newest run #2")
    assert "| #1 2026-11-09 03:00 · 1111111 | #2 2026-11-16 03:00 · 2222222 |" in text


@pytest.mark.slow  # draws a figure
def test_the_plot_has_at_most_6_lines_a_panel_and_intervals_clipped_to_what_is_possible():
    """plot's rules where they are cheap: panels of at most plot_rules.MAX_LINES lines, and bars that stop at
    100% where a t-interval over 3 seeds near 100% accuracy reaches past it."""
    from dropbench.report.plots import plot_history

    keeps = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]

    def rows(week):
        return [
            row(
                "wine",
                "none",
                "",
                keep,
                seed,
                suite="weekly",
                test_acc=0.96 if seed == 0 else 1.0,
                started_at=DATES[week],
                git_commit=f"{week:x}" * 40,
            )
            for keep in keeps
            for seed in range(3)
        ]

    fig = plot_history(history(as_runs(rows(0), rows(1)), metric="test_acc"))
    panels = [ax for ax in fig.axes if ax.containers]
    assert [(ax.get_title(), len(ax.containers)) for ax in panels] == [("wine (1/2)", 6), ("wine (2/2)", 2)]
    tops = [
        segment[:, 1].max()
        for ax in panels
        for container in ax.containers
        for bars in container.lines[2]
        for segment in bars.get_segments()
    ]
    assert len(tops) == 2 * len(keeps) and max(tops) == pytest.approx(100.0)  # unclipped: 98.7 + 5.7
    assert "clipped to 0–100%" in fig.get_suptitle()


@pytest.mark.slow  # reads and compares several files through the CLI
def test_report_takes_the_verdicts_of_compare_and_history(tmp_path, capsys):
    a, b, c = (write(tmp_path, f"w{i}.csv", run_rows(i, drop=(3, 6) if i == 2 else None)) for i in range(3))
    assert (
        main(["report", str(c), "--compare", str(b), "--history", str(a), "--history", str(b), "--format", "json"]) == 1
    )
    document = json.loads(capsys.readouterr().out)
    assert document["comparison"]["verdict"] == "regression" and document["comparison"]["metric"] == "test_acc"
    assert document["history"]["exit_code"] == 1 and len(document["history"]["runs"]) == 3
    assert main(["report", str(c), "--history", str(tmp_path), "--format", "markdown"]) == 1  # the folder holds c too
    out, err = capsys.readouterr()
    assert out.rstrip().endswith("exit 1") and "w2.csv: skipped, its cells are all in" in err
    assert main(["report", str(b), "--compare", str(a)]) == 0
    assert "Verdict: no regression" in capsys.readouterr().out
    assert main(["report", str(c), "--compare", str(b), "--format", "csv"]) == 2
    assert "holds one table" in capsys.readouterr().err
