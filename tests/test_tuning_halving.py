"""Successive halving of a tuned suite's tuning phase ([tuning] halving): the rung schedule, the seed-respecting
stopping rule on constructed figures and rows, the suite's refusals, and a tiny halving run end to end with
interrupt and resume."""

import csv
import importlib.util
import io
import textwrap
from dataclasses import replace

import pandas as pd
import pytest
from conftest import ROOT

from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.executors import LocalExecutor
from dropbench.planning import Shard
from dropbench.report.tuning import choose_on_validation
from dropbench.results import COLUMNS, ResultStore, read_results
from dropbench.runner import Reporter, run_suite
from dropbench.suite import load_suite
from dropbench.tuning import Halving, halving_cells, survivors, tune_cells

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


# ---------------------------------------------------------------- refusals

BAD = [
    ("{ min_epochs = 1, eta = 1 }", r"halving.eta: 1 keeps every trial; successive halving needs eta ≥ 2"),
    ("{ min_epochs = 0, eta = 2 }", r"halving.min_epochs: expected an integer ≥ 1"),
    ("{ min_epochs = 6, eta = 2 }", r"min_epochs: 6 is not below task 'wine''s 6 epochs"),
    ("{ min_epochs = 1 }", r"halving: 'eta' is required"),
    ("{ min_epochs = 1, eta = 2, rungs = 3 }", r"halving: unknown key 'rungs'"),
    ("{ min_epochs = 1, eta = 5 }", r"halving.eta: 5 is more than the most trials a method has \(4\)"),
    ("3", r"halving: expected a table"),
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
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def run(suite, out):
    reporter = Quiet()
    return run_suite(suite, out, reporter=reporter, executor=LocalExecutor()), reporter


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def figures(path):
    frame = pd.read_csv(path).set_index("cell_id").sort_index()
    return frame[["method", "phase", "trial", "seed", "max_epochs", "epochs_run", "val_acc", "test_acc"]]


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
        spent = sum(int(r["epochs_run"]) for r in tune if r["method"] == method)
        assert chosen.loc[method, "tune_epochs"] == spent
    evals = [r for r in written if r["phase"] == "eval"]
    assert {(r["method"], int(r["trial"])) for r in evals} == {(m, int(chosen.loc[m, "trial"])) for m in chosen.index}
    assert any(n.startswith("halving: ") for n in reporter.notes)


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
    assert result["halving"]["tune_epochs"] == sum(int(r["epochs_run"]) for r in tune)
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
