"""The Ray executor: same figures as a local run, a killed worker retried, a dying cell failed, Ray missing."""

import sys

import pandas as pd
import pytest
from conftest import make_cell

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # every test here starts Ray, or runs beside a Ray instance

from dropbench import ray_executor  # noqa: E402 - only once Ray is known to be there
from dropbench.data import load_task_data  # noqa: E402
from dropbench.errors import UserError  # noqa: E402
from dropbench.executors import LocalExecutor, fit_alone  # noqa: E402
from dropbench.merge import CIRCUMSTANCE_COLUMNS  # noqa: E402
from dropbench.ray_executor import RayExecutor  # noqa: E402
from dropbench.runner import run_suite  # noqa: E402
from dropbench.suite import Overrides, apply_overrides, load_suite  # noqa: E402

GRID = Overrides(tasks=("wine", "breast-cancer"), keep_rates=(0.5, 1.0), regularizers=("none", "l2"), seeds=2, epochs=3)
CELLS = 2 * 2 * 2 * 2


def figures(path):
    frame = pd.read_csv(path).drop(columns=sorted(CIRCUMSTANCE_COLUMNS))
    return frame.set_index("cell_id").sort_index()


@pytest.fixture(scope="module")
def suite():
    return apply_overrides(load_suite("quick"), GRID)


@pytest.fixture(scope="module")
def reference(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.csv"
    run_suite(suite, out, executor=LocalExecutor(threads=1))
    return figures(out)


def killing(marker, always=False):
    """The body of a cell's Ray task with a test hook: the first cell to create the file `marker` writes its
    cell_id there and kills its own worker before fitting (so Ray retries it); with `always`, every attempt of
    that cell is killed (so it fails after its retries). Put in place of `ray_executor._fit_remote`; a closure,
    so Ray ships it to the workers by value, and it calls the workers' own `_fit_remote`."""

    def fit(cell, *args):
        import os
        import signal
        from pathlib import Path

        from dropbench import ray_executor

        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not (always and Path(marker).read_text() == cell.cell_id):
                return ray_executor._fit_remote(cell, *args)
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(cell.cell_id)
        os.kill(os.getpid(), signal.SIGKILL)

    return fit


@pytest.fixture(scope="module")
def shared_ray():
    """One small Ray instance for the tests after the first; RayExecutor uses a connection it finds."""
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_ray_instance_of_its_own_is_stopped_also_when_a_cell_raises_a_user_error(monkeypatch):
    # First in the file, before `shared_ray` connects this process: this run starts a Ray instance of its
    # own. A cell of a task the worker cannot load raises UserError there; it reaches us as a UserError,
    # the other cells are cancelled and the instance is shut down.
    assert not ray.is_initialized()
    monkeypatch.setattr(ray_executor, "usable_cores", lambda: 2)
    executor = RayExecutor(cpus_per_cell=1)
    assert (executor.name, executor.threads, executor.jobs) == ("ray", 1, 2)
    cells = [make_cell(task="wine"), make_cell(task="no-such-task"), make_cell(task="wine", seed=1)]
    with pytest.raises(UserError, match="^unknown task 'no-such-task'") as caught:
        list(executor.run(cells))
    assert type(caught.value) is UserError and not ray.is_initialized()


@pytest.mark.slow
def test_a_ray_run_gives_the_local_figures(suite, reference, tmp_path, shared_ray):
    executor = RayExecutor(cpus_per_cell=1)
    out = tmp_path / "ray.csv"
    summary = run_suite(suite, out, executor=executor)
    frame = pd.read_csv(out)
    assert len(frame) == CELLS and frame["cell_id"].is_unique and (frame["status"] == "ok").all()
    assert summary.counts["ok"] == CELLS and executor.jobs == 2  # the instance's 2 CPUs, 1 per cell
    assert (frame["threads"] == 1).all()
    pd.testing.assert_frame_equal(figures(out), reference)
    assert ray.is_initialized()  # a connection it found is left as it was


@pytest.mark.slow
def test_a_worker_killed_mid_cell_is_retried_and_the_file_ends_complete(
    suite, reference, tmp_path, monkeypatch, shared_ray
):
    marker = tmp_path / "killed"
    monkeypatch.setattr(ray_executor, "_fit_remote", killing(str(marker)))
    out = tmp_path / "ray.csv"
    run_suite(suite, out, executor=RayExecutor(cpus_per_cell=1, max_retries=2))
    assert marker.read_text()  # the hook fired: this cell's worker was killed once
    frame = pd.read_csv(out)
    assert len(frame) == CELLS and frame["cell_id"].is_unique and (frame["status"] == "ok").all()
    assert marker.read_text() in set(frame["cell_id"])
    pd.testing.assert_frame_equal(figures(out), reference)


@pytest.mark.slow
def test_a_cell_that_keeps_dying_is_failed_after_its_retries_and_the_run_goes_on(
    suite, reference, tmp_path, monkeypatch, shared_ray
):
    marker = tmp_path / "killed"
    monkeypatch.setattr(ray_executor, "_fit_remote", killing(str(marker), always=True))
    out = tmp_path / "ray.csv"
    summary = run_suite(suite, out, executor=RayExecutor(max_retries=1))
    frame = pd.read_csv(out, keep_default_na=False).set_index("cell_id")
    victim = marker.read_text()
    assert len(frame) == CELLS and summary.counts == {"ok": CELLS - 1, "failed": 1}
    assert frame.loc[victim, "status"] == "failed"
    assert frame.loc[victim, "error"].startswith("WorkerCrashedError: ")
    ok = frame.drop(index=victim).reset_index()
    ok.to_csv(tmp_path / "ok.csv", index=False)
    pd.testing.assert_frame_equal(figures(tmp_path / "ok.csv"), reference.drop(index=victim))


HALVING = """
name = "ray-halving"
epochs = 6
model = { kind = "mlp", hidden = [16] }
optimizer = { name = "sgd", lr = 0.05, momentum = 0.9 }
[tuning]
methods = ["none", "l2", "dropout"]
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


def recording(folder):
    """The body of a cell's Ray task, recording in `folder` each cell that came with a checkpoint to continue from
    (a file named by its cell_id, holding the checkpoint's epochs); shipped to the workers by value, as `killing`."""

    def fit(cell, *args):
        from pathlib import Path

        from dropbench import ray_executor

        start = args[4] if len(args) > 4 else None
        if start is not None:
            Path(folder, cell.cell_id).write_text(str(start.epoch))
        return ray_executor._fit_remote(cell, *args)

    return fit


@pytest.mark.slow
def test_a_halving_run_on_ray_continues_from_the_drivers_checkpoints_to_the_local_rows(
    tmp_path, monkeypatch, shared_ray, capsys
):
    """`--executor ray` on a tiny halving suite: the driver sends each later rung's cell its checkpoint and keeps
    the one the result brings back; every row equals the local executor's, and no checkpoint is left."""
    from dropbench.checkpoints import checkpoint_folder
    from dropbench.cli import main

    path = tmp_path / "h.toml"
    path.write_text(HALVING)
    run_suite(load_suite(str(path)), tmp_path / "local.csv", executor=LocalExecutor(threads=1))
    starts = tmp_path / "starts"
    starts.mkdir()
    monkeypatch.setattr(ray_executor, "_fit_remote", recording(str(starts)))
    out = tmp_path / "ray.csv"
    assert main(["run", str(path), "--executor", "ray", "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    frame = pd.read_csv(out)
    assert frame["cell_id"].is_unique and (frame["status"] == "ok").all() and set(frame["max_epochs"]) == {2, 4, 6}
    pd.testing.assert_frame_equal(figures(out), figures(tmp_path / "local.csv"))
    continued = {p.name: int(p.read_text()) for p in starts.iterdir()}
    later = frame[(frame["phase"] == "tune") & (frame["max_epochs"] > 2) & (frame["method"] != "none")]
    assert set(continued) == set(later["cell_id"])  # every later rung's cell continued, none of the others
    assert {continued[c] for c in later["cell_id"]} == {2, 4}
    assert not checkpoint_folder(out).exists()


def test_a_user_error_in_a_task_reaches_the_caller_unwrapped(shared_ray):
    def bad_data():
        raise UserError("wine: the data is bad")

    ref = ray.remote(bad_data).options(max_retries=0, retry_exceptions=False).remote()
    executor = RayExecutor()
    with pytest.raises(UserError, match="^wine: the data is bad$") as caught:
        executor._outcome(ray, ref, ray_executor._versions())
    assert type(caught.value) is UserError


def test_a_worker_with_other_versions_stops_the_run(shared_ray):
    def other_versions():
        return None, "2026-01-01T00:00:00Z", {"dropbench": "0.0.1", "torch": "1.0.0"}

    ref = ray.remote(other_versions).remote()
    with pytest.raises(UserError, match="install the same versions on every node"):
        RayExecutor()._outcome(ray, ref, ray_executor._versions())


def test_a_worker_without_the_files_uses_the_drivers_copy(monkeypatch, shared_ray):
    cell = make_cell(task="wine", keep=0.5, epochs=2)
    data = load_task_data("wine")
    copy = [ray.put(data)]

    def missing(name):
        raise UserError(f"{name}: not found")

    monkeypatch.setattr(ray_executor, "load_task_data", missing)
    monkeypatch.setattr(ray_executor, "_driver_copies", {})
    monkeypatch.setenv("DROPBENCH_OFFLINE", "0")  # the task body sets both; monkeypatch restores them
    monkeypatch.delenv("DROPBENCH_DATA", raising=False)
    result, started_at, _ = ray_executor._fit_remote(cell, copy, None, 1, "cpu")
    expected = fit_alone(cell, data)  # the trainer a local run uses for this cell
    assert (result.status, result.test_loss, result.curves) == ("ok", expected.test_loss, expected.curves)
    assert started_at.endswith("Z") and ray_executor._driver_copies["wine", "cpu"] is not data  # fetched from the store
    with pytest.raises(UserError, match="not found"):  # no driver's copy (a Ray instance of our own)
        ray_executor._driver_data("breast-cancer", [None], "cpu")


def test_without_ray_a_user_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'dropbench\[ray\]'"):
        RayExecutor()
    with pytest.raises(UserError, match="needs Ray"):
        ray_executor.import_ray()


def test_cli_without_ray_says_how_to_install_it(monkeypatch, capsys):
    from dropbench.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["run", "--task", "wine", "--executor", "ray", "-q"]) == 2
    assert "pip install 'dropbench[ray]'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_address_needs_the_ray_executor(capsys):
    from dropbench.cli import main

    assert main(["run", "--task", "wine", "--address", "auto", "-q"]) == 2
    assert "--address needs --executor ray" in capsys.readouterr().err
