"""`dropbench.run` where researchers work: its rows as a DataFrame, failures raised or warned about (never NaN
figures), and the places a run starts from: a script without a main guard, `python -`, a notebook."""

import json
import multiprocessing
import os
import subprocess
import sys
from multiprocessing import spawn

import pandas as pd
import pytest
import torch
from conftest import ROOT, subprocess_env

import dropbench
from dropbench import executors
from dropbench.api import CellsFailedWarning, RunFailed
from dropbench.errors import UserError
from dropbench.results import COLUMNS

TINY = """\
name = "tiny"
seeds = 2
keep_rates = [0.5, 1.0]
regularizers = ["none"]
epochs = 1
model = { kind = "mlp", hidden = [8] }

[[task]]
name = "wine"
"""
TINY_CELLS = 2 * 2  # keep rates × seeds


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run that wrote to results/ by default would show here
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def plant_failures(monkeypatch, seeds):
    """Training a cell of these seeds raises, as tests/hooks/sitecustomize.py does in worker processes."""

    def failing(fit):
        def fit_or_fail(cells, data, *rest):
            found = {cell.seed for cell in (cells if isinstance(cells, list) else [cells])} & set(seeds)
            if found:
                raise RuntimeError(f"planted failure in seed {min(found)}")
            return fit(cells, data, *rest)  # on_epoch, and a checkpoint to start from

        return fit_or_fail

    monkeypatch.setattr(executors, "fit_stacked", failing(executors.fit_stacked))
    monkeypatch.setattr(executors, "fit_cell", failing(executors.fit_cell))


# ---------------------------------------------------------------- in this process (jobs=1)


def test_run_returns_one_row_per_cell_and_leaves_no_file(tiny, tmp_path):
    frame = dropbench.run(tiny, jobs=1)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == TINY_CELLS and (frame["status"] == "ok").all()
    assert frame["gap_acc"].notna().all() and frame["cell_id"].is_unique
    assert frame["cell_id"].str.fullmatch(r"c[0-9a-f]{12}").all() and frame["setup_id"].str.startswith("s").all()
    assert list(zip(frame["keep_rate"], frame["seed"])) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]  # the grid's order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]  # the temporary results are gone


def test_out_keeps_the_results_and_a_second_run_trains_only_the_new_seeds(tiny, tmp_path):
    out = tmp_path / "r.csv"
    first = dropbench.run(tiny, out=out, seeds=2, jobs=1)
    more = dropbench.run(tiny, out=out, seeds="0..3", jobs=1)  # seeds 0 and 1 are the same cells as before
    assert len(first) == 4 and len(more) == 8 and more.attrs["results"] == str(out)
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [run["cells"] for run in runs] == [{"ok": 4}, {"ok": 4}]
    pd.testing.assert_frame_equal(more[more["seed"] < 2].reset_index(drop=True), first)


def test_set_and_seeds_reach_the_cells_and_the_provenance(tiny, tmp_path):
    out = tmp_path / "r.csv"
    frame = dropbench.run(tiny, out=out, seeds=[3, 5], set={"optimizer.lr": 0.05, "model.hidden": [4]}, jobs=1)
    assert sorted(set(frame["seed"])) == [3, 5] and (frame["lr"] == 0.05).all() and (frame["model"] == "mlp-4").all()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["suite"]["set"] == {"optimizer.lr": 0.05, "model.hidden": [4]}
    assert "dropbench.run(" in meta["runs"][0]["command"] and "'optimizer.lr': 0.05" in meta["runs"][0]["command"]


def test_every_cell_failing_raises_with_the_cell_and_its_error(tiny, monkeypatch):
    plant_failures(monkeypatch, {0, 1})
    with pytest.raises(RunFailed) as caught:
        dropbench.run(tiny, jobs=1)
    message = str(caught.value)
    assert message.startswith("all 4 cells this run trained failed or diverged; the first: wine none keep=")
    assert "failed: RuntimeError: planted failure in seed" in message
    assert len(caught.value.results) == TINY_CELLS and (caught.value.results["status"] == "failed").all()


def test_some_cells_failing_are_returned_with_their_error_and_a_warning(tiny, monkeypatch):
    plant_failures(monkeypatch, {1})
    with pytest.warns(CellsFailedWarning, match="2 of 4 cells failed or diverged"):
        frame = dropbench.run(tiny, jobs=1)
    failed = frame[frame["status"] == "failed"]
    assert set(failed["seed"]) == {1} and failed["error"].str.contains("planted failure in seed 1").all()
    assert (frame[frame["seed"] == 0]["status"] == "ok").all()


def test_a_resumed_file_whose_cells_all_failed_raises(tiny, tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    plant_failures(monkeypatch, {0, 1})
    with pytest.raises(RunFailed):
        dropbench.run(tiny, out=out, jobs=1)
    with pytest.raises(RunFailed, match=f"all 4 cells failed or diverged; the first: .*; the rows are in {out}"):
        dropbench.run(tiny, out=out, jobs=1)  # nothing left to train; the file still has no figure


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"epochs": 2, "set": {"epochs": 3}}, "set['epochs'] and epochs= both set epochs: give one of them"),
        ({"set": {"optimizer.lrr": 0.1}}, "set['optimizer.lrr']: unknown key 'lrr' in optimizer (did you mean 'lr'?)"),
        ({"set": {"optimizer.lr": None}}, "set['optimizer.lr']: None is not a suite value"),
        ({"seeds": "3..1"}, "seeds='3..1': 3..1: the range is empty"),
        ({"seeds": [1, 1]}, "--seeds: seed 1 is listed twice"),
        ({"executor": "slurm"}, "executor='slurm': allowed: 'local', 'ray', or an executor object"),
    ],
)
def test_bad_arguments_raise_one_line(tiny, arguments, expected):
    with pytest.raises(UserError) as caught:
        dropbench.run(tiny, jobs=1, **arguments)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def test_training_in_this_process_leaves_the_torch_thread_count_as_it_was(tiny):
    torch.set_num_threads(2)
    dropbench.run(tiny, jobs=1, seeds=1, keep_rates=1.0)
    assert torch.get_num_threads() == 2


def test_a_run_started_while_a_worker_process_boots_is_refused(tiny, monkeypatch):
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(RuntimeError, match='put the script\'s work under `if __name__ == "__main__":`'):
        dropbench.run(tiny, jobs=1)


def test_workers_are_launched_without_the_main_module():
    main = sys.modules["__main__"]
    with executors._main_module_hidden():
        data = spawn.get_preparation_data("x")
        assert "init_main_from_path" not in data and "init_main_from_name" not in data
    assert sys.modules["__main__"] is main
    assert executors.SPAWN.get_start_method() == "spawn"


def test_a_process_that_cannot_start_workers_trains_in_itself(monkeypatch):
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True)
    assert "daemonic" in executors.workers_unavailable()
    assert isinstance(executors.make_executor(jobs=4), executors.LocalExecutor)


def test_report_table_is_report_s_wide_table():
    frame = dropbench.read_results(ROOT / "results" / "quick" / "quick.csv")
    table = dropbench.report_table(frame[frame["task"] == "synthetic"])
    assert len(table) == frame[frame["task"] == "synthetic"]["regularizer"].nunique()
    assert {"task", "row", "metric", "keep_0.5", "keep_0.5_ci", "keep_1", "keep_1_test"} <= set(table.columns)
    synthetic = table[(table["task"] == "synthetic") & (table["regularizer"] == "none")].iloc[0]
    assert synthetic["keep_1"] == pytest.approx(21.5, abs=0.05)  # the README's table: +21.5 ± 1.1
    assert synthetic["keep_0.5_seeds"] == 9


# ---------------------------------------------------------------- where researchers start runs (subprocesses)

SCRIPT = """\
import dropbench

frame = dropbench.run({suite!r}, jobs=2, epochs=2)
print("ROWS", len(frame), "OK", int((frame["status"] == "ok").sum()))
"""


def run_python(args, tmp_path, *, stdin=None, **env):
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        cwd=tmp_path,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_clean(proc, rows=TINY_CELLS):
    assert proc.returncode == 0, proc.stderr
    assert f"ROWS {rows} OK {rows}" in proc.stdout
    assert "Traceback" not in proc.stderr and "bootstrapping" not in proc.stderr
    assert proc.stdout.count("ROWS") == 1  # the script ran once: no worker ran it again


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_in_a_pool(tiny, tmp_path):
    script = tmp_path / "api_script.py"
    script.write_text(SCRIPT.format(suite=str(tiny)))
    assert_clean(run_python([str(script)], tmp_path))


@pytest.mark.slow
def test_a_script_from_stdin_runs_in_a_pool(tiny, tmp_path):
    assert_clean(run_python(["-"], tmp_path, stdin=SCRIPT.format(suite=str(tiny))))


FAILING = """\
import warnings

import dropbench

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    frame = dropbench.run({suite!r}, jobs=2, seeds=[0, 1])  # the cells of seed 1 fail
print("ROWS", len(frame), "OK", int((frame["status"] == "ok").sum()), "WARNED", caught[0].message)
dropbench.run({suite!r}, jobs=2, seeds=[1, 2])  # and those of seed 2: none is ok
"""


@pytest.mark.slow
def test_failures_in_worker_processes_reach_the_caller(tiny, tmp_path):
    proc = run_python(["-"], tmp_path, stdin=FAILING.format(suite=str(tiny)), DROPBENCH_TEST_FAIL_SEEDS="1,2")
    assert "ROWS 4 OK 2 WARNED 2 of 4 cells failed or diverged" in proc.stdout
    assert "RuntimeError: planted failure in seed 1" in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1
    assert last.startswith("dropbench.api.RunFailed: all 4 cells this run trained failed or diverged; the first: wine")
    assert "RuntimeError: planted failure in seed" in last


@pytest.mark.slow
def test_the_readme_python_example_runs_as_a_script_without_a_guard(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python") :]
    code = section[section.index("```python\n") + len("```python\n") : section.index("```\n", 10)]
    assert 'if __name__ == "__main__"' not in code
    (tmp_path / "readme_example.py").write_text(code)
    proc = run_python(["readme_example.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "bootstrapping" not in proc.stderr
    assert "synthetic" in proc.stdout and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_the_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the test extra: pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the test extra: pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="no Jupyter kernel: pip install ipykernel (in the test extra)")
    notebook = nbformat.read(ROOT / "examples" / "api.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.create_kernel_manager()
    try:  # started apart from the notebook's cells, so that only a kernel that cannot start is a skip
        client.start_new_kernel(env={**os.environ, "PYTHONPATH": str(ROOT)})
        client.start_new_kernel_client()
    except Exception as error:  # noqa: BLE001 - no kernel spec, no ZeroMQ, a sandbox: whatever stops a kernel
        if client.km is not None and client.km.has_kernel:
            client.km.shutdown_kernel(now=True)
        pytest.skip(f"no Jupyter kernel could start here: {type(error).__name__}: {error}")
    client.execute()  # the kernel started above, shut down at the end
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", "")) for output in outputs
    )
    assert "synthetic" in text and "keep_0.5" in text
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the plot
    assert not (tmp_path / "results").exists()
