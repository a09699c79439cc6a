"""Successive halving of a tuned suite's tuning phase ([tuning] halving): the rung schedule, the seed-respecting
stopping rule on constructed figures and rows, the suite's refusals, and a tiny halving run end to end with
interrupt and resume."""

import csv
import importlib.util
import io
import shutil
import textwrap
from dataclasses import replace

import pandas as pd
import pytest
from conftest import ROOT

from dropbench.checkpoints import checkpoint_folder
from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.executors import LocalExecutor
from dropbench.merge import CIRCUMSTANCE_COLUMNS
from dropbench.planning import Shard
from dropbench.report.tuning import choose_on_validation
from dropbench.results import COLUMNS, ResultStore, read_results, sidecar_paths
from dropbench.runner import Reporter, run_suite
from dropbench.suite import load_suite
from dropbench.tuning import Halving, halving_cells, halving_outlook, survivors, tune_cells

HALVED = """
name = "tiny-halving"
epochs = 6
model = { kind = "mlp", hidden = [16] }
optimizer = { name = "sgd", lr = 0.05, momentum = 0.9 }
[tuning]
methods = ["l2", "dropout"]
budget = 4
tuning_seeds = 2
evaluation_seeds = 2
halving = { min_epochs = 2, eta = 2 }
[tuning.space]
l2 = { log = [1e-4, 3.0] }
keep = { range = [0.05, 0.9] }
[[task]]
name = "wine"
"""


def load(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_suite(str(path))


# ---------------------------------------------------------------- the rung schedule


@pytest.mark.parametrize(
    ("min_epochs", "eta", "epochs", "rungs"),
    [(5, 3, 30, (5, 15, 30)), (1, 2, 4, (1, 2, 4)), (2, 2, 8, (2, 4, 8)), (5, 3, 6, (5, 6)), (1, 3, 9, (1, 3, 9))],
)
def test_rungs_grow_by_eta_and_end_at_the_tasks_epochs(min_epochs, eta, epochs, rungs):
    assert Halving(min_epochs, eta).rungs(epochs) == rungs


def test_keep_count_is_the_ceiling_of_n_over_eta():
    assert [Halving(1, 3).keep_count(n) for n in (1, 2, 3, 4, 8, 9, 10)] == [1, 1, 1, 2, 3, 3, 4]


# ---------------------------------------------------------------- the stopping rule


def test_with_one_seed_the_rule_is_plain_top_k():
    figures = {0: [0.6], 1: [0.9], 2: [0.8], 3: [0.7]}
    assert survivors(figures, 2, higher=True) == [1, 2]
    assert survivors(figures, 2, higher=False) == [0, 3]  # a loss: lower is better


def test_a_trial_worse_on_one_seed_but_not_on_the_mean_is_not_stopped():
    figures = {
        0: [0.90, 0.90, 0.90],  # better than trial 1 on seed 2, worse on the mean: within its standard error
        1: [0.95, 0.95, 0.85],  # the best mean (0.917, se 0.033): the cut with keep 1
        2: [0.50, 0.52, 0.48],  # clearly worse: stopped
        3: [0.80, 0.99, 0.60],  # worse on the mean (0.797) but by less than both standard errors (0.033 + 0.113)
    }
    assert survivors(figures, 1, higher=True) == [0, 1, 3]
    # a seed-by-seed rule would stop trial 0 (worse than trial 1 on two seeds); the mean ranks it second
    assert survivors({0: [0.91, 0.91, 0.80], 1: [0.92, 0.92, 0.60], 2: [0.1, 0.1, 0.1]}, 1, True) == [0, 1]


def test_ties_go_to_the_lowest_trial_and_failed_trials_are_stopped():
    assert survivors({0: [0.5, 0.5], 1: [0.9, 0.9], 2: [0.9, 0.9], 3: [0.1, 0.1]}, 1, True) == [1, 2]  # tie: both in
    assert survivors({0: [], 1: [0.5], 2: [float("nan")]}, 2, True) == [1]


def test_halving_cells_read_each_rung_from_constructed_rows(tmp_path):
    suite = load(tmp_path, HALVED)
    first = halving_cells(suite, {})
    assert not first.complete and len(first.cells) == 2 * 4 * 2 and {c.epochs for c in first.cells} == {2}
    assert first.cells == tune_cells(suite)
    # the first rung: l2's trial 2 best on the mean but worst on seed 0; trials 0 and 1 clearly worse
    rung1 = {0: (0.3, 0.3), 1: (0.2, 0.21), 2: (0.6, 0.99), 3: (0.7, 0.7)}
    written = {
        c.cell_id: {"status": "ok", "val_acc": str(rung1[c.trial][c.seed] if c.method == "l2" else 0.5)}
        for c in first.cells
    }
    second = halving_cells(suite, written)
    l2 = {c.trial for c in second.cells if c.method == "l2" and c.epochs == 4}
    assert l2 == {2, 3}  # ⌈4/2⌉ = 2 by rank; 0 and 1 are beyond both standard errors
    assert {c.trial for c in second.cells if c.method == "dropout" and c.epochs == 4} == {0, 1, 2, 3}  # all tied
    written.update({c.cell_id: {"status": "ok", "val_acc": "0.5"} for c in second.cells if c.epochs == 4})
    third = halving_cells(suite, written)
    assert third.complete and {c.epochs for c in third.final} == {6}
    full = {c.cell_id for c in tune_cells(load(tmp_path, HALVED.replace("halving = { min_epochs = 2, eta = 2 }", "")))}
    assert {c.cell_id for c in third.final} <= full  # the last rung is the full grid's tune cells


def test_the_suites_alpha_sets_the_stopping_tests_level(tmp_path):
    """Trial 2 is 0.01 below the cut (trial 0) on average, well within the seed noise: at the default level it
    goes on; at alpha = 0.5 (plain top-⌈n/η⌉) any trial below the cut stops."""
    rung1 = {0: (0.69, 0.71), 1: (0.6, 0.99), 2: (0.68, 0.70), 3: (0.2, 0.2)}
    kept = {}
    for alpha in ("", ", alpha = 0.5"):
        suite = load(tmp_path, HALVED.replace("eta = 2 }", f"eta = 2{alpha} }}"))
        first = halving_cells(suite, {}).cells
        written = {c.cell_id: {"status": "ok", "val_acc": str(rung1[c.trial][c.seed])} for c in first}
        later = halving_cells(suite, written).cells
        kept[alpha] = {c.trial for c in later if c.method == "l2" and c.epochs == 4}
    assert kept[""] == {0, 1, 2} and kept[", alpha = 0.5"] == {0, 1}


# ---------------------------------------------------------------- refusals

BAD = [
    ("{ min_epochs = 1, eta = 1 }", r"halving.eta: 1 keeps every trial; successive halving needs eta ≥ 2"),
    ("{ min_epochs = 0, eta = 2 }", r"halving.min_epochs: expected an integer ≥ 1"),
    ("{ min_epochs = 6, eta = 2 }", r"min_epochs: 6 is not below task 'wine''s 6 epochs"),
    ("{ min_epochs = 1 }", r"halving: 'eta' is required"),
    ("{ min_epochs = 1, eta = 2, rungs = 3 }", r"halving: unknown key 'rungs'"),
    ("{ min_epochs = 1, eta = 5 }", r"halving.eta: 5 is more than the most trials a method has \(4\)"),
    ("3", r"halving: expected a table"),
    ("{ min_epochs = 2, eta = 2, alpha = 0.7 }", r"halving.alpha: 0.7 is not a level in \(0, 0.5\]"),
    ("{ min_epochs = 2, eta = 2, alpha = 0 }", r"halving.alpha: 0 is not a level in \(0, 0.5\]"),
    ("{ min_epochs = 2, eta = 2, alpha = 'x' }", r"halving.alpha: expected a number"),
]


@pytest.mark.parametrize(("value", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_bad_halving_is_refused_in_one_line(tmp_path, value, message):
    with pytest.raises(UserError, match=message) as error:
        load(tmp_path, HALVED.replace("{ min_epochs = 2, eta = 2 }", value))
    assert "\n" not in str(error.value)


def test_halving_with_nothing_to_halve_is_refused(tmp_path):
    text = HALVED.replace('methods = ["l2", "dropout"]', 'methods = ["none"]').replace("budget = 4", "budget = 1")
    text = text.split("[tuning.space]")[0] + "[[task]]\nname = 'wine'\n"
    with pytest.raises(UserError, match="every method has one trial, so there is nothing to halve"):
        load(tmp_path, text)


# ---------------------------------------------------------------- a halving run end to end


class Quiet(Reporter):
    """Notes, and the epochs: those the run said it would train (start, then each later rung), those it trained."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.planned = 0
        self.trained: list[tuple[str, int]] = []  # (cell_id, epoch) of every epoch that ended
        self.resumed: dict[str, int] = {}

    def note(self, message: str) -> None:
        self.notes.append(message)

    def start(self, suite, total, skipped, csv_path, epochs=0) -> None:
        self.planned += epochs

    def extend(self, cells, epochs) -> None:
        self.planned += epochs

    def resumes(self, starts) -> None:
        self.resumed.update(starts)

    def epochs_done(self, progress) -> None:
        self.trained += [(cell_id, progress.epoch) for cell_id in progress.cell_ids]


def run(suite, out, on_row=None):
    reporter = Quiet()
    return run_suite(suite, out, reporter=reporter, executor=LocalExecutor(), on_row=on_row), reporter


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def figures(path):
    frame = pd.read_csv(path).set_index("cell_id").sort_index()
    return frame[["method", "phase", "trial", "seed", "max_epochs", "epochs_run", "val_acc", "test_acc"]]


def everything(path):
    """Every column of every row but the circumstances (time, machine), and every epoch's curve point."""
    rows = pd.read_csv(path).drop(columns=sorted(CIRCUMSTANCE_COLUMNS)).set_index("cell_id").sort_index()
    curves = pd.read_csv(sidecar_paths(path)[0]).sort_values(["cell_id", "epoch"]).reset_index(drop=True)
    return rows, curves


def assert_same_run(path, reference):
    (rows, curves), (expected_rows, expected_curves) = everything(path), everything(reference)
    pd.testing.assert_frame_equal(rows, expected_rows)
    pd.testing.assert_frame_equal(curves, expected_curves)


def longest_per_training(tune):
    """(method, trial, seed) -> the most epochs any of its rungs' rows ran: each training's epochs, once."""
    longest: dict[tuple[str, str, str], int] = {}
    for r in tune:
        key = (r["method"], r["trial"], r["seed"])
        longest[key] = max(longest.get(key, 0), int(r["epochs_run"]))
    return longest


@pytest.fixture(scope="module")
def halved_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("halving")
    suite = load(folder, HALVED)
    summary, reporter = run(suite, folder / "h.csv")
    return suite, folder / "h.csv", summary, reporter


@pytest.mark.slow
def test_stopped_trials_train_fewer_epochs_and_the_choice_is_among_survivors(halved_run):
    suite, path, summary, reporter = halved_run
    written = rows(path)
    assert len({r["cell_id"] for r in written}) == len(written) and summary.counts["ok"] == len(written)
    tune = [r for r in written if r["phase"] == "tune"]
    reached = {}  # (method, trial) -> the longest rung trained
    for r in tune:
        key = (r["method"], int(r["trial"]))
        reached[key] = max(reached.get(key, 0), int(r["max_epochs"]))
    assert set(reached) == {(m, t) for m in ("l2", "dropout") for t in range(4)}
    assert min(reached.values()) < 6 and max(reached.values()) == 6  # some stopped early, some trained in full
    for (method, trial), rung in reached.items():  # every trial has both seeds at every rung up to its last
        assert {int(r["max_epochs"]) for r in tune if (r["method"], int(r["trial"])) == (method, trial)} == {
            e for e in (2, 4, 6) if e <= rung
        }
    chosen = choose_on_validation(read_results(path)).set_index("method")
    for method in ("l2", "dropout"):
        assert reached[method, int(chosen.loc[method, "trial"])] == 6
        assert chosen.loc[method, "trials"] == 4 and chosen.loc[method, "halved"]
        spent = sum(e for (m, _, _), e in longest_per_training(tune).items() if m == method)
        assert chosen.loc[method, "tune_epochs"] == spent <= 4 * 2 * 6  # each training once: at most the grid's
    evals = [r for r in written if r["phase"] == "eval"]
    assert {(r["method"], int(r["trial"])) for r in evals} == {(m, int(chosen.loc[m, "trial"])) for m in chosen.index}
    assert any(n.startswith("halving: ") for n in reporter.notes)


@pytest.mark.slow
def test_each_trial_trains_its_epochs_once_continuing_from_rung_to_rung(halved_run):
    """Rung 1 trains every trial 2 epochs, rung 2 its survivors 2 more (epochs 3-4), rung 3 theirs 2 more (5-6):
    the epochs counted, reported and planned are those, fewer than the full grid's, and no checkpoint is left."""
    suite, path, summary, reporter = halved_run
    written = rows(path)
    trained: dict[str, list[int]] = {}
    for cell_id, epoch in reporter.trained:
        trained.setdefault(cell_id, []).append(epoch)
    rungs = {2: [1, 2], 4: [3, 4], 6: [5, 6]}
    tune = [r for r in written if r["phase"] == "tune"]
    for r in tune:
        assert trained[r["cell_id"]] == rungs[int(r["max_epochs"])], r["cell_id"]  # its rung's epochs, and no other
    reached = [sum(1 for r in tune if int(r["max_epochs"]) == e) for e in (2, 4, 6)]  # cells (trial × seed) per rung
    epochs = sum(len(trained[r["cell_id"]]) for r in tune)
    assert epochs == 2 * reached[0] + 2 * reached[1] + 2 * reached[2] == sum(longest_per_training(tune).values())
    assert reached[0] >= reached[1] >= reached[2] < reached[0] and epochs < 2 * 4 * 2 * 6  # fewer than the grid's 96
    assert reporter.planned == len(reporter.trained)  # the bar's total: what was trained, no more, no less
    assert not checkpoint_folder(path).exists()
    assert summary.total == len(written)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints", ["kept", "deleted"])
def test_a_run_killed_between_rungs_resumes_to_the_uninterrupted_rows(halved_run, tmp_path, checkpoints):
    """Stopped after the first row of rung 2: the resumed run continues each training from its checkpoint (or, the
    folder deleted, trains it from scratch) and ends with the uninterrupted run's file: every figure and curve."""
    suite, full, _, _ = halved_run
    out = tmp_path / "k.csv"

    def stop_in_rung_2(row):
        if row.max_epochs == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(suite, out, on_row=stop_in_rung_2)
    folder = checkpoint_folder(out)
    saved = sorted(p.name for p in folder.iterdir())
    assert saved and all(p.endswith(".pt") for p in saved)  # the survivors' states, at 2 epochs or (one) at 4
    if checkpoints == "deleted":
        shutil.rmtree(folder)
    summary, reporter = run(load(tmp_path, HALVED), out)  # a fresh process
    assert_same_run(out, full)
    assert len({r["cell_id"] for r in rows(out)}) == len(rows(out))
    first = {cell_id: epochs for cell_id, epochs in reporter.resumed.items()}
    rung_2 = [r["cell_id"] for r in rows(out) if r["max_epochs"] == "4" and r["cell_id"] in dict(reporter.trained)]
    assert rung_2  # rung 2 was unfinished
    started = {cell_id: min(e for c, e in reporter.trained if c == cell_id) for cell_id in rung_2}
    assert set(started.values()) == ({3} if checkpoints == "kept" else {1})
    assert all(first.get(cell_id) == 2 for cell_id in rung_2) == (checkpoints == "kept")
    assert not folder.exists()


@pytest.mark.slow
def test_commands_on_a_folder_with_checkpoints_read_the_results_only(halved_run, tmp_path, capsys):
    """Checkpoints of an interrupted run lie beside its files: a glob of CSVs does not see them, and merge,
    report and a run into another file are not confused by them."""
    suite, _, _, _ = halved_run
    out = tmp_path / "r.csv"
    with pytest.raises(KeyboardInterrupt):
        run(suite, out, on_row=lambda row: (_ for _ in ()).throw(KeyboardInterrupt) if row.max_epochs == 4 else None)
    assert checkpoint_folder(out).is_dir()
    found = sorted(str(p) for p in tmp_path.glob("r*.csv"))
    assert found == [str(out), str(sidecar_paths(out)[0])]
    capsys.readouterr()
    assert main(["merge", *found, "-o", str(tmp_path / "m.csv")]) == 0
    assert "from 1 files" in capsys.readouterr().out and not checkpoint_folder(tmp_path / "m.csv").exists()
    assert main(["report", *found, "--format", "csv"]) == 0
    assert main(["report", str(checkpoint_folder(out))]) == 2  # a folder is not a results file: one line, exit 2


def test_a_checkpoints_path_that_is_a_file_stops_a_halving_run_before_it_writes(tmp_path):
    suite = load(tmp_path, HALVED)
    checkpoint_folder(tmp_path / "h.csv").write_text("mine")
    with pytest.raises(UserError, match="h.checkpoints: not a folder"):
        run(suite, tmp_path / "h.csv")
    assert not (tmp_path / "h.csv").exists() and not (tmp_path / "h.json").exists()


def test_the_outlook_counts_the_rungs_known_and_bounds_the_others(tmp_path):
    suite = load(tmp_path, HALVED)
    written = {c.cell_id: {"status": "ok", "val_acc": "0.5"} for c in halving_cells(suite, {}).cells}
    outlook = halving_outlook(suite, written)  # rung 1 written, every trial tied: all 4 go on to rung 2
    rung_2 = 2 * 4 * 2 * 2  # methods × trials × seeds × the epochs it adds, each continuing from rung 1
    assert outlook.later["wine"] == (rung_2 + 2 * 2 * 2 * 2, rung_2 + 2 * 4 * 2 * 2)  # rung 3: 2 to 4 trials
    assert outlook.later_cells["wine"] == (16 + 8, 16 + 16)
    assert outlook.total == (32 + rung_2 + 16, 32 + rung_2 + 32) and outlook.grid == 96


def test_the_dry_run_bounds_the_later_rungs(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(HALVED))
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "d.csv")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # 2 methods × 4 trials × 2 seeds: rung 2 trains 2 to 4 trials 2 more epochs, rung 3 1 to 4 trials 2 more
    fewest, most = 2 * 2 * (2 * 2 + 1 * 2), 2 * 2 * (4 * 2 + 4 * 2)
    assert f"the later rungs train {fewest} to {most} epochs more" in out
    assert f"the whole tuning phase trains {fewest + 2 * 4 * 2 * 2} to {most + 32} epochs, the full grid 96" in out


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["rung 2", "rung 3", "eval"])
def test_an_interrupted_halving_run_resumes_to_the_same_rows(halved_run, tmp_path, cut):
    suite, full, _, _ = halved_run
    out = tmp_path / "r.csv"
    out.write_bytes(full.read_bytes())
    written = rows(full)
    drop = {
        "rung 2": lambda r: r["phase"] == "eval" or int(r["max_epochs"]) >= 4 and r["seed"] == "1",
        "rung 3": lambda r: r["phase"] == "eval" or int(r["max_epochs"]) == 6,
        "eval": lambda r: r["phase"] == "eval" and r["seed"] == "3",
    }[cut]
    ResultStore(out).forget({r["cell_id"] for r in written if drop(r)})
    again = load(tmp_path, HALVED)  # a fresh process
    summary, _ = run(again, out)
    assert summary.counts["ok"] == sum(map(drop, written))
    pd.testing.assert_frame_equal(figures(out), figures(full))
    assert len(rows(out)) == len(written)
    summary, _ = run(again, out)  # nothing left
    assert summary.counts == {}


@pytest.mark.slow
def test_a_changed_rung_figure_reruns_the_later_rungs_and_drops_stale_rows(halved_run, tmp_path):
    suite, full, _, _ = halved_run
    written = rows(full)
    rung1 = [r for r in written if r["phase"] == "tune" and r["method"] == "l2" and r["max_epochs"] == "4"]
    later = {int(r["trial"]) for r in written if r["method"] == "l2" and r["max_epochs"] == "6"}
    stopped = sorted({int(r["trial"]) for r in rung1} - later)
    assert stopped, "the tiny run stops some l2 trial at its second rung"
    others = sorted({int(r["trial"]) for r in rung1} - {stopped[0]})
    values = {stopped[0]: "1.0", **{t: f"{0.1 * i:.1f}" for i, t in enumerate(others)}}
    for r in rung1:  # the stopped trial becomes the clear best at its second rung, the others clearly apart
        r["val_acc"] = values[int(r["trial"])]
    out = tmp_path / "c.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
    _, reporter = run(suite, out)
    after = rows(out)
    assert len({r["cell_id"] for r in after}) == len(after)
    l2 = {(int(r["trial"]), r["max_epochs"]) for r in after if r["method"] == "l2" and r["phase"] == "tune"}
    assert {t for t, e in l2 if e == "6"} == {stopped[0], others[-1]}  # ⌈4/2⌉ = 2, seeds agree: no overlap
    assert any("tune rows no rung asks for any more" in n for n in reporter.notes)


def test_a_method_with_one_trial_trains_it_in_full_at_once(tmp_path):
    suite = load(tmp_path, HALVED.replace('methods = ["l2", "dropout"]', 'methods = ["none", "l2", "dropout"]'))
    none = [c for c in tune_cells(suite) if c.method == "none"]
    assert len(none) == 2 and {c.epochs for c in none} == {6}  # nothing to choose: no rung to stop it at
    assert {c.epochs for c in tune_cells(suite) if c.method == "l2"} == {2}


def test_the_bundled_halving_suite_is_quick_tuned_with_halving():
    grid, halved = load_suite("quick-tuned"), load_suite("quick-tuned-halving")
    assert halved.tuning is not None and halved.tuning.halving == Halving(5, 3)
    assert halved.tuning == replace(grid.tuning, halving=Halving(5, 3)) and halved.tasks == grid.tasks
    assert len(halved.cells()) == len(grid.cells())  # the first rung: every trial at every tuning seed
    assert {c.epochs for c in halved.cells() if c.method != "none"} == {5}


@pytest.mark.slow
def test_the_comparison_script_reads_both_files(halved_run, capsys):
    spec = importlib.util.spec_from_file_location("halving_vs_grid", ROOT / "benchmarks" / "halving_vs_grid.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _, path, _, _ = halved_run
    result = script.compare(path, path)
    tune = [r for r in rows(path) if r["phase"] == "tune"]
    assert result["halving"]["tune_epochs"] == sum(longest_per_training(tune).values())
    assert result["same_choice"] == result["pairs"] == 2 and result["epochs_ratio"] == 1.0
    assert script.main([str(path), str(path)]) == 0 and "same choice: 2 of 2" in capsys.readouterr().out


@pytest.mark.slow
def test_shards_run_the_first_rung_and_the_merged_file_the_rest(halved_run, tmp_path):
    suite, full, _, _ = halved_run
    for index in (1, 2):
        run_suite(suite, tmp_path / f"s{index}.csv", reporter=Quiet(), executor=LocalExecutor(), shard=Shard(index, 2))
        assert {(r["phase"], r["max_epochs"]) for r in rows(tmp_path / f"s{index}.csv")} == {("tune", "2")}
    assert main(["merge", str(tmp_path / "s1.csv"), str(tmp_path / "s2.csv"), "-o", str(tmp_path / "m.csv")]) == 0
    run(suite, tmp_path / "m.csv")
    pd.testing.assert_frame_equal(figures(tmp_path / "m.csv"), figures(full))
