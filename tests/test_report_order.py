"""Reports list configurations in the suite's order, whatever order the cells finished in."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.report.compare import compare
from dropbench.report.order import suite_order
from dropbench.results import COLUMNS, read_results

REGULARIZERS = (("none", ""), ("max-norm", "3"), ("l2", "0.01"))  # as the suite lists them
LISTED = [{"name": name, "strength": strength} for name, strength in REGULARIZERS]
SUITE = {"suite": {"tasks": [{"name": "wine"}, {"name": "digits"}], "regularizers": LISTED}}  # the run's NAME.json


def rows(task, reg, strength, seeds=3):
    rng = np.random.default_rng(len(task) + len(reg))
    out = []
    for keep in (0.5, 1.0):
        for seed in range(seeds):
            acc = rng.uniform(0.8, 0.95)
            out.append(
                {
                    **dict.fromkeys(COLUMNS, ""),
                    "cell_id": f"{task}-{reg}-{keep}-{seed}",
                    "suite": "s",
                    "task": task,
                    "model": "mlp-8",
                    "regularizer": reg,
                    "strength": strength,
                    "keep_rate": keep,
                    "input_keep_rate": 1.0,
                    "dropout": "bernoulli",
                    "train_size": 0,
                    "seed": seed,
                    "max_epochs": 3,
                    "setup_id": "s1",
                    "status": "ok",
                    "val_acc": acc,
                    "val_loss": 1 - acc,
                    "test_acc": acc,
                    "test_loss": 1 - acc,
                    "train_acc": 1.0,
                    "train_loss": 0.0,
                    "gap_acc": 1.0 - acc,
                    "gap_loss": 1 - acc,
                }
            )
    return out


@pytest.fixture
def late_baseline(tmp_path):
    """As a pool may write them: digits before wine, and in each task l2 first, the baseline's cells after
    it, max-norm last."""
    path = tmp_path / "r.csv"
    finished = [
        r
        for task in ("digits", "wine")
        for reg, s in (("l2", "0.01"), ("none", ""), ("max-norm", "3"))
        for r in rows(task, reg, s)
    ]
    pd.DataFrame(finished, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def labels_of_first_table(markdown: str) -> list[str]:
    table = markdown.split("### ")[1]
    return [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines() if line.startswith("| ")][1:]


def test_without_metadata_the_baseline_comes_first_then_the_order_of_appearance(late_baseline, capsys):
    assert main(["report", str(late_baseline), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.index("### digits") < out.index("### wine")
    assert labels_of_first_table(out) == ["none", "l2 0.01", "max-norm 3"]


@pytest.mark.slow
def test_with_the_runs_metadata_every_format_follows_the_suite(late_baseline, capsys):
    late_baseline.with_suffix(".json").write_text(json.dumps(SUITE))
    assert suite_order([late_baseline]).regularizers == ("none ", "max-norm 3", "l2 0.01")
    expected = ["none", "max-norm 3", "l2 0.01"]

    assert main(["report", str(late_baseline), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.index("### wine") < out.index("### digits") and labels_of_first_table(out) == expected

    assert main(["report", str(late_baseline)]) == 0
    table = capsys.readouterr().out.split("digits")[0]
    assert table.index("│ none") < table.index("│ max-norm 3") < table.index("│ l2 0.01")

    assert main(["report", str(late_baseline), "--format", "csv"]) == 0
    wide = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert wide["task"].tolist() == ["wine"] * 3 + ["digits"] * 3 and wide["row"].tolist()[:3] == expected

    assert main(["report", str(late_baseline), "--format", "json"]) == 0
    configurations = json.loads(capsys.readouterr().out)["configurations"]
    assert [(c["regularizer"], c["keep_rate"]) for c in configurations[:6]] == [
        (reg, keep) for reg, _ in REGULARIZERS for keep in (0.5, 1.0)
    ]

    assert main(["report", str(late_baseline), "--paired", "--format", "csv"]) == 0
    tests = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert tests["task"].iloc[0] == "wine" and tests["regularizer"].tolist()[:5] == [
        "none",
        *["max-norm"] * 2,
        *["l2"] * 2,
    ]

    frame = read_results(late_baseline)
    result = compare(frame, frame, order=suite_order([late_baseline]))
    assert [(r.task, r.regularizer) for r in result.rows][:3] == [
        ("wine", "none"),
        ("wine", "none"),
        ("wine", "max-norm"),
    ]


def test_a_tuned_suites_methods_are_read_from_its_metadata(tmp_path):
    from dropbench.report.order import suite_order

    suite = {"tasks": [{"name": "wine"}], "regularizers": [], "tuning": {"methods": ["none", "l2", "l1", "dropout"]}}
    (tmp_path / "run.json").write_text(json.dumps({"suite": suite}))
    order = suite_order([tmp_path / "run.csv"])
    assert order.methods == ("none", "l2", "l1", "dropout") and order.tasks == ("wine",)
