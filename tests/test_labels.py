"""One vocabulary names a configuration (tables, --best, compare, reference, plots) and a cell (logs, lists)."""

import dataclasses

from conftest import make_cell

from dropbench.report.labels import cell_label, config_label, varying

ROW = {
    "task": "digits",
    "model": "mlp-8",
    "regularizer": "l2",
    "strength": "0.0001",
    "keep_rate": 0.5,
    "layer_keep_rates": "",
    "input_keep_rate": 0.8,
    "dropout": "gaussian",
    "train_size": 0,
    "seed": 2,
    "max_epochs": 3,
    "setup": "abc",
}


def test_a_configuration_names_the_regularizer_then_what_sets_it_apart():
    assert config_label(ROW) == "l2 0.0001"
    assert config_label({**ROW, "regularizer": "none", "strength": float("nan")}) == "none"
    every = ("train_size", "input_keep_rate", "dropout", "model", "max_epochs", "setup")
    assert config_label(ROW, every) == "l2 0.0001 · n=all · in 0.8 · gaussian · mlp-8 · epochs 3"
    assert config_label(ROW, ["setup"]) == "l2 0.0001 · setup abc"  # no column says which setting differs
    assert config_label(ROW, ["input_keep_rate"], task=True, keep=True) == "digits l2 0.0001 keep 0.5 · in 0.8"
    assert config_label({**ROW, "keep_rate": 1.0}, keep=True) == "l2 0.0001 keep 1.0"  # as the columns are headed


def test_a_cell_names_what_is_not_the_default_and_its_seed():
    assert cell_label(ROW) == "digits l2(0.0001) keep=0.5 in=0.8 gaussian seed=2"
    plain = {**ROW, "input_keep_rate": 1.0, "dropout": "bernoulli", "train_size": float("nan")}
    assert cell_label(plain) == "digits l2(0.0001) keep=0.5 seed=2"
    assert cell_label(plain, {"model", "train_size"}) == "digits l2(0.0001) keep=0.5 n=all mlp-8 seed=2"


def test_cell_describe_speaks_the_same_vocabulary():
    cell = make_cell("digits", reg="l2", keep=0.5, seed=2, input_keep=0.8, strengths={"l2": 1e-4})
    cell = dataclasses.replace(cell, dropout="gaussian", train_size=100)
    assert cell.describe() == "digits l2(0.0001) keep=0.5 in=0.8 gaussian n=100 seed=2"
    layers = make_cell("digits", keep=(0.8, 0.5), hidden=(8, 8))
    assert layers.describe() == "digits none keep=0.8/0.5 seed=0"


def test_varying_names_the_columns_with_more_than_one_value():
    import pandas as pd

    rows = pd.DataFrame([ROW, {**ROW, "model": "mlp-16", "keep_rate": 1.0}])
    assert varying(rows) == {"model"}  # the keep rate has a column of its own in the tables
