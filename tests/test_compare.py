import json
import math

import numpy as np
import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.compare import compare
from dropbench.errors import UserError
from dropbench.results import COLUMNS, read_results
from dropbench.stats import paired_difference

SEEDS = range(5)
# Per-seed BASE accuracies: the spread between seeds is what pairing removes.
BASE_ACC = [0.912, 0.905, 0.921, 0.899, 0.915]


def row(task="digits", reg="none", strength="", keep=1.0, seed=0, status="ok", suite="base", **figures):
    """A results row with every schema column; the cell_id depends on the identity only, not the suite."""
    values = dict.fromkeys(COLUMNS, "")
    values.update(
        cell_id=f"{task}|{reg}|{strength}|{keep}|{seed}", suite=suite, task=task, model="mlp(32)", regularizer=reg,
        strength=strength, keep_rate=keep, input_keep_rate=1.0, dropout="bernoulli", seed=seed, max_epochs=3,
        epochs_run=3, best_epoch=3, batch_size=64, optimizer="adam", lr=0.01, n_params=100, fit_seconds=1.0,
        status=status, schema_version=1,
    )  # fmt: skip
    acc = figures.pop("test_acc", 0.9)
    loss = figures.pop("test_loss", 0.3)
    values.update(train_acc=acc + 0.05, test_acc=acc, val_acc=acc, train_loss=loss - 0.1, test_loss=loss,
                  val_loss=loss, gap_acc=0.05, gap_loss=0.1)  # fmt: skip
    values.update(figures)
    return values


def frame(rows):
    return pd.DataFrame(rows, columns=list(COLUMNS))


def accs(deltas, task="digits", reg="none", keep=1.0, base=BASE_ACC, suite="new"):
    """Rows whose test_acc is the BASE accuracy of the same seed plus the given delta (fraction units)."""
    return [row(task, reg, keep=keep, seed=s, test_acc=base[s] + d, suite=suite) for s, d in zip(SEEDS, deltas)]


def base_rows(task="digits", reg="none", keep=1.0):
    return accs([0.0] * 5, task, reg, keep, suite="base")


def test_clear_regression_fails_the_gate():
    # NEW is 3 pp lower on every seed, with ±0.1 pp noise.
    new = accs([-0.030, -0.031, -0.029, -0.0305, -0.0295])
    result = compare(frame(base_rows()), frame(new))
    (comparison,) = result.rows
    assert comparison.verdict == "regression" and result.exit_code == 1
    assert comparison.n_pairs == 5
    assert comparison.delta == pytest.approx(-0.030)
    assert comparison.new_mean - comparison.base_mean == pytest.approx(comparison.delta)
    assert comparison.ci_low < comparison.delta < comparison.ci_high < -0.005
    assert comparison.p_value < 1e-4
    assert comparison.config == {"task": "digits", "model": "mlp(32)", "regularizer": "none", "strength": "",
                                 "keep_rate": 1.0, "layer_keep_rates": "", "input_keep_rate": 1.0,
                                 "dropout": "bernoulli", "train_size": 0}  # fmt: skip
    assert result.missing_in_new == [] and result.missing_in_base == []
    assert (result.metric, result.max_drop, result.alpha) == ("test_acc", 0.5, 0.05)


def test_noise_only_is_no_change():
    deltas = np.random.default_rng(0).uniform(-0.002, 0.002, size=5).tolist()
    result = compare(frame(base_rows()), frame(accs(deltas)))
    assert [r.verdict for r in result.rows] == ["no change"] and result.exit_code == 0


def test_large_noise_around_the_threshold_is_inconclusive():
    # Mean drop 0.6 pp (beyond max_drop 0.5) but seed-to-seed noise of about 1 pp: the interval covers
    # both "no worse than 0.5 pp" and "much worse", so the gate must not decide.
    deltas = [-0.016, 0.004, -0.012, 0.006, -0.012]
    result = compare(frame(base_rows()), frame(accs(deltas)), max_drop=0.5)
    (comparison,) = result.rows
    assert comparison.delta == pytest.approx(-0.006)
    assert comparison.ci_low < -0.005 < comparison.ci_high
    assert comparison.verdict == "inconclusive" and result.exit_code == 0


def test_missing_cells_on_either_side_are_listed_not_an_error(tmp_path):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    # NEW lost seed 2 of l2 keep=0.5, gained a configuration BASE never ran, and seed 4 diverged:
    # the diverged cell is present (not missing) but stays out of the statistics.
    new = accs([0.0] * 5) + [r for r in accs([0.0] * 5, reg="l2", keep=0.5) if r["seed"] != 2]
    new += [row("digits", "l1", keep=0.8, seed=0, suite="new")]
    new[4] = row(seed=4, status="diverged", test_acc=float("nan"), suite="new")
    frame(base).to_csv(tmp_path / "base.csv", index=False)
    frame(new).to_csv(tmp_path / "new.csv", index=False)

    result = compare(read_results(tmp_path / "base.csv"), read_results(tmp_path / "new.csv"))
    assert result.missing_in_new == ["digits l2 keep=0.5 seed=2"]
    assert result.missing_in_base == ["digits l1 keep=0.8 seed=0"]
    by_reg = {r.regularizer: r for r in result.rows}
    assert set(by_reg) == {"none", "l2"}  # l1 has no pair at all: only in the missing list
    assert by_reg["none"].n_pairs == 4 and by_reg["none"].new_not_ok == 1 and by_reg["none"].base_not_ok == 0
    assert by_reg["l2"].n_pairs == 4
    assert all(r.verdict == "no change" for r in result.rows) and result.exit_code == 0


def test_a_retried_cell_counts_once_with_its_latest_row():
    base = base_rows()
    new = accs([-0.03] * 5)
    new += accs([0.0] * 5)  # the rerun of every cell, written later: the latest row wins
    (comparison,) = compare(frame(base), frame(new)).rows
    assert comparison.n_pairs == 5 and comparison.verdict == "no change"


def test_lower_is_better_metric_regresses_upwards():
    base = [row(seed=s, test_loss=0.30 + 0.01 * s) for s in SEEDS]
    worse = [row(seed=s, test_loss=0.30 + 0.01 * s + 0.08 + 0.002 * (s % 2)) for s in SEEDS]
    better = [row(seed=s, test_loss=0.30 + 0.01 * s - 0.08 - 0.002 * (s % 2)) for s in SEEDS]

    # Loss up by 0.08 with max_drop 0.05 (loss units): a regression.
    up = compare(frame(base), frame(worse), metric="test_loss", max_drop=0.05)
    assert up.rows[0].delta == pytest.approx(0.0808)
    assert up.rows[0].verdict == "regression" and up.exit_code == 1
    # The same change downwards is an improvement, not a drop.
    down = compare(frame(base), frame(better), metric="test_loss", max_drop=0.05)
    assert down.rows[0].verdict == "improvement" and down.exit_code == 0
    # max_drop is in the metric's own units for losses: 0.5 loss units is far beyond a 0.08 rise.
    lenient = compare(frame(base), frame(worse), metric="test_loss", max_drop=0.5)
    assert lenient.rows[0].verdict == "no change"


def test_test_error_is_one_minus_accuracy_and_lower_is_better():
    result = compare(frame(base_rows()), frame(accs([-0.030, -0.031, -0.029, -0.0305, -0.0295])), metric="test_error")
    (comparison,) = result.rows
    assert comparison.base_mean == pytest.approx(1 - np.mean(BASE_ACC))
    assert comparison.delta == pytest.approx(0.030)
    assert comparison.verdict == "regression"


def test_improvements_are_flagged_and_pass():
    result = compare(frame(base_rows()), frame(accs([0.030, 0.031, 0.029, 0.0305, 0.0295])))
    assert result.rows[0].verdict == "improvement" and result.exit_code == 0
    # A significant but tiny drop (0.1 pp, under max_drop) is neither a regression nor an improvement.
    tiny = compare(frame(base_rows()), frame(accs([-0.001, -0.0011, -0.0009, -0.001, -0.001])))
    assert tiny.rows[0].p_value < 0.05 and tiny.rows[0].verdict == "no change"


def test_holm_correction_within_a_task_changes_the_verdict():
    # Drops (pp) whose paired t-test gives p = 0.0307 alone: with max_drop 0 that is a regression.
    drops = [-0.01, -0.02, -0.03, -0.002, -0.015]
    raw_p = paired_difference([0.0] * 5, drops).p_value
    assert 0.03 < raw_p < 0.05
    alone = compare(frame(base_rows()), frame(accs(drops)), max_drop=0.0)
    assert alone.rows[0].verdict == "regression" and alone.rows[0].p_value == pytest.approx(raw_p)

    # Three configurations of one task with the same drops: Holm multiplies the smallest p by 3, the
    # others follow monotonically, so each is 3 · 0.0307 = 0.092 > alpha. The CI (uncorrected) still lies
    # below zero, so a regression is not ruled out: inconclusive, and the gate passes.
    regs = ("none", "l1", "l2")
    base = [r for reg in regs for r in base_rows(reg=reg)]
    new = [r for reg in regs for r in accs(drops, reg=reg)]
    together = compare(frame(base), frame(new), max_drop=0.0)
    assert [r.p_raw for r in together.rows] == pytest.approx([raw_p] * 3)
    assert [r.p_value for r in together.rows] == pytest.approx([3 * raw_p] * 3)
    assert [r.verdict for r in together.rows] == ["inconclusive"] * 3 and together.exit_code == 0

    # The correction is per task: the same three configurations spread over three tasks stay regressions.
    base = [r for task in ("a", "b", "c") for r in base_rows(task=task)]
    new = [r for task in ("a", "b", "c") for r in accs(drops, task=task)]
    separate = compare(frame(base), frame(new), max_drop=0.0)
    assert [r.verdict for r in separate.rows] == ["regression"] * 3


def test_a_single_pair_with_a_large_drop_is_inconclusive():
    base = base_rows()[:1]
    small = compare(frame(base), frame(accs([-0.001])))
    large = compare(frame(base), frame(accs([-0.02])))
    assert small.rows[0].n_pairs == 1 and math.isnan(small.rows[0].p_value)
    assert small.rows[0].verdict == "no change"
    assert large.rows[0].verdict == "inconclusive" and large.exit_code == 0


def test_accuracy_of_a_regression_task_is_not_compared():
    nan = float("nan")
    base = base_rows() + [row("housing", seed=s, test_acc=nan, train_acc=nan, val_acc=nan) for s in SEEDS]
    new = accs([0.0] * 5) + [row("housing", seed=s, test_acc=nan, train_acc=nan, val_acc=nan) for s in SEEDS]
    result = compare(frame(base), frame(new))
    assert [r.task for r in result.rows] == ["digits"]
    assert [r.task for r in compare(frame(base), frame(new), metric="test_loss").rows] == ["digits", "housing"]


def test_bad_arguments_are_user_errors():
    base, new = frame(base_rows()), frame(accs([0.0] * 5))
    with pytest.raises(UserError, match="test_acc.*test_error.*fit_seconds"):
        compare(base, new, metric="accuracy")
    with pytest.raises(UserError, match="test_ece"):
        # allowed, but files written before schema 3 have no such column
        compare(base.drop(columns="test_ece"), new.drop(columns="test_ece"), metric="test_ece")
    with pytest.raises(UserError, match="unknown test"):
        compare(base, new, method="z")
    with pytest.raises(UserError, match="alpha"):
        compare(base, new, alpha=0.0)
    with pytest.raises(UserError, match="max drop"):
        compare(base, new, max_drop=-1.0)


def test_wilcoxon_method_is_used_for_the_p_value():
    new = accs([-0.030, -0.031, -0.029, -0.0305, -0.0295])
    result = compare(frame(base_rows()), frame(new), method="wilcoxon")
    # Five drops of one sign: the exact two-sided signed-rank p is 2/2⁵ = 0.0625, never below 0.05 with
    # five seeds, so the interval lies beyond the threshold yet the verdict cannot be a regression.
    assert result.method == "wilcoxon"
    assert result.rows[0].p_value == pytest.approx(0.0625)
    assert result.rows[0].verdict == "inconclusive"


# --- compare as a CI gate: it must not pass on nothing ------------------------------------------------------


def failed(rows, status="failed"):
    """The same cells, each not ok and without figures (as a crashed or diverged run writes them)."""
    return [dict(r, status=status, test_acc=float("nan"), suite="new") for r in rows]


def run_cli(tmp_path, capsys, base, new, *args):
    """`dropbench compare BASE NEW ...` in-process: (exit code, stdout, stderr)."""
    frame(base).to_csv(tmp_path / "base.csv", index=False)
    frame(new).to_csv(tmp_path / "new.csv", index=False)
    code = main(["compare", str(tmp_path / "base.csv"), str(tmp_path / "new.csv"), *args])
    out, err = capsys.readouterr()
    return code, out, err


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


def test_no_cell_in_common_exits_2_with_one_line_saying_why(tmp_path, capsys):
    base = base_rows("wine") + base_rows("wine", reg="l2")
    result = compare(frame(base), frame(accs([0.0] * 5, task="digits")))
    assert result.rows == [] and result.exit_code == 2 and result.verdict == "not comparable"

    code, out, err = run_cli(tmp_path, capsys, base, accs([0.0] * 5, task="digits"))
    assert code == 2
    assert err == ("dropbench: error: nothing to compare: BASE and NEW have no cell in common "
                   "(BASE: 10 cells of wine; NEW: 5 cells of digits)\n")  # fmt: skip
    assert "Traceback" not in out + err
    assert last_line(out).startswith("Verdict: not comparable — nothing to compare") and out.endswith("exit 2\n")


def test_every_new_cell_failed_is_not_comparable_and_exits_2(tmp_path, capsys):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    result = compare(frame(base), frame(failed(base)))
    # Before: two configurations of "no change" and exit 0, a gate passing on a run that produced nothing.
    assert [r.verdict for r in result.rows] == ["not comparable"] * 2
    assert [(r.n_pairs, r.n_matched, r.base_not_ok, r.new_not_ok) for r in result.rows] == [(0, 5, 0, 5)] * 2
    assert result.exit_code == 2
    assert result.reason == "nothing to compare: every matched cell of NEW failed or diverged (10 of 10)"

    code, out, err = run_cli(tmp_path, capsys, base, failed(base, status="diverged"))
    assert code == 2
    assert err == "dropbench: error: nothing to compare: every matched cell of NEW failed or diverged (10 of 10)\n"
    assert out.count("not comparable") >= 3  # both configurations listed, and the verdict


def test_the_reason_names_the_side_that_failed():
    base = base_rows()
    only_base = compare(frame(failed(base)), frame(accs([0.0] * 5)))
    assert only_base.reason == "nothing to compare: every matched cell of BASE failed or diverged (5 of 5)"
    both = compare(frame(failed(base)), frame(failed(base)))
    assert both.reason == "nothing to compare: every matched cell failed or diverged in both BASE and NEW (5 of 5)"
    assert [r.verdict for r in both.rows] == ["not comparable"]  # listed, though no cell has a figure
    # Seeds 0-1 failed in BASE, seeds 2-4 in NEW: each side has ok cells, but never the same seed.
    crossed = compare(frame(failed(base[:2]) + base[2:]), frame(accs([0.0] * 2) + failed(accs([0.0] * 5)[2:])))
    assert crossed.exit_code == 2
    assert crossed.reason == ("nothing to compare: no matched cell is ok on both sides "
                              "(failed or diverged: BASE 2 of 5, NEW 3 of 5)")  # fmt: skip


def test_accuracy_of_regression_tasks_only_is_not_comparable():
    nan = float("nan")
    housing = [row("housing", seed=s, test_acc=nan, train_acc=nan, val_acc=nan) for s in SEEDS]
    result = compare(frame(housing), frame(housing))
    assert result.exit_code == 2
    assert result.reason == ("nothing to compare: test_acc is not measured in any ok cell of the tasks BASE and NEW "
                             "share (housing)")  # fmt: skip
    assert compare(frame(housing), frame(housing), metric="test_loss").exit_code == 0


def test_a_configuration_that_failed_beside_comparable_ones_is_listed_and_the_others_decide(tmp_path, capsys):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    regressed = accs([-0.030, -0.031, -0.029, -0.0305, -0.0295])
    result = compare(frame(base), frame(regressed + failed(base_rows(reg="l2", keep=0.5))))
    by_reg = {r.regularizer: r for r in result.rows}
    assert by_reg["l2"].verdict == "not comparable" and by_reg["l2"].new_not_ok == 5
    assert by_reg["none"].verdict == "regression" and result.exit_code == 1 and result.reason == ""
    # The failed configuration is no test: Holm's family is the one comparable configuration.
    assert by_reg["none"].p_value == by_reg["none"].p_raw and math.isnan(by_reg["l2"].p_value)

    fine = accs([0.0] * 5) + failed(base_rows(reg="l2", keep=0.5))
    code, out, err = run_cli(tmp_path, capsys, base, fine, "--format", "markdown")
    assert code == 0 and err == ""
    assert "| digits l2 keep 0.5 | – | – | – | – |  | 0 | 0/5 | not comparable |" in out
    assert last_line(out).startswith("**Verdict: no regression** — 0 of 2 configurations worse in test_acc beyond")
    assert last_line(out).endswith("; 1 no change, 1 not comparable; exit 0")


@pytest.mark.parametrize(
    ("deltas", "verdict", "code"),
    [([-0.030, -0.031, -0.029, -0.0305, -0.0295], "regression", 1), ([0.0] * 5, "no regression", 0)],
)
def test_markdown_ends_with_one_verdict_line_naming_the_exit_code(tmp_path, capsys, deltas, verdict, code):
    exit_code, out, _ = run_cli(tmp_path, capsys, base_rows(), accs(deltas), "--format", "markdown")
    assert exit_code == code
    others = "" if code else "1 no change; "
    assert last_line(out) == (f"**Verdict: {verdict}** — {code} of 1 configuration worse in test_acc beyond 0.5 pp "
                              f"(paired t-test, Holm per task, α = 0.05); {others}exit {code}")  # fmt: skip
    assert sum("Verdict" in text for text in out.splitlines()) == 1


def test_markdown_and_table_of_nothing_comparable_end_with_the_reason_and_exit_2(tmp_path, capsys):
    base = base_rows()
    code, out, _ = run_cli(tmp_path, capsys, base, failed(base), "--format", "markdown")
    assert code == 2
    assert last_line(out) == ("**Verdict: not comparable** — nothing to compare: every matched cell of NEW failed or "
                              "diverged (5 of 5); exit 2")  # fmt: skip
    code, out, _ = run_cli(tmp_path, capsys, base, accs([0.0] * 5, task="wine"), "--format", "markdown")
    assert code == 2 and "|---|" not in out  # no empty table when no cell matched


def test_json_carries_the_verdict_and_exit_code(tmp_path, capsys):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    new = accs([-0.030, -0.031, -0.029, -0.0305, -0.0295]) + failed(base_rows(reg="l2", keep=0.5))
    code, out, _ = run_cli(tmp_path, capsys, base, new, "--format", "json")
    payload = json.loads(out)
    assert code == 1 and payload["exit_code"] == 1 and payload["verdict"] == "regression"
    assert payload["reason"] is None and payload["summary"].endswith("exit 1")
    assert [r["verdict"] for r in payload["rows"]] == ["regression", "not comparable"]
    assert payload["rows"][1]["delta"] is None

    code, out, err = run_cli(tmp_path, capsys, base, failed(base), "--format", "json")
    payload = json.loads(out)  # still one valid document on stdout for a CI step to read
    assert code == 2 and payload["exit_code"] == 2 and payload["verdict"] == "not comparable"
    assert payload["reason"] == "nothing to compare: every matched cell of NEW failed or diverged (10 of 10)"
    assert err.startswith("dropbench: error: nothing to compare")


def test_table_ends_with_the_verdict_and_a_regression_still_exits_1(tmp_path, capsys):
    code, out, err = run_cli(tmp_path, capsys, base_rows(), accs([-0.030, -0.031, -0.029, -0.0305, -0.0295]))
    assert code == 1 and err == ""
    assert last_line(out).startswith("Verdict: regression — 1 of 1 configuration worse") and out.endswith("exit 1\n")


def test_long_missing_lists_are_cut_in_the_table_but_not_in_json(tmp_path, capsys):
    # Six configurations in BASE, one in NEW: 25 cells missing in NEW.
    base = [r for keep in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9) for r in base_rows(keep=keep)]
    code, out, _ = run_cli(tmp_path, capsys, base, base_rows(keep=0.5))
    assert code == 0 and out.count("missing in new:") == 21
    assert "missing in new: … and 5 more (--format json lists all)" in out
    code, out, _ = run_cli(tmp_path, capsys, base, base_rows(keep=0.5), "--format", "json")
    assert len(json.loads(out)["missing_in_new"]) == 25
