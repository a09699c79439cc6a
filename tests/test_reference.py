import csv
import math
import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from dropbench.errors import UserError
from dropbench.report.reference import REFERENCE_COLUMNS, REFERENCES, is_mapped, load_reference, match_reference

HEADER = (
    "source,table,task,method,architecture,model,regularizer,keep_rate,input_keep_rate,dropout,"
    "test_error_pct,test_error_sd_pct,note"
)
# dropbench's regularizer names, with the one the paper needs that dropbench plans.
REGULARIZER_NAMES = {"none", "l1", "l2", "l1+l2", "max-norm", "early-stopping", "l2+kl-sparsity"}
# dropbench's model labels of the mapped rows: Table 2's three max-norm nets, Table 9's net, Table 10's MNIST net.
TABLE_2_MODELS = {
    "3 layers, 1024 units, ReLU": "mlp-1024-1024-1024",
    "2 layers, 4096 units, ReLU": "mlp-4096-4096",
    "2 layers, 8192 units, ReLU": "mlp-8192-8192",
}
TABLE_9_MODEL = "mlp-1024-1024-2048"
TABLE_10_MODEL = "mlp-1024-1024"
TABLE_9 = [
    ("L2", 1.62, "l2", 1.0, 1.0, ""),
    ("L2 + L1 applied towards the end of training", 1.60, "l1+l2", 1.0, 1.0, ""),
    ("L2 + KL-sparsity", 1.55, "l2+kl-sparsity", 1.0, 1.0, ""),
    ("Max-norm", 1.35, "max-norm", 1.0, 1.0, ""),
    ("Dropout + L2", 1.25, "l2", 0.5, 0.8, "bernoulli"),
    ("Dropout + Max-norm", 1.05, "max-norm", 0.5, 0.8, "bernoulli"),
]


def csv_text():
    return (resources.files("dropbench") / "references" / "srivastava2014.csv").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reference():
    return load_reference("srivastava2014")


def summary_row(
    task="mnist",
    model=TABLE_9_MODEL,
    reg="none",
    strength="",
    keep=1.0,
    input_keep=1.0,
    dropout="bernoulli",
    n=3,
    acc=0.985,
    ci=0.001,
    val=None,
):
    """One configuration of a summary; its mean validation accuracy is `val`, the test one's `acc` if not given."""
    return {
        "task": task,
        "model": model,
        "regularizer": reg,
        "strength": strength,
        "keep_rate": keep,
        "input_keep_rate": input_keep,
        "dropout": dropout,
        "n": n,
        "val_acc_mean": acc if val is None else val,
        "test_acc_mean": acc,
        "test_acc_ci": ci,
        "train_acc_mean": 0.999,
    }


def summary(*rows):
    return pd.DataFrame.from_records(list(rows))


def only(matched, table, method, architecture=None):
    rows = matched[(matched["table"] == table) & (matched["method"] == method)]
    if architecture is not None:
        rows = rows[rows["architecture"] == architecture]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# ---------------------------------------------------------------- the packaged CSV


def test_csv_parses_with_the_header_and_quoted_fields():
    lines = csv_text().splitlines()
    assert lines[0] == HEADER
    rows = list(csv.reader(lines))
    assert all(len(row) == len(REFERENCE_COLUMNS) for row in rows)  # commas inside fields are quoted
    frame = pd.read_csv(resources.files("dropbench") / "references" / "srivastava2014.csv")
    assert tuple(frame.columns) == REFERENCE_COLUMNS
    assert len(frame) == len(rows) - 1


def test_load_reference_types(reference):
    assert tuple(reference.columns) == REFERENCE_COLUMNS
    assert REFERENCES == ("srivastava2014",)
    for column in ("keep_rate", "input_keep_rate", "test_error_pct", "test_error_sd_pct"):
        assert pd.api.types.is_float_dtype(reference[column]), column
    assert pd.api.types.is_integer_dtype(reference["table"])
    for column in ("source", "task", "method", "architecture", "model", "regularizer", "dropout", "note"):
        assert all(isinstance(v, str) for v in reference[column]), column
    assert (reference["source"] == "srivastava2014").all()
    assert set(reference["task"]) <= {"mnist", "cifar10"}
    assert set(reference["table"]) == {2, 4, 9, 10}


def test_values_are_in_range(reference):
    regs = set(reference["regularizer"]) - {""}
    assert regs <= REGULARIZER_NAMES
    for column in ("keep_rate", "input_keep_rate"):
        rates = reference[column].dropna()
        assert ((rates > 0) & (rates <= 1)).all(), column
    assert reference["test_error_pct"].notna().all()
    assert ((reference["test_error_pct"] > 0) & (reference["test_error_pct"] < 100)).all()
    sds = reference["test_error_sd_pct"].dropna()
    assert ((sds > 0) & (sds < 100)).all()
    assert set(reference["dropout"]) <= {"", "bernoulli", "gaussian"}


def test_mapping_columns_are_filled_only_together(reference):
    mapped = is_mapped(reference)
    # A regularizer or a model without keep rates would be a half mapping that never matches.
    assert (reference.loc[~mapped, "regularizer"] == "").all()
    assert (reference.loc[~mapped, "model"] == "").all()
    # A mapped row names dropbench's model: without one, it could match nothing.
    assert (reference.loc[mapped, "model"] != "").all()
    # A mapped row that drops units names the kind of dropout.
    drops = mapped & ((reference["keep_rate"] < 1) | (reference["input_keep_rate"] < 1))
    assert (reference.loc[drops, "dropout"] != "").all()


def test_table_9_as_published(reference):
    table = reference[reference["table"] == 9]
    assert len(table) == 6
    got = list(
        zip(
            table["method"],
            table["test_error_pct"],
            table["regularizer"],
            table["keep_rate"],
            table["input_keep_rate"],
            table["dropout"],
        )
    )
    assert got == TABLE_9
    assert (table["architecture"] == "784-1024-1024-2048-10, ReLU").all()
    assert (table["model"] == TABLE_9_MODEL).all()
    lowest = table.loc[table["test_error_pct"].idxmin()]
    assert lowest["method"] == "Dropout + Max-norm"
    assert (table["test_error_pct"].diff().dropna() < 0).all()  # published from worst to best


def test_table_10_has_its_spread(reference):
    table = reference[reference["table"] == 10]
    got = {(r.task, r.dropout): (r.test_error_pct, r.test_error_sd_pct) for r in table.itertuples()}
    assert got == {
        ("mnist", "bernoulli"): (1.08, 0.04),
        ("mnist", "gaussian"): (0.95, 0.04),
        ("cifar10", "bernoulli"): (12.6, 0.1),
        ("cifar10", "gaussian"): (12.5, 0.1),
    }


def test_mapped_rows_name_dropbench_models(reference):
    mapped = reference[is_mapped(reference)]
    got = {(r.table, r.architecture): r.model for r in mapped.itertuples() if r.table == 2}
    assert got == {(2, architecture): model for architecture, model in TABLE_2_MODELS.items()}
    table_10 = mapped[mapped["table"] == 10]
    assert list(zip(table_10["task"], table_10["dropout"], table_10["model"])) == [
        ("mnist", "bernoulli", TABLE_10_MODEL),
        ("mnist", "gaussian", TABLE_10_MODEL),
    ]
    # Labels as dropbench writes them (ModelConfig.label): the kind, then each hidden width.
    assert all(re.fullmatch(r"mlp(-[1-9][0-9]*)+", model) for model in mapped["model"]), set(mapped["model"])


def test_unknown_reference_is_a_user_error():
    with pytest.raises(UserError, match="srivastava2014"):
        load_reference("hinton2012")


# ---------------------------------------------------------------- matching a summary


def test_match_fills_ours_for_matching_rows_and_leaves_the_rest(reference):
    dropout = {"reg": "max-norm", "strength": "3", "keep": 0.5, "input_keep": 0.8}
    ours = summary(
        summary_row(reg="l2", strength="0.0001", acc=0.9850, ci=0.0012),
        summary_row(**dropout, acc=0.9880, ci=0.0010),
        summary_row(**dropout, model="mlp-1024-1024-1024", acc=0.9870),
        summary_row(**dropout, model=TABLE_10_MODEL, acc=0.9860),
        summary_row(reg="none", acc=0.9800),  # no reference row is plain "none" at keep 1.0
        summary_row(task="cifar10", model="cnn", reg="none", keep=0.5, acc=0.80),
    )
    matched = match_reference(ours, reference)
    assert len(matched) == len(reference)
    assert list(matched.columns[: len(REFERENCE_COLUMNS)]) == list(REFERENCE_COLUMNS)

    l2 = only(matched, 9, "L2")
    assert l2["ours_test_error_pct"] == pytest.approx(1.50)
    assert l2["ours_ci_pct"] == pytest.approx(0.12)
    assert l2["ours_n"] == 3
    assert l2["ours_model"] == TABLE_9_MODEL
    assert l2["ours_strength"] == "0.0001"
    assert l2["difference_pct"] == pytest.approx(1.50 - 1.62)
    assert l2["match_note"] == ""

    # Each max-norm row at 0.5 / 0.8 gets the net of its own architecture.
    table_9 = only(matched, 9, "Dropout + Max-norm")
    table_2 = only(matched, 2, "Dropout NN + max-norm constraint", "3 layers, 1024 units, ReLU")
    for row, model, error in ((table_9, TABLE_9_MODEL, 1.20), (table_2, "mlp-1024-1024-1024", 1.30)):
        assert row["ours_model"] == model
        assert row["ours_test_error_pct"] == pytest.approx(error)
        assert row["difference_pct"] == pytest.approx(error - row["test_error_pct"])
        assert row["match_note"] == ""

    filled = matched["ours_test_error_pct"].notna()
    # Table 9's L2 and dropout + max-norm, Table 2's 3-layer max-norm row, and Table 10's MNIST Bernoulli row
    # (the paper states no regularizer there, so the max-norm configuration of its net at 0.5 / 0.8 is taken).
    assert filled.sum() == 4
    bernoulli = only(matched, 10, "Bernoulli dropout", "2 layers, 1024 units")
    assert bernoulli["ours_model"] == TABLE_10_MODEL
    assert bernoulli["ours_test_error_pct"] == pytest.approx(1.40)
    assert bernoulli["match_note"] == "the paper states no regularizer for this row; took max-norm"

    rest = matched[~filled]
    assert rest["ours_ci_pct"].isna().all() and rest["difference_pct"].isna().all()
    assert rest["ours_n"].isna().all()
    assert (rest["ours_model"] == "").all() and (rest["ours_strength"] == "").all()
    assert (rest["ours_configuration"] == "").all()
    assert only(matched, 9, "Dropout + L2")["match_note"] == "no matching configuration in these results"
    assert "no dropbench configuration" in only(matched, 2, "DBM + dropout finetuning")["match_note"]


def test_the_best_validation_accuracy_is_taken_and_the_note_says_so(reference):
    # The configuration with the best validation accuracy has the worst test accuracy of the three: it is
    # taken all the same, as the paper tuned on validation data; the test split only reports the choice.
    dropout = {"reg": "max-norm", "keep": 0.5, "input_keep": 0.8}
    ours = summary(
        summary_row(**dropout, strength="4", val=0.9850, acc=0.9900),
        summary_row(**dropout, strength="3", val=0.9900, acc=0.9860),
        summary_row(**dropout, strength="2", val=0.9870, acc=0.9880),
    )
    row = only(match_reference(ours, reference), 9, "Dropout + Max-norm")
    assert row["ours_model"] == TABLE_9_MODEL
    assert row["ours_strength"] == "3"
    assert row["ours_test_error_pct"] == pytest.approx(1.40)
    assert row["difference_pct"] == pytest.approx(1.40 - 1.05)
    assert row["match_note"] == (
        "best validation accuracy of 3 matching configurations; the others: "
        "max-norm 2 · mlp-1024-1024-2048 (val 98.70%), max-norm 4 · mlp-1024-1024-2048 (val 98.50%)"
    )


def test_a_candidate_of_another_architecture_is_never_matched(reference):
    dropout = {"reg": "max-norm", "strength": "3", "keep": 0.5, "input_keep": 0.8}
    ours = summary(
        # A smaller net with the best validation and test accuracy of all.
        summary_row(**dropout, model=TABLE_10_MODEL, val=0.9990, acc=0.9990),
        summary_row(**dropout, model="mlp-4096-4096", val=0.9900, acc=0.9890),
        summary_row(**dropout, model=TABLE_9_MODEL, val=0.9850, acc=0.9880),
    )
    matched = match_reference(ours, reference)
    table_9 = only(matched, 9, "Dropout + Max-norm")
    assert table_9["ours_model"] == TABLE_9_MODEL
    assert table_9["ours_test_error_pct"] == pytest.approx(1.20)
    assert table_9["match_note"] == ""  # the other nets are no candidates, so none is named
    wide = only(matched, 2, "Dropout NN + max-norm constraint", "2 layers, 4096 units, ReLU")
    assert wide["ours_model"] == "mlp-4096-4096"
    assert wide["ours_test_error_pct"] == pytest.approx(1.10)

    for architecture, model, present in (
        ("3 layers, 1024 units, ReLU", "mlp-1024-1024-1024", "mlp-1024-1024, mlp-1024-1024-2048, mlp-4096-4096"),
        ("2 layers, 8192 units, ReLU", "mlp-8192-8192", "mlp-1024-1024, mlp-1024-1024-2048, mlp-4096-4096"),
    ):
        row = only(matched, 2, "Dropout NN + max-norm constraint", architecture)
        assert math.isnan(row["ours_test_error_pct"]) and row["ours_model"] == ""
        assert row["match_note"] == (
            f"no matching configuration in these results of the paper's architecture ({model}; "
            f"these results have {present})"
        )
    # Table 10's MNIST Bernoulli row takes any regularizer, never another net.
    bernoulli = only(matched, 10, "Bernoulli dropout", "2 layers, 1024 units")
    assert bernoulli["ours_model"] == TABLE_10_MODEL
    assert bernoulli["ours_test_error_pct"] == pytest.approx(0.10)
    # Where no candidate agrees on anything but the net, the note has no architectures to name.
    assert only(matched, 9, "Dropout + L2")["match_note"] == "no matching configuration in these results"


def test_ours_configuration_names_the_chosen_configuration(reference):
    ours = summary(
        summary_row(reg="l2", strength="0.0001"),
        summary_row(reg="max-norm", strength="3", keep=0.5, input_keep=0.8, val=0.990, acc=0.986),
        summary_row(reg="max-norm", strength="4", keep=0.5, input_keep=0.8, val=0.985, acc=0.990),
        summary_row(
            model=TABLE_10_MODEL,
            reg="l2",
            strength="0.0001",
            keep=0.5,
            input_keep=0.8,
            dropout="gaussian",
            val=0.986,
            acc=0.992,
        ),
        summary_row(
            model=TABLE_10_MODEL,
            reg="max-norm",
            strength="3",
            keep=0.5,
            input_keep=0.8,
            dropout="gaussian",
            val=0.989,
            acc=0.988,
        ),
    )
    matched = match_reference(ours, reference)
    assert only(matched, 9, "L2")["ours_configuration"] == "l2 0.0001 keep 1.0 · in 1 · mlp-1024-1024-2048"
    table_9 = only(matched, 9, "Dropout + Max-norm")
    assert table_9["ours_configuration"] == "max-norm 3 keep 0.5 · in 0.8 · mlp-1024-1024-2048"
    assert table_9["ours_strength"] == "3"
    gaussian = only(matched, 10, "Gaussian dropout", "2 layers, 1024 units")
    assert gaussian["ours_configuration"] == "max-norm 3 keep 0.5 · in 0.8 · gaussian · mlp-1024-1024"
    assert gaussian["ours_test_error_pct"] == pytest.approx(1.20)
    assert gaussian["match_note"] == (
        "the paper states no regularizer for this row; took max-norm; best validation accuracy of 2 matching "
        "configurations; the others: l2 0.0001 · mlp-1024-1024 (val 98.60%)"
    )
    unmatched = matched[matched["ours_test_error_pct"].isna()]
    assert len(unmatched) > 0 and (unmatched["ours_configuration"] == "").all()


def _candidates_for_every_mapped_row(reference, rng):
    """Three strengths of each mapped row's configuration (of two regularizers where the paper states none),
    with validation and test accuracies drawn independently; each strength label names one configuration."""
    rows = []
    for ref in reference[is_mapped(reference)].itertuples():
        for reg in [ref.regularizer] if ref.regularizer else ["l2", "max-norm"]:
            config = {
                "task": ref.task,
                "model": ref.model,
                "reg": reg,
                "keep": ref.keep_rate,
                "input_keep": ref.input_keep_rate,
                "dropout": ref.dropout or "bernoulli",
            }
            for _ in range(3):
                val, acc, ci = rng.uniform(0.97, 0.99), rng.uniform(0.97, 0.99), rng.uniform(0.0005, 0.002)
                rows.append(summary_row(**config, strength=str(len(rows)), val=val, acc=acc, ci=ci))
    return summary(*rows)


def test_shuffled_test_columns_change_no_choice(reference):
    rng = np.random.default_rng(20140601)
    ours = _candidates_for_every_mapped_row(reference, rng)
    shuffled = ours.copy()
    order = rng.permutation(len(ours))
    for column in ("test_acc_mean", "test_acc_ci"):
        shuffled[column] = ours[column].to_numpy()[order]
    assert not np.array_equal(shuffled["test_acc_mean"], ours["test_acc_mean"])

    before, after = match_reference(ours, reference), match_reference(shuffled, reference)
    mapped = is_mapped(reference)
    assert before.loc[mapped, "ours_test_error_pct"].notna().all()
    chosen = ["ours_configuration", "ours_model", "ours_strength", "ours_n", "match_note"]
    pd.testing.assert_frame_equal(before[chosen], after[chosen])
    # Only the reported test numbers change: they are those of the same configuration, shuffled.
    assert not np.allclose(before.loc[mapped, "ours_test_error_pct"], after.loc[mapped, "ours_test_error_pct"])
    for frame, matched in ((ours, before), (shuffled, after)):
        for row in matched[mapped].itertuples():
            candidate = frame[frame["strength"] == row.ours_strength]
            assert len(candidate) == 1
            assert row.ours_test_error_pct == pytest.approx(100 * (1 - candidate["test_acc_mean"].iloc[0]))
            assert row.ours_ci_pct == pytest.approx(100 * candidate["test_acc_ci"].iloc[0])

    # The draw is one where choosing on the test split would have chosen otherwise, in both orders.
    for frame, matched in ((ours, before), (shuffled, after)):
        on_test = match_reference(frame.assign(val_acc_mean=frame["test_acc_mean"]), reference)
        assert (on_test.loc[mapped, "ours_configuration"] != matched.loc[mapped, "ours_configuration"]).any()


def test_keep_rates_match_within_tolerance_only(reference):
    near = summary(summary_row(reg="l2", keep=1.0 - 1e-12, input_keep=1.0 + 1e-12))
    assert only(match_reference(near, reference), 9, "L2")["ours_test_error_pct"] == pytest.approx(1.5)
    far = summary(summary_row(reg="l2", keep=1.0 - 1e-6))
    assert math.isnan(only(match_reference(far, reference), 9, "L2")["ours_test_error_pct"])


def test_dropout_kind_must_agree_when_units_are_dropped(reference):
    gaussian_l2 = {"reg": "l2", "keep": 0.5, "input_keep": 0.8, "dropout": "gaussian"}
    ours = summary(summary_row(**gaussian_l2), summary_row(**gaussian_l2, model=TABLE_10_MODEL))
    matched = match_reference(ours, reference)
    # Table 9's net at Table 9's rates, but Gaussian where the row is Bernoulli.
    dropout_l2 = only(matched, 9, "Dropout + L2")
    assert math.isnan(dropout_l2["ours_test_error_pct"])
    assert dropout_l2["match_note"] == "no matching configuration in these results"
    gaussian = only(matched, 10, "Gaussian dropout", "2 layers, 1024 units")
    assert gaussian["ours_test_error_pct"] == pytest.approx(1.5)
    assert gaussian["ours_model"] == TABLE_10_MODEL
    assert math.isnan(only(matched, 10, "Bernoulli dropout", "2 layers, 1024 units")["ours_test_error_pct"])


def test_task_must_agree(reference):
    ours = summary(summary_row(task="fashion-mnist", reg="l2"))
    assert match_reference(ours, reference)["ours_test_error_pct"].isna().all()


def test_configurations_without_a_successful_cell_are_skipped(reference):
    # The failed configuration carries the best validation figure, and still is not taken.
    failed = summary_row(reg="max-norm", strength="4", n=0, val=0.999, acc=math.nan, ci=math.nan)
    row = only(match_reference(summary(failed), reference), 9, "Max-norm")
    assert math.isnan(row["ours_test_error_pct"])
    assert "none with a successful cell" in row["match_note"]
    ok = summary_row(reg="max-norm", strength="3", acc=0.98)
    row = only(match_reference(summary(failed, ok), reference), 9, "Max-norm")
    assert row["ours_strength"] == "3" and row["match_note"] == ""
    assert row["ours_test_error_pct"] == pytest.approx(2.0)


def test_unmapped_rows_never_match(reference):
    # Every keep-rate combination an unmapped row could plausibly be confused with, on every net the reference
    # names.
    models = sorted(set(reference["model"]) - {""})
    ours = summary(
        *[
            summary_row(task=t, model=m, reg=r, keep=k, input_keep=i, dropout=d)
            for t, ms in (("mnist", models), ("cifar10", ["cnn"]))
            for m in ms
            for r in ("none", "l2", "max-norm")
            for k in (0.5, 1.0)
            for i in (0.8, 1.0)
            for d in ("bernoulli", "gaussian")
        ]
    )
    matched = match_reference(ours, reference)
    unmapped = matched[~is_mapped(reference)]
    assert len(unmapped) > 0
    assert unmapped["ours_test_error_pct"].isna().all()
    assert is_mapped(reference)[matched["ours_test_error_pct"].notna()].all()
    assert matched["ours_test_error_pct"].notna().sum() > 0


def test_an_empty_summary_matches_nothing(reference):
    matched = match_reference(pd.DataFrame(), reference)
    assert len(matched) == len(reference)
    assert matched["ours_test_error_pct"].isna().all()
    assert (matched["ours_configuration"] == "").all()


def test_a_summary_without_its_columns_is_a_user_error(reference):
    with pytest.raises(UserError, match="test_acc_mean"):
        match_reference(pd.DataFrame({"task": ["mnist"]}), reference)
    columns = summary(summary_row()).drop(columns="val_acc_mean")
    with pytest.raises(UserError, match="val_acc_mean"):
        match_reference(columns, reference)


def test_a_run_on_a_subset_or_with_per_layer_rates_is_not_set_beside_the_papers_row(reference):
    """The paper trained every row on the whole training split, one keep rate for all hidden layers."""
    subset = {**summary_row(reg="l2", strength="0.0001", acc=0.99), "train_size": 20000, "layer_keep_rates": ""}
    layered = {**summary_row(reg="l2", strength="0.0001", acc=0.99), "train_size": 0, "layer_keep_rates": "0.8/0.2"}
    for candidate in (subset, layered):
        matched = match_reference(summary(candidate), reference)
        row = only(matched, 9, "L2")
        assert pd.isna(row["ours_test_error_pct"]) and row["ours_configuration"] == ""
    note = only(match_reference(summary(subset), reference), 9, "L2")["match_note"]
    assert "on the whole training split (these results trained on 20000 images)" in note
    whole = {**subset, "train_size": 0}
    assert only(match_reference(summary(whole), reference), 9, "L2")["ours_test_error_pct"] == pytest.approx(1.0)
