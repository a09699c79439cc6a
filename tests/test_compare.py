import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.report.compare import compare
from dropbench.results import COLUMNS, read_results

SEEDS = range(8)
# Per-seed BASE accuracies: the spread between seeds is what pairing removes.
BASE_ACC = [0.912, 0.905, 0.921, 0.899, 0.915, 0.908, 0.918, 0.902]
# NEW 3 pp lower on every seed, with ±0.1 pp noise (mean exactly -3 pp).
CLEAR_DROP = [-0.030, -0.031, -0.029, -0.0305, -0.0295, -0.0302, -0.0298, -0.030]
# Eight seeds are what the exact sign-flip test needs: its smallest two-sided p is 2/2^n, 0.0625 at five seeds.
ONE_SIGN_P = 2 / 2**8


def exact_sign_flip_p(diffs):
    """The two-sided sign-flip p-value by brute force, independent of dropbench.stats: the share of the 2^n
    sign patterns whose |sum| reaches the observed |sum|."""
    observed = abs(sum(diffs))
    patterns = list(itertools.product((1, -1), repeat=len(diffs)))
    hits = sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12 for signs in patterns)
    return hits / len(patterns)


def signed_ranks(diffs):
    """Each difference replaced by the rank of its magnitude (1 = smallest), keeping its sign; no ties."""
    order = sorted(range(len(diffs)), key=lambda i: abs(diffs[i]))
    ranks = {i: rank for rank, i in enumerate(order, start=1)}
    return [math.copysign(ranks[i], d) for i, d in enumerate(diffs)]


def without_setup(config):
    """A configuration's columns but `setup` (a hash of the training settings), which must be a non-empty key."""
    config = dict(config)
    setup = config.pop("setup")
    assert isinstance(setup, str) and setup
    return config


def row(task="digits", reg="none", strength="", keep=1.0, seed=0, status="ok", suite="base", **figures):
    """A results row with every schema column; the cell_id depends on the identity only, not the suite."""
    values = dict.fromkeys(COLUMNS, "")
    values.update(
        cell_id=f"{task}|{reg}|{strength}|{keep}|{seed}",
        suite=suite,
        task=task,
        model="mlp(32)",
        regularizer=reg,
        strength=strength,
        keep_rate=keep,
        input_keep_rate=1.0,
        dropout="bernoulli",
        seed=seed,
        max_epochs=3,
        epochs_run=3,
        best_epoch=3,
        batch_size=64,
        optimizer="adam",
        lr=0.01,
        n_params=100,
        fit_seconds=1.0,
        status=status,
        schema_version=1,
    )
    acc = figures.pop("test_acc", 0.9)
    loss = figures.pop("test_loss", 0.3)
    values.update(
        train_acc=acc + 0.05,
        test_acc=acc,
        val_acc=acc,
        train_loss=loss - 0.1,
        test_loss=loss,
        val_loss=loss,
        gap_acc=0.05,
        gap_loss=0.1,
    )
    values.update(figures)
    return values


def frame(rows):
    return pd.DataFrame(rows, columns=list(COLUMNS))


def accs(deltas, task="digits", reg="none", keep=1.0, base=BASE_ACC, suite="new"):
    """Rows whose test_acc is the BASE accuracy of the same seed plus the given delta (fraction units)."""
    return [row(task, reg, keep=keep, seed=s, test_acc=base[s] + d, suite=suite) for s, d in zip(SEEDS, deltas)]


def base_rows(task="digits", reg="none", keep=1.0):
    return accs([0.0] * len(SEEDS), task, reg, keep, suite="base")


def test_clear_regression_fails_the_gate():
    new = accs(CLEAR_DROP)
    result = compare(frame(base_rows()), frame(new))
    (comparison,) = result.rows
    assert comparison.verdict == "regression" and result.exit_code == 1
    assert comparison.n_pairs == 8
    assert comparison.delta == pytest.approx(-0.030)
    assert comparison.new_mean - comparison.base_mean == pytest.approx(comparison.delta)
    assert comparison.ci_low < comparison.delta < comparison.ci_high < -0.005
    # All eight differences share a sign: only the observed pattern and its mirror reach |sum|, p = 2/2^8.
    assert exact_sign_flip_p(CLEAR_DROP) == ONE_SIGN_P
    assert comparison.p_value == pytest.approx(ONE_SIGN_P) and comparison.p_raw == pytest.approx(ONE_SIGN_P)
    assert without_setup(comparison.config) == {
        "task": "digits",
        "model": "mlp(32)",
        "regularizer": "none",
        "strength": "",
        "keep_rate": 1.0,
        "layer_keep_rates": "",
        "input_keep_rate": 1.0,
        "dropout": "bernoulli",
        "train_size": 0,
    }
    assert comparison.config["setup"] == comparison.setup
    assert result.missing_in_new == [] and result.missing_in_base == []
    assert (result.metric, result.max_drop, result.alpha) == ("test_acc", 0.5, 0.05)


def test_noise_only_is_no_change():
    deltas = np.random.default_rng(0).uniform(-0.002, 0.002, size=len(SEEDS)).tolist()
    result = compare(frame(base_rows()), frame(accs(deltas)))
    assert [r.verdict for r in result.rows] == ["no change"] and result.exit_code == 0


def test_large_noise_around_the_threshold_is_inconclusive():
    # Mean drop 0.6 pp (beyond max_drop 0.5) but seed-to-seed noise of about 1 pp: the interval covers
    # both "no worse than 0.5 pp" and "much worse", so the gate must not decide.
    deltas = [-0.016, 0.004, -0.012, 0.006, -0.012, -0.010, 0.002, -0.010]
    result = compare(frame(base_rows()), frame(accs(deltas)), max_drop=0.5)
    (comparison,) = result.rows
    assert comparison.delta == pytest.approx(-0.006)
    assert comparison.p_value == pytest.approx(exact_sign_flip_p(deltas)) and comparison.p_value > 0.05
    assert comparison.ci_low < -0.005 < comparison.ci_high
    assert comparison.verdict == "inconclusive" and result.exit_code == 0


def test_missing_cells_on_either_side_are_listed_not_an_error(tmp_path):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    # NEW lost seed 2 of l2 keep=0.5, gained a configuration BASE never ran, and seed 4 diverged:
    # the diverged cell is present (not missing) but stays out of the statistics.
    new = accs([0.0] * 8) + [r for r in accs([0.0] * 8, reg="l2", keep=0.5) if r["seed"] != 2]
    new += [row("digits", "l1", keep=0.8, seed=0, suite="new")]
    new[4] = row(seed=4, status="diverged", test_acc=float("nan"), suite="new")
    frame(base).to_csv(tmp_path / "base.csv", index=False)
    frame(new).to_csv(tmp_path / "new.csv", index=False)

    result = compare(read_results(tmp_path / "base.csv"), read_results(tmp_path / "new.csv"))
    assert result.missing_in_new == ["digits l2 keep=0.5 seed=2"]
    assert result.missing_in_base == ["digits l1 keep=0.8 seed=0"]
    by_reg = {r.regularizer: r for r in result.rows}
    assert set(by_reg) == {"none", "l2"}  # l1 has no pair at all: only in the missing list
    assert by_reg["none"].n_pairs == 7 and by_reg["none"].new_not_ok == 1 and by_reg["none"].base_not_ok == 0
    assert by_reg["none"].n_matched == 8 and by_reg["l2"].n_pairs == 7 and by_reg["l2"].n_matched == 7
    assert all(r.verdict == "no change" for r in result.rows) and result.exit_code == 0


def test_a_retried_cell_counts_once_with_its_latest_row():
    base = base_rows()
    new = accs([-0.03] * 8)
    new += accs([0.0] * 8)  # the rerun of every cell, written later: the latest row wins
    (comparison,) = compare(frame(base), frame(new)).rows
    assert comparison.n_pairs == 8 and comparison.verdict == "no change"


def test_lower_is_better_metric_regresses_upwards():
    base = [row(seed=s, test_loss=0.30 + 0.01 * s) for s in SEEDS]
    worse = [row(seed=s, test_loss=0.30 + 0.01 * s + 0.08 + 0.002 * (s % 2)) for s in SEEDS]
    better = [row(seed=s, test_loss=0.30 + 0.01 * s - 0.08 - 0.002 * (s % 2)) for s in SEEDS]

    # Loss up by 0.08 (0.082 on the odd seeds) with max_drop 0.05 (loss units): a regression.
    up = compare(frame(base), frame(worse), metric="test_loss", max_drop=0.05)
    assert up.rows[0].delta == pytest.approx(0.081)
    assert up.rows[0].p_value == pytest.approx(ONE_SIGN_P)
    assert up.rows[0].verdict == "regression" and up.exit_code == 1
    # The same change downwards is an improvement, not a drop.
    down = compare(frame(base), frame(better), metric="test_loss", max_drop=0.05)
    assert down.rows[0].verdict == "improvement" and down.exit_code == 0
    # max_drop is in the metric's own units for losses: 0.5 loss units is far beyond a 0.08 rise.
    lenient = compare(frame(base), frame(worse), metric="test_loss", max_drop=0.5)
    assert lenient.rows[0].verdict == "no change"


def test_test_error_is_one_minus_accuracy_and_lower_is_better():
    result = compare(frame(base_rows()), frame(accs(CLEAR_DROP)), metric="test_error")
    (comparison,) = result.rows
    assert comparison.base_mean == pytest.approx(1 - np.mean(BASE_ACC))
    assert comparison.delta == pytest.approx(0.030)
    assert comparison.verdict == "regression"


def test_improvements_are_flagged_and_pass():
    result = compare(frame(base_rows()), frame(accs([-d for d in CLEAR_DROP])))
    assert result.rows[0].delta == pytest.approx(0.030) and result.rows[0].p_value == pytest.approx(ONE_SIGN_P)
    assert result.rows[0].verdict == "improvement" and result.exit_code == 0
    # A significant but tiny drop (0.1 pp, under max_drop) is neither a regression nor an improvement.
    tiny = compare(
        frame(base_rows()), frame(accs([-0.001, -0.0011, -0.0009, -0.001, -0.001, -0.0012, -0.0008, -0.001]))
    )
    assert tiny.rows[0].delta == pytest.approx(-0.001) and tiny.rows[0].p_value == pytest.approx(ONE_SIGN_P)
    assert tiny.rows[0].verdict == "no change" and tiny.exit_code == 0


# Drops (fractions) of 1.3 pp on average, two seeds a little better: with eight seeds of one sign the sign-flip
# p would be 2/256 and stay significant even times 3, so two small gains bring it into (0.05/3, 0.05).
HOLM_DROPS = [-0.01, -0.02, -0.03, 0.004, -0.015, -0.025, -0.008, 0.002]


def test_holm_correction_within_a_task_changes_the_verdict():
    # |sum| is reached by the observed signs, by either or both gains turned into drops, and by the mirror
    # images of those four: p = 8/256 = 0.03125 alone, so with max_drop 0 a regression.
    drops = HOLM_DROPS
    raw_p = exact_sign_flip_p(drops)
    assert raw_p == 8 / 256
    alone = compare(frame(base_rows()), frame(accs(drops)), max_drop=0.0)
    assert alone.rows[0].delta == pytest.approx(-0.01275) and alone.rows[0].ci_high < 0
    assert alone.rows[0].verdict == "regression" and alone.rows[0].p_value == pytest.approx(raw_p)

    # Three configurations of one task with the same drops: Holm multiplies the smallest p by 3, the
    # others follow monotonically, so each is 3 · 0.03125 = 0.094 > alpha. The CI (uncorrected) still lies
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


def test_three_seeds_cannot_make_a_regression_but_a_clear_drop_is_inconclusive_not_no_change():
    # 3 pp lower on each of three seeds: the sign-flip test's smallest p at n = 3 is 2/2³ = 0.25, so no
    # regression can be declared however clear the drop; but its whole interval lies beyond max_drop, so the
    # gate must flag it for a human rather than call it "no change".
    drops = CLEAR_DROP[:3]
    assert exact_sign_flip_p(drops) == 0.25
    result = compare(frame(base_rows()[:3]), frame(accs(drops)))
    (comparison,) = result.rows
    assert comparison.n_pairs == 3 and comparison.delta == pytest.approx(-0.030)
    assert comparison.p_value == pytest.approx(0.25)
    assert comparison.ci_high < -0.005  # beyond max_drop 0.5 pp
    assert comparison.verdict == "inconclusive" and result.exit_code == 0 and result.verdict == "no regression"


def test_accuracy_of_a_regression_task_is_not_compared():
    nan = float("nan")
    base = base_rows() + [row("housing", seed=s, test_acc=nan, train_acc=nan, val_acc=nan) for s in SEEDS]
    new = accs([0.0] * 8) + [row("housing", seed=s, test_acc=nan, train_acc=nan, val_acc=nan) for s in SEEDS]
    result = compare(frame(base), frame(new))
    assert [r.task for r in result.rows] == ["digits"]
    assert [r.task for r in compare(frame(base), frame(new), metric="test_loss").rows] == ["digits", "housing"]


def test_bad_arguments_are_user_errors():
    base, new = frame(base_rows()), frame(accs([0.0] * 8))
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


def test_the_t_test_may_not_make_verdicts(tmp_path, capsys):
    # Still in dropbench.stats for intervals, but its false-positive rate is not held at a few seeds.
    base, new = frame(base_rows()), frame(accs(CLEAR_DROP))
    with pytest.raises(UserError, match=r"unknown test 't'; choose one of sign-flip, wilcoxon"):
        compare(base, new, method="t")
    code, out, err = run_cli(tmp_path, capsys, base_rows(), accs(CLEAR_DROP), "--test", "t")
    assert code == 2 and out == ""
    assert err.startswith("dropbench: error:") and "'sign-flip'" in err and "'wilcoxon'" in err


def test_wilcoxon_method_is_used_for_the_p_value():
    # Mixed signs: the signed-rank test ranks the magnitudes, so its p differs from the sign-flip test's on
    # the same differences (10/256 against 8/256); the expected p enumerates the signs of the ranks.
    result = compare(frame(base_rows()), frame(accs(HOLM_DROPS)), method="wilcoxon", max_drop=0.0)
    assert result.method == "wilcoxon"
    expected = exact_sign_flip_p(signed_ranks(HOLM_DROPS))
    assert expected == 10 / 256 != exact_sign_flip_p(HOLM_DROPS)
    assert result.rows[0].p_value == pytest.approx(expected) and result.rows[0].verdict == "regression"
    sign_flip = compare(frame(base_rows()), frame(accs(HOLM_DROPS)), max_drop=0.0)
    assert sign_flip.method == "sign-flip" and sign_flip.rows[0].p_value == pytest.approx(8 / 256)

    # Five drops of one sign: the exact two-sided signed-rank p is 2/2⁵ = 0.0625, never below 0.05 with
    # five seeds, so the interval lies beyond the threshold yet the verdict cannot be a regression.
    five = compare(frame(base_rows()[:5]), frame(accs(CLEAR_DROP[:5])), method="wilcoxon")
    assert five.rows[0].n_pairs == 5 and five.rows[0].p_value == pytest.approx(0.0625)
    assert five.rows[0].verdict == "inconclusive"


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
    result = compare(frame(base), frame(accs([0.0] * 8, task="digits")))
    assert result.rows == [] and result.exit_code == 2 and result.verdict == "not comparable"

    code, out, err = run_cli(tmp_path, capsys, base, accs([0.0] * 8, task="digits"))
    assert code == 2
    assert err == (
        "dropbench: error: nothing to compare: BASE and NEW have no cell in common "
        "(BASE: 16 cells of wine; NEW: 8 cells of digits)\n"
    )
    assert "Traceback" not in out + err
    assert last_line(out).startswith("Verdict: not comparable — nothing to compare") and out.endswith("exit 2\n")


def test_every_new_cell_failed_is_not_comparable_and_exits_2(tmp_path, capsys):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    result = compare(frame(base), frame(failed(base)))
    # Before: two configurations of "no change" and exit 0, a gate passing on a run that produced nothing.
    assert [r.verdict for r in result.rows] == ["not comparable"] * 2
    assert [(r.n_pairs, r.n_matched, r.base_not_ok, r.new_not_ok) for r in result.rows] == [(0, 8, 0, 8)] * 2
    assert result.exit_code == 2
    assert result.reason == "nothing to compare: every matched cell of NEW failed or diverged (16 of 16)"

    code, out, err = run_cli(tmp_path, capsys, base, failed(base, status="diverged"))
    assert code == 2
    assert err == "dropbench: error: nothing to compare: every matched cell of NEW failed or diverged (16 of 16)\n"
    assert out.count("not comparable") >= 3  # both configurations listed, and the verdict


def test_the_reason_names_the_side_that_failed():
    base = base_rows()
    only_base = compare(frame(failed(base)), frame(accs([0.0] * 8)))
    assert only_base.reason == "nothing to compare: every matched cell of BASE failed or diverged (8 of 8)"
    both = compare(frame(failed(base)), frame(failed(base)))
    assert both.reason == "nothing to compare: every matched cell failed or diverged in both BASE and NEW (8 of 8)"
    assert [r.verdict for r in both.rows] == ["not comparable"]  # listed, though no cell has a figure
    # Seeds 0-1 failed in BASE, seeds 2-7 in NEW: each side has ok cells, but never the same seed.
    crossed = compare(frame(failed(base[:2]) + base[2:]), frame(accs([0.0] * 2) + failed(accs([0.0] * 8)[2:])))
    assert crossed.exit_code == 2
    assert crossed.reason == (
        "nothing to compare: no matched cell is ok on both sides (failed or diverged: BASE 2 of 8, NEW 6 of 8)"
    )


def test_accuracy_of_regression_tasks_only_is_not_comparable():
    nan = float("nan")
    housing = [row("housing", seed=s, test_acc=nan, train_acc=nan, val_acc=nan) for s in SEEDS]
    result = compare(frame(housing), frame(housing))
    assert result.exit_code == 2
    assert result.reason == (
        "nothing to compare: test_acc is not measured in any ok cell of the tasks BASE and NEW share (housing)"
    )
    assert compare(frame(housing), frame(housing), metric="test_loss").exit_code == 0


def test_a_configuration_that_failed_beside_comparable_ones_is_listed_and_the_others_decide(tmp_path, capsys):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    regressed = accs(CLEAR_DROP)
    result = compare(frame(base), frame(regressed + failed(base_rows(reg="l2", keep=0.5))))
    by_reg = {r.regularizer: r for r in result.rows}
    assert by_reg["l2"].verdict == "not comparable" and by_reg["l2"].new_not_ok == 8
    assert by_reg["none"].verdict == "regression" and result.exit_code == 1 and result.reason == ""
    # The failed configuration is no test: Holm's family is the one comparable configuration.
    assert by_reg["none"].p_value == by_reg["none"].p_raw and math.isnan(by_reg["l2"].p_value)

    fine = accs([0.0] * 8) + failed(base_rows(reg="l2", keep=0.5))
    code, out, err = run_cli(tmp_path, capsys, base, fine, "--format", "markdown")
    assert code == 0 and err == ""
    assert "| digits l2 keep 0.5 | – | – | – | – |  | 0 | 0/8 | not comparable |" in out
    assert last_line(out).startswith("**Verdict: no regression** — 0 of 2 configurations worse in test_acc beyond")
    assert last_line(out).endswith("; 1 no change, 1 not comparable; exit 0")


@pytest.mark.parametrize(
    ("deltas", "verdict", "code"),
    [(CLEAR_DROP, "regression", 1), ([0.0] * 8, "no regression", 0)],
)
def test_markdown_ends_with_one_verdict_line_naming_the_exit_code(tmp_path, capsys, deltas, verdict, code):
    exit_code, out, _ = run_cli(tmp_path, capsys, base_rows(), accs(deltas), "--format", "markdown")
    assert exit_code == code
    others = "" if code else "1 no change; "
    assert last_line(out) == (
        f"**Verdict: {verdict}** — {code} of 1 configuration worse in test_acc beyond 0.5 pp "
        f"(exact sign-flip test, Holm per task, α = 0.05); {others}exit {code}"
    )
    assert sum("Verdict" in text for text in out.splitlines()) == 1


def test_markdown_and_table_of_nothing_comparable_end_with_the_reason_and_exit_2(tmp_path, capsys):
    base = base_rows()
    code, out, _ = run_cli(tmp_path, capsys, base, failed(base), "--format", "markdown")
    assert code == 2
    assert last_line(out) == (
        "**Verdict: not comparable** — nothing to compare: every matched cell of NEW failed or "
        "diverged (8 of 8); exit 2"
    )
    code, out, _ = run_cli(tmp_path, capsys, base, accs([0.0] * 8, task="wine"), "--format", "markdown")
    assert code == 2 and "|---|" not in out  # no empty table when no cell matched


def test_json_carries_the_verdict_and_exit_code(tmp_path, capsys):
    base = base_rows() + base_rows(reg="l2", keep=0.5)
    new = accs(CLEAR_DROP) + failed(base_rows(reg="l2", keep=0.5))
    code, out, _ = run_cli(tmp_path, capsys, base, new, "--format", "json")
    payload = json.loads(out)
    assert code == 1 and payload["exit_code"] == 1 and payload["verdict"] == "regression"
    assert payload["reason"] is None and payload["summary"].endswith("exit 1")
    assert [r["verdict"] for r in payload["rows"]] == ["regression", "not comparable"]
    assert payload["rows"][1]["delta"] is None

    code, out, err = run_cli(tmp_path, capsys, base, failed(base), "--format", "json")
    payload = json.loads(out)  # still one valid document on stdout for a CI step to read
    assert code == 2 and payload["exit_code"] == 2 and payload["verdict"] == "not comparable"
    assert payload["reason"] == "nothing to compare: every matched cell of NEW failed or diverged (16 of 16)"
    assert err.startswith("dropbench: error: nothing to compare")


def test_table_ends_with_the_verdict_and_a_regression_still_exits_1(tmp_path, capsys):
    code, out, err = run_cli(tmp_path, capsys, base_rows(), accs(CLEAR_DROP))
    assert code == 1 and err == ""
    assert last_line(out).startswith("Verdict: regression — 1 of 1 configuration worse") and out.endswith("exit 1\n")


def test_long_missing_lists_are_cut_in_the_table_but_not_in_json(tmp_path, capsys):
    # Six configurations in BASE, one in NEW: 40 cells missing in NEW.
    base = [r for keep in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9) for r in base_rows(keep=keep)]
    code, out, _ = run_cli(tmp_path, capsys, base, base_rows(keep=0.5))
    assert code == 0 and out.count("missing in new:") == 21
    assert "missing in new: … and 20 more (--format json lists all)" in out
    code, out, _ = run_cli(tmp_path, capsys, base, base_rows(keep=0.5), "--format", "json")
    assert len(json.loads(out)["missing_in_new"]) == 40
