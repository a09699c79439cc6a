"""Schema 7 wrote ids behind a letter: files of schemas 4 to 6 still resume, merge, report and compare, cell for cell.

tests/data/schema6.* were written by dropbench at schema 6 (commit 530e7ca: `run --task wine --reg none --keep
0.5,1.0 --seeds 2 --epochs 2`); tests/data/schema4.* are four rows of results/quick as schema 4 wrote them.
"""

import csv
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dropbench.cli import main
from dropbench.ids import upgrade_id
from dropbench.report.compare import compare
from dropbench.results import COLUMNS, SCHEMA_VERSION, read_epochs, read_results

DATA = Path(__file__).resolve().parent / "data"
SCHEMA6_RUN = ["--task", "wine", "--reg", "none", "--keep", "0.5,1.0", "--seeds", "2", "--epochs", "2", "--jobs", "1"]
SCHEMA4_RUN = ["--task", "breast-cancer", "--reg", "none", "--keep", "0.5,1.0", "--seeds", "2", "--jobs", "1"]
FIGURES = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "gap_acc", "gap_loss")


def copied(name: str, folder: Path) -> Path:
    for suffix in (".csv", ".epochs.csv", ".json"):
        shutil.copy(DATA / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.csv"


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def run(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("name", "grid"), [("schema6", SCHEMA6_RUN), ("schema4", SCHEMA4_RUN)])
def test_a_file_of_an_earlier_schema_resumes_without_training_and_is_rewritten_in_this_one(
    tmp_path, capsys, name, grid
):
    out = copied(name, tmp_path)
    before = rows(out)
    code, stdout, err = run(capsys, "run", *grid, "--out", out)
    assert code == 0, err
    assert "nothing to run (4 already done)" in stdout + err
    after = rows(out)
    assert list(after[0]) == list(COLUMNS)
    assert [r["cell_id"] for r in after] == ["c" + r["cell_id"] for r in before]
    assert all(r["setup_id"].startswith("s") and r["schema_version"] == str(SCHEMA_VERSION) for r in after)
    for old, new in zip(before, after):
        assert [old[f] for f in FIGURES] == [new[f] for f in FIGURES]  # byte for byte
    assert {r["cell_id"] for r in rows(out.with_name(f"{name}.epochs.csv"))} == {r["cell_id"] for r in after}
    assert (tmp_path / f"{name}.json").read_text().count('"upgraded_from"') == 1


def test_a_dry_run_reads_an_earlier_schema_without_writing(tmp_path, capsys):
    out = copied("schema6", tmp_path)
    before = out.read_bytes()
    code, stdout, _ = run(capsys, "run", *SCHEMA6_RUN, "--out", out, "--dry-run")
    assert code == 0 and out.read_bytes() == before
    assert "│ all  │     4 │    4 │      0 │" in stdout


def test_reports_and_compare_read_old_ids_by_the_rule(tmp_path, capsys):
    old = DATA / "schema6.csv"
    migrated = copied("schema6", tmp_path)
    assert run(capsys, "migrate", migrated)[0] == 0
    frame = read_results(old)
    assert frame["cell_id"].tolist() == read_results(migrated)["cell_id"].tolist()
    assert frame["cell_id"].str.fullmatch(r"c[0-9a-f]{12}").all() and frame["setup_id"].str.startswith("s").all()
    assert set(read_epochs(old)["cell_id"]) == set(frame["cell_id"])
    result = compare(frame, read_results(migrated), metric="test_acc")
    assert not result.missing_in_new and not result.missing_in_base and result.exit_code == 0


def test_migrate_rewrites_in_place_once_and_keeps_every_figure(tmp_path, capsys):
    out = copied("schema4", tmp_path)
    before = read_results(out)
    code, stdout, _ = run(capsys, "migrate", out)
    assert (code, stdout) == (0, f"{out}: schema 4 -> {SCHEMA_VERSION}\n")
    after = read_results(out)
    same = [c for c in before.columns if c != "schema_version"]
    pd.testing.assert_frame_equal(after[same], before[same])
    assert run(capsys, "migrate", out)[1] == f"{out}: already schema {SCHEMA_VERSION}\n"


def test_migrate_takes_a_glob_and_skips_the_sidecars(tmp_path, capsys):
    out = copied("schema6", tmp_path)
    code, stdout, err = run(capsys, "migrate", out, out.with_name("schema6.epochs.csv"))
    assert code == 0 and stdout.count("->") == 1 and "skipped, the per-epoch sidecar" in err


def older(folder: Path, version: int, gone: tuple[str, ...]) -> Path:
    """tests/data/schema6.csv as an earlier schema wrote it: without the columns `gone` and the tuning columns."""
    text = (DATA / "schema6.csv").read_text().splitlines()
    header = text[0].split(",")
    dropped = [header.index(c) for c in (*gone, "method", "phase", "trial")]
    lines = []
    for number, line in enumerate(text):
        cells = [c for i, c in enumerate(line.split(",")) if i not in dropped]
        if number:
            cells[-1] = str(version)
        lines.append(",".join(cells))
    path = folder / "old.csv"
    path.write_text("\n".join(lines) + "\n")
    shutil.copy(DATA / "schema6.epochs.csv", folder / "old.epochs.csv")
    return path


SCHEMA3_LACKS = ("momentum", "precision", "setup_id")


def test_a_schema_3_file_resumes_in_a_run_of_its_suite_which_gives_what_it_lacks(tmp_path, capsys):
    old = older(tmp_path, 3, SCHEMA3_LACKS)
    code, stdout, err = run(capsys, "run", *SCHEMA6_RUN, "--out", old)
    assert code == 0 and "nothing to run (4 already done)" in stdout + err, err
    expected = {"c" + r["cell_id"]: r for r in rows(DATA / "schema6.csv")}
    for row in rows(old):
        written = expected[row["cell_id"]]
        assert (row["momentum"], row["precision"], row["setup_id"]) == ("0.9", "fp32", "s" + written["setup_id"])
        assert [row[f] for f in FIGURES] == [written[f] for f in FIGURES]


def test_migrate_takes_a_schema_3_file_with_the_suite_it_came_from(tmp_path, capsys):
    old = older(tmp_path, 3, SCHEMA3_LACKS)
    before = old.read_bytes()
    code, _, err = run(capsys, "migrate", old)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{old}: results of dropbench schema 3 (no momentum, precision, setup_id column)" in err
    assert f"dropbench migrate {old} --suite SUITE" in err
    code, _, err = run(capsys, "migrate", old, "--suite", "quick")  # wine's cells, but 30 epochs and 128 units there
    assert code == 2 and "is not a cell of suite 'quick'" in err and len(err.strip().splitlines()) == 1
    assert old.read_bytes() == before
    suite = tmp_path / "it.toml"
    suite.write_text(IT_SUITE)
    assert run(capsys, "migrate", old, "--suite", suite)[:2] == (0, f"{old}: schema 3 -> {SCHEMA_VERSION}\n")
    assert all(r["setup_id"].startswith("s") for r in rows(old))


# The suite tests/data/schema6.csv was run from: quick's wine at 2 epochs, none, keep 0.5 and 1, 2 seeds.
IT_SUITE = """
name = "quick"
seeds = 2
keep_rates = [0.5, 1.0]
regularizers = ["none"]
epochs = 2
batch_size = 64
model = { kind = "mlp", hidden = [128, 128] }
optimizer = { name = "sgd", lr = 0.01, momentum = 0.9 }

[[task]]
name = "wine"
"""


def test_merge_refuses_a_schema_3_file_in_one_line_saying_how_to_migrate_it(tmp_path, capsys):
    old = older(tmp_path, 3, SCHEMA3_LACKS)
    code, _, err = run(capsys, "merge", old, "-o", tmp_path / "all.csv")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--suite SUITE" in err
    assert not (tmp_path / "all.csv").exists()


@pytest.mark.parametrize("command", ["merge", "migrate", "run"])
def test_a_schema_2_file_is_refused_in_one_line_naming_it_and_the_versions(tmp_path, capsys, command):
    old = older(tmp_path, 2, (*SCHEMA3_LACKS, "layer_keep_rates", "train_size", "test_ece"))
    before = old.read_bytes()
    args = {
        "merge": ["merge", old, "-o", tmp_path / "all.csv"],
        "migrate": ["migrate", old, "--suite", "quick"],
        "run": ["run", *SCHEMA6_RUN, "--out", old],
    }[command]
    code, _, err = run(capsys, *args)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{old}: results of dropbench schema 2 (no layer_keep_rates, train_size, momentum, precision ..." in err
    assert f"needs schema 3 to {SCHEMA_VERSION} (run --fresh sets it aside" in err
    assert old.read_bytes() == before and not (tmp_path / "all.csv").exists()
    assert command == "merge" or main(["report", str(old), "--format", "csv"]) == 0  # reports still read it


def test_merge_takes_an_earlier_schema_and_writes_this_one(tmp_path, capsys):
    old = copied("schema6", tmp_path / "")
    new = tmp_path / "new" / "schema6.csv"
    new.parent.mkdir()
    copied("schema6", new.parent)
    assert run(capsys, "migrate", new)[0] == 0
    code, stdout, _ = run(capsys, "merge", old, new, "-o", tmp_path / "all.csv")
    assert code == 0 and "4 cells (4 duplicates dropped) from 2 files" in stdout
    merged = rows(tmp_path / "all.csv")
    assert all(r["cell_id"].startswith("c") and r["schema_version"] == str(SCHEMA_VERSION) for r in merged)
    assert {r["cell_id"] for r in rows(tmp_path / "all.epochs.csv")} == {r["cell_id"] for r in merged}


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("cell_id,epoch,fit_loss,val_loss,val_acc\nc0,1,0.5,0.5,0.5\n", "per-epoch curves"),
        ("name,score\nx,1\n", "not a dropbench results file"),
    ],
)
def test_merge_names_what_a_file_is_when_it_is_not_results(tmp_path, capsys, content, what):
    (tmp_path / "odd.csv").write_text(content)
    code, _, err = run(capsys, "merge", tmp_path / "odd.csv", "-o", tmp_path / "all.csv")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{tmp_path / 'odd.csv'}: {what}" in err


def test_the_id_rule_touches_bare_hashes_only():
    assert upgrade_id("cell_id", "7893406999e0") == "c7893406999e0"
    assert upgrade_id("setup_id", "0123456789ab") == "s0123456789ab"
    for value in ("c7893406999e0", "", "~abc", "7893406999E0", "0123456789abc"):
        assert upgrade_id("cell_id", value) == value


@pytest.mark.slow  # trains four small cells
def test_figures_do_not_depend_on_how_the_id_is_written(tmp_path, capsys):
    """The cells of tests/data/schema6.csv trained again now: their random streams derive from the id's hash
    (Cell.seed_key), not its letter, so every figure is the one schema 6 wrote."""
    out = tmp_path / "again.csv"
    assert run(capsys, "run", *SCHEMA6_RUN, "--out", out)[0] == 0
    now = {r["cell_id"]: r for r in rows(out)}
    for old in rows(DATA / "schema6.csv"):
        assert [now["c" + old["cell_id"]][f] for f in FIGURES] == [old[f] for f in FIGURES]


def test_a_run_refused_for_another_suite_leaves_an_earlier_schema_file_as_it_was(tmp_path, capsys):
    out = copied("schema6", tmp_path)
    before = out.read_bytes()
    code, _, err = run(capsys, "run", DATA.parent.parent / "tasks" / "tabular.toml", "--task", "wine", "--out", out)
    assert code == 2 and "holds results of suite 'quick'" in err
    assert out.read_bytes() == before


def later_run(source: Path, path: Path, year: str = "2030") -> Path:
    """`source` (any schema) as a run of this schema made later: the same cells, a later started_at."""
    frame = rows(source)
    for row in frame:
        row["started_at"] = year + row["started_at"][4:]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(frame[0]))
        writer.writeheader()
        writer.writerows(frame)
    assert main(["migrate", str(path)]) == 0
    return path


def test_history_lines_up_a_run_of_an_earlier_schema_with_one_of_this_schema(tmp_path, capsys):
    """Ids are compared after the upgrade: a weekly folder that spans schema 7 pairs its cells seed by seed, and a
    migrated copy of a file is the same run (skipped), not a second one."""
    import json

    old = DATA / "schema6.csv"
    new = later_run(old, tmp_path / "new.csv")
    code, stdout, err = run(capsys, "history", old, new, "--format", "json")
    assert code == 0, err
    document = json.loads(stdout)
    assert [r["paths"] for r in document["runs"]] == [[str(old)], [str(new)]]
    steps = [c["steps"][1] for c in document["configurations"]]
    assert len(steps) == 2 and all(step["n_pairs"] == 2 for step in steps)  # both seeds of both keep rates
    same = copied("schema6", tmp_path)
    assert run(capsys, "migrate", same)[0] == 0
    code, _, err = run(capsys, "history", old, same, new)
    assert code == 0 and "skipped, its cells are all in" in err
    code, stdout, _ = run(capsys, "report", new, "--history", old, "--format", "json")
    assert code == 0 and json.loads(stdout)["history"]["verdict"] == "no regression"


def test_the_run_metadata_of_an_earlier_schema_reads_as_this_ones(tmp_path):
    from dropbench.report.runs import run_info

    old = DATA / "schema6.csv"
    migrated = copied("schema6", tmp_path)
    main(["migrate", str(migrated)])
    before, after = (run_info([p], read_results(p)) for p in (old, migrated))
    assert (before.cells, before.started, before.commits) == (after.cells, after.started, after.commits)


def test_a_regularizers_random_streams_derive_from_the_ids_hash_not_its_letter():
    """Mixup (a registry regularizer since the plugin work) draws from the cell's seed_key, as the masks do, so
    its figures are those a schema-6 run drew from the bare id."""
    import torch
    from conftest import make_cell

    from dropbench.regularizers import regularizer_class
    from dropbench.seeding import make_generator

    cell = make_cell("digits", reg="mixup", strengths={"mixup": 0.2})
    part = regularizer_class("mixup")(0.2, cell)
    assert cell.cell_id == "c" + cell.seed_key
    expected = make_generator(cell.seed_key, "mixup-pairs")
    assert torch.equal(part.generator.get_state(), expected.get_state())


def test_a_halving_rungs_cell_draws_from_its_whole_trainings_hash():
    """A rung's cell (the first epochs of a training) has an id of its own but the random streams and the
    checkpoint name of the whole training: seed_key is the digits of training_id, the full cell's cell_id."""
    from dataclasses import replace

    from conftest import make_cell

    from dropbench.checkpoints import CHECKPOINT_NAME

    whole = make_cell("digits", keep=0.5, epochs=4)
    rung = replace(whole, epoch_limit=2)
    assert rung.cell_id != whole.cell_id and rung.training_id == whole.cell_id == whole.training_id
    assert rung.seed_key == whole.seed_key == whole.cell_id[1:] and rung.training_id == "c" + rung.seed_key
    assert CHECKPOINT_NAME.fullmatch(f"{rung.training_id}.pt")
