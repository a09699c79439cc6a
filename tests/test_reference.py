import csv
import math
from importlib import resources

import pandas as pd
import pytest

from dropbench.errors import UserError
from dropbench.reference import REFERENCE_COLUMNS, REFERENCES, is_mapped, load_reference, match_reference

HEADER = (
    "source,table,task,method,architecture,regularizer,keep_rate,input_keep_rate,dropout,"
    "test_error_pct,test_error_sd_pct,note"
)
# dropbench's regularizer names, with the one the paper needs that dropbench plans.
REGULARIZER_NAMES = {"none", "l1", "l2", "l1+l2", "max-norm", "early-stopping", "l2+kl-sparsity"}
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


def summary_row(task="mnist", model="mlp-1024x2", reg="none", strength="", keep=1.0, input_keep=1.0,
                dropout="bernoulli", n=3, acc=0.985, ci=0.001):  # fmt: skip
    return {"task": task, "model": model, "regularizer": reg, "strength": strength, "keep_rate": keep,
            "input_keep_rate": input_keep, "dropout": dropout, "n": n, "test_acc_mean": acc, "test_acc_ci": ci,
            "train_acc_mean": 0.999}  # fmt: skip


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
    for column in ("source", "task", "method", "architecture", "regularizer", "dropout", "note"):
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
    # A regularizer without keep rates would be a half mapping that never matches.
    assert (reference.loc[~mapped, "regularizer"] == "").all()
    # A mapped row that drops units names the kind of dropout.
    drops = mapped & ((reference["keep_rate"] < 1) | (reference["input_keep_rate"] < 1))
    assert (reference.loc[drops, "dropout"] != "").all()


def test_table_9_as_published(reference):
    table = reference[reference["table"] == 9]
    assert len(table) == 6
    got = list(zip(table["method"], table["test_error_pct"], table["regularizer"], table["keep_rate"],
                   table["input_keep_rate"], table["dropout"]))  # fmt: skip
    assert got == TABLE_9
    assert (table["architecture"] == "784-1024-1024-2048-10, ReLU").all()
    lowest = table.loc[table["test_error_pct"].idxmin()]
    assert lowest["method"] == "Dropout + Max-norm"
    assert (table["test_error_pct"].diff().dropna() < 0).all()  # published from worst to best


def test_table_10_has_its_spread(reference):
    table = reference[reference["table"] == 10]
    got = {(r.task, r.dropout): (r.test_error_pct, r.test_error_sd_pct) for r in table.itertuples()}
    assert got == {("mnist", "bernoulli"): (1.08, 0.04), ("mnist", "gaussian"): (0.95, 0.04),
                   ("cifar10", "bernoulli"): (12.6, 0.1), ("cifar10", "gaussian"): (12.5, 0.1)}  # fmt: skip


def test_unknown_reference_is_a_user_error():
    with pytest.raises(UserError, match="srivastava2014"):
        load_reference("hinton2012")


# ---------------------------------------------------------------- matching a summary


def test_match_fills_ours_for_matching_rows_and_leaves_the_rest(reference):
    ours = summary(
        summary_row(reg="l2", strength="0.0001", acc=0.9850, ci=0.0012),
        summary_row(reg="max-norm", strength="3", keep=0.5, input_keep=0.8, acc=0.9880, ci=0.0010),
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
    assert l2["ours_model"] == "mlp-1024x2"
    assert l2["ours_strength"] == "0.0001"
    assert l2["difference_pct"] == pytest.approx(1.50 - 1.62)
    assert l2["match_note"] == ""

    for row in (only(matched, 9, "Dropout + Max-norm"), only(matched, 2, "Dropout NN + max-norm constraint",
                                                               "3 layers, 1024 units, ReLU")):  # fmt: skip
        assert row["ours_test_error_pct"] == pytest.approx(1.20)
        assert row["difference_pct"] == pytest.approx(1.20 - row["test_error_pct"])

    filled = matched["ours_test_error_pct"].notna()
    # Table 9's L2 and dropout + max-norm, Table 2's three max-norm rows, and Table 10's MNIST Bernoulli row
    # (the paper states no regularizer there, so the max-norm configuration at 0.5 / 0.8 is taken).
    assert filled.sum() == 6
    bernoulli = only(matched, 10, "Bernoulli dropout", "2 layers, 1024 units")
    assert bernoulli["ours_test_error_pct"] == pytest.approx(1.20)
    assert "took max-norm" in bernoulli["match_note"]

    rest = matched[~filled]
    assert rest["ours_ci_pct"].isna().all() and rest["difference_pct"].isna().all()
    assert rest["ours_n"].isna().all()
    assert (rest["ours_model"] == "").all()
    assert only(matched, 9, "Dropout + L2")["match_note"] == "no matching configuration in these results"
    assert "no dropbench configuration" in only(matched, 2, "DBM + dropout finetuning")["match_note"]


def test_the_lower_error_model_is_taken_and_the_note_says_so(reference):
    ours = summary(
        summary_row(model="mlp-512x2", reg="max-norm", strength="3", keep=0.5, input_keep=0.8, acc=0.9860),
        summary_row(model="mlp-1024x2", reg="max-norm", strength="3", keep=0.5, input_keep=0.8, acc=0.9890),
        summary_row(model="mlp-2048x2", reg="max-norm", strength="4", keep=0.5, input_keep=0.8, acc=0.9870),
    )
    row = only(match_reference(ours, reference), 9, "Dropout + Max-norm")
    assert row["ours_model"] == "mlp-1024x2"
    assert row["ours_test_error_pct"] == pytest.approx(1.10)
    assert row["difference_pct"] == pytest.approx(0.05)
    assert row["match_note"].startswith("lowest test error of 3 matching configurations")
    assert "mlp-2048x2 4 1.30%" in row["match_note"] and "mlp-512x2 3 1.40%" in row["match_note"]


def test_keep_rates_match_within_tolerance_only(reference):
    near = summary(summary_row(reg="l2", keep=1.0 - 1e-12, input_keep=1.0 + 1e-12))
    assert only(match_reference(near, reference), 9, "L2")["ours_test_error_pct"] == pytest.approx(1.5)
    far = summary(summary_row(reg="l2", keep=1.0 - 1e-6))
    assert math.isnan(only(match_reference(far, reference), 9, "L2")["ours_test_error_pct"])


def test_dropout_kind_must_agree_when_units_are_dropped(reference):
    ours = summary(summary_row(reg="l2", keep=0.5, input_keep=0.8, dropout="gaussian"))
    matched = match_reference(ours, reference)
    assert math.isnan(only(matched, 9, "Dropout + L2")["ours_test_error_pct"])
    gaussian = only(matched, 10, "Gaussian dropout", "2 layers, 1024 units")
    assert gaussian["ours_test_error_pct"] == pytest.approx(1.5)
    assert math.isnan(only(matched, 10, "Bernoulli dropout", "2 layers, 1024 units")["ours_test_error_pct"])


def test_task_must_agree(reference):
    ours = summary(summary_row(task="fashion-mnist", reg="l2"))
    assert match_reference(ours, reference)["ours_test_error_pct"].isna().all()


def test_configurations_without_a_successful_cell_are_skipped(reference):
    failed = summary_row(model="mlp-4096x2", reg="max-norm", keep=1.0, n=0, acc=math.nan, ci=math.nan)
    row = only(match_reference(summary(failed), reference), 9, "Max-norm")
    assert math.isnan(row["ours_test_error_pct"])
    assert "none with a successful cell" in row["match_note"]
    ok = summary_row(model="mlp-1024x2", reg="max-norm", keep=1.0, acc=0.98)
    row = only(match_reference(summary(failed, ok), reference), 9, "Max-norm")
    assert row["ours_model"] == "mlp-1024x2" and row["match_note"] == ""


def test_unmapped_rows_never_match(reference):
    # Every keep-rate combination an unmapped row could plausibly be confused with.
    ours = summary(*[summary_row(task=t, model=m, reg=r, keep=k, input_keep=i, dropout=d)
                     for t, m in (("mnist", "mlp"), ("cifar10", "cnn")) for r in ("none", "l2", "max-norm")
                     for k in (0.5, 1.0) for i in (0.8, 1.0) for d in ("bernoulli", "gaussian")])  # fmt: skip
    matched = match_reference(ours, reference)
    unmapped = matched[~is_mapped(reference)]
    assert len(unmapped) > 0
    assert unmapped["ours_test_error_pct"].isna().all()
    assert is_mapped(reference)[matched["ours_test_error_pct"].notna()].all()


def test_an_empty_summary_matches_nothing(reference):
    matched = match_reference(pd.DataFrame(), reference)
    assert len(matched) == len(reference)
    assert matched["ours_test_error_pct"].isna().all()


def test_a_summary_without_its_columns_is_a_user_error(reference):
    with pytest.raises(UserError, match="test_acc_mean"):
        match_reference(pd.DataFrame({"task": ["mnist"]}), reference)
