"""--threads auto: the cores shared among the cells in flight, where figures do not depend on the thread count.

That rests on MKL's strict reproducibility mode (MKL_CBWR=AUTO,STRICT), which MKL reads at its first call in a
process and documents for its AVX2 and AVX-512 code branches (Intel CPUs): the trainings that show it run in
subprocesses, where it is set before torch's first product. Where MKL does not document it (this project's AMD EPYC),
auto gives each cell one thread; tests of the sharing itself take strict mode to hold there (DROPBENCH_TEST_STRICT_BLAS,
tests/hooks).
"""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import ROOT, make_cell, subprocess_env

from dropbench import executors, threads
from dropbench.checkpoints import CheckpointStore, TrainingState
from dropbench.cli import main
from dropbench.config import ModelConfig
from dropbench.data import load_task_data
from dropbench.executors import FollowCores, LocalExecutor, ThreadShare, make_executor, threads_policy
from dropbench.stacked import work_units
from dropbench.threads import (
    AUTO,
    CBWR_ENV,
    STRICT,
    auto_threads,
    cbwr_auto_branch,
    cbwr_in_effect,
    figures_threads,
    strict_blas,
    strict_requested,
    thread_free,
)
from dropbench.train import fit_cell

TESTS = str(ROOT / "tests")
# Where MKL documents strict mode on this CPU (its AUTO branch is AVX2 or an AVX-512 one).
DOCUMENTED = strict_blas(here=True)
WINE = make_cell("wine", epochs=2, hidden=(16,))


def unit(cell):
    return work_units([cell], jobs=1, stack=True)[0]


# ---------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    ("cores", "jobs", "busy", "count"),
    [
        (2, 2, 2, 1),  # a full pool on two cores: a thread each
        (2, 2, 1, 2),  # the last cell of the grid takes both
        (2, 1, 1, 2),  # --jobs 1, or a one-cell run: every core
        (16, 4, 4, 4),
        (16, 4, 3, 5),  # three left: 5 each, one core idle rather than more threads than cores
        (16, 4, 1, 16),
        (16, 4, 9, 4),  # never fewer than the pool's share
        (2, 4, 4, 1),  # more workers than cores (--jobs 4): at least one thread each
        (8, 3, 0, 8),  # nothing counted yet
    ],
)
def test_auto_threads_share_the_cores_among_the_busy_workers(cores, jobs, busy, count):
    assert auto_threads(cores, jobs, busy) == count


def test_auto_never_gives_the_workers_more_threads_than_cores():
    for cores in range(1, 33):
        for jobs in range(1, cores + 1):
            for busy in range(1, jobs + 1):
                assert busy * auto_threads(cores, jobs, busy) <= cores
                assert auto_threads(cores, jobs, busy) >= cores // jobs  # a shrinking grid only adds threads


def test_threads_default_to_auto_on_the_cpu_and_every_core_on_cuda(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 6)
    assert threads_policy(None, "cpu") == threads_policy(AUTO, "cpu") == AUTO
    assert threads_policy(3, "cpu") == 3
    assert threads_policy(None, "cuda") == threads_policy(AUTO, "cuda") == 6  # as before: the GPU does the work
    assert make_executor(jobs=1).policy == AUTO and make_executor(jobs=2, threads=2).policy == 2
    with pytest.raises(Exception, match="threads='many': allowed: 'auto' or a whole number"):
        make_executor(jobs=1, threads="many")  # type: ignore[arg-type]


def test_a_worker_follows_the_share_at_each_epoch_end():
    """What a pool worker does (`_fit_in_worker`): its threads follow the busy count the driver writes, read when a
    unit starts and at every epoch's end, never within an epoch."""
    share = ThreadShare(cores=2, jobs=2)
    share.busy.value = 2
    heard = []
    before = torch.get_num_threads()
    try:
        cores = FollowCores(share.threads, heard.append)
        assert torch.get_num_threads() == 1 and cores.most == 1  # two cells in flight on two cores
        share.busy.value = 1  # the other worker's cell ended: this one takes both cores at its next epoch
        assert torch.get_num_threads() == 1
        cores.on_epoch("epoch 1")  # type: ignore[arg-type]  # any progress report is passed on as it is
        assert torch.get_num_threads() == 2 and cores.most == 2 and heard == ["epoch 1"]
    finally:
        torch.set_num_threads(before)


def test_a_one_cell_run_in_this_process_takes_every_core_where_figures_allow(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    monkeypatch.setattr(executors, "strict_blas", lambda here: True)
    executor = LocalExecutor()
    assert executor.threads == executor.unit_threads(unit(WINE)) == 2
    seen = []
    [(_, result, _)] = executor.run([WINE], on_epoch=lambda _: seen.append(torch.get_num_threads()))
    assert result.status == "ok" and result.threads == 2 and seen == [2, 2]
    assert torch.get_num_threads() == 1  # the caller's count is set back (conftest's one thread)
    assert LocalExecutor(threads=1).unit_threads(unit(WINE)) == 1  # a fixed count stays fixed


def test_without_strict_mode_auto_gives_each_cell_one_thread(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    monkeypatch.setattr(executors, "strict_blas", lambda here: False)
    executor = LocalExecutor()
    assert executor.threads == executor.unit_threads(unit(WINE)) == 1
    assert LocalExecutor(threads=2).unit_threads(unit(WINE)) == 2  # asked for: the user's choice
    assert executors.PoolExecutor(2)._share(2) is None and executors.PoolExecutor(2).threads == 1


def test_cells_whose_figures_might_depend_on_threads_keep_one_under_auto(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    monkeypatch.setattr(executors, "strict_blas", lambda here: True)
    bf16 = replace(WINE, precision="bf16")
    plugin = replace(WINE, regularizer=replace(WINE.regularizer, parts=(("tests.plugin:Penalty", 1.0),)))
    cnn = replace(WINE, task=replace(WINE.task, model=ModelConfig(kind="cnn", channels=(8,), hidden=(16,))))
    assert thread_free(WINE) and not any(thread_free(cell) for cell in (bf16, plugin, cnn))
    assert all(thread_free(make_cell("wine", reg=reg)) for reg in ("l1+l2", "max-norm", "mixup", "kl-sparsity"))
    assert LocalExecutor().unit_threads(unit(bf16)) == 1
    assert LocalExecutor(threads=2).unit_threads(unit(bf16)) == 2


def test_a_checkpoint_of_a_thread_free_training_records_no_thread_count(tmp_path, monkeypatch):
    cell = make_cell("wine", epochs=6, hidden=(16,))
    monkeypatch.setattr(threads, "strict_blas", lambda here: True)
    data = fit_cell(replace(cell, epoch_limit=3), load_task_data("wine")).state
    assert TrainingState.from_bytes(data).threads == figures_threads(cell, "cpu") == 0
    assert figures_threads(replace(cell, precision="bf16"), "cpu") == torch.get_num_threads()
    store = CheckpointStore(tmp_path / "r.csv", "cpu", 1, strict=True)
    store.save(replace(cell, epoch_limit=3), data)
    assert store.start(cell) is not None and CheckpointStore(tmp_path / "r.csv", "cpu", 2, strict=True).start(cell)
    assert CheckpointStore(tmp_path / "r.csv", "cpu", 1).start(cell) is None  # a run without strict mode: not its own
    monkeypatch.setattr(threads, "strict_blas", lambda here: False)
    assert figures_threads(cell, "cpu") == torch.get_num_threads()


def test_a_run_records_the_policy_and_mkls_mode(tmp_path):
    out = tmp_path / "r.csv"
    grid = ["run", "--task", "wine", "--reg", "none", "--keep", "1", "--epochs", "1", "--jobs", "1", "-q", "--out"]
    assert main([*grid, str(out), "--seeds", "1"]) == 0
    run = json.loads(out.with_suffix(".json").read_text())["runs"][-1]
    assert run["threads"] == AUTO and run["mkl_cbwr"] == STRICT == run["mkl_cbwr_in_effect"]
    assert run["strict_blas"] is DOCUMENTED and run["mkl_cbwr_auto_branch"] == cbwr_auto_branch()
    header, row = (line.split(",") for line in out.read_text().splitlines())
    assert int(row[header.index("threads")]) == (executors.usable_cores() if DOCUMENTED else 1)
    assert main([*grid, str(out), "--seeds", "2", "--threads", "1"]) == 0  # a resume, at a fixed count
    assert json.loads(out.with_suffix(".json").read_text())["runs"][-1]["threads"] == 1


# ---------------------------------------------------------------- in subprocesses


def run_python(code, **env):
    environ = subprocess_env(**env)
    if env.get(CBWR_ENV) is None:
        environ.pop(CBWR_ENV, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


POOL = """\
import json, sys
sys.path.insert(0, {tests!r})
from conftest import make_cell
from dropbench import executors
executors.usable_cores = lambda: 3  # the driver shares out its count of cores
[(_, result, _)] = executors.PoolExecutor(jobs=2).run([make_cell("wine", epochs=2, hidden=(16,))])
print(json.dumps([result.status, result.threads]))
"""


@pytest.mark.slow  # a subprocess and its worker process
def test_a_one_cell_grid_in_a_pool_takes_every_core():
    assert run_python(POOL.format(tests=TESTS), DROPBENCH_TEST_STRICT_BLAS="1") == ["ok", 3]
    assert run_python(POOL.format(tests=TESTS)) == ["ok", 3 if DOCUMENTED else 1]


# Cells trained by the single-cell trainer and a stack at one thread, two, and changing between epochs as
# `--threads auto` does (`FollowCores`). digits, a 64-256-256-10 MLP, batch 32: the shape where MKL's kernels differ
# with the thread count without strict mode (see below). diabetes, a stack of one: its last batch of 10 rows (266
# training rows, batch 64) makes products with few output elements, which strict mode makes thread-count free only
# where MKL documents it.
TRAIN = """\
import json, sys
sys.path.insert(0, {tests!r})
from conftest import make_cell
import torch
from dropbench.config import OptimizerConfig
from dropbench.data import load_task_data
from dropbench.executors import FollowCores
from dropbench.stacked import fit_stacked
from dropbench.threads import cbwr_in_effect
from dropbench.train import fit_cell

class Schedule:
    def __init__(self, counts):
        self.counts, self.calls, self.seen = counts, 0, set()
    def __call__(self):
        count = self.counts[min(self.calls, len(self.counts) - 1)]
        self.calls += 1
        self.seen.add(count)
        return count

def figures(r):
    return [r.status, r.epochs_run, r.best_epoch, r.train_loss, r.train_acc, r.val_loss, r.val_acc, r.test_loss,
            r.test_acc, r.test_ece, [[c.fit_loss, c.val_loss, c.val_acc] for c in r.curves]]

task = {task!r}
data = load_task_data(task)
if task == "digits":
    cells = [make_cell(task, reg=reg, keep=keep, epochs=3, hidden=(256, 256), batch_size=32, input_keep=0.8)
             for reg, keep in (("l2", 0.5), ("max-norm", 0.5), ("none", 1.0))]
else:
    cells = [make_cell(task, keep=0.5, epochs=3, hidden=(128, 128), optimizer=OptimizerConfig(name="adam", lr=1e-3))]
out = {{"mode": cbwr_in_effect()}}
for name, counts in {{"one": [1], "two": [2], "changing": [1, 2, 1, 2]}}.items():
    schedule = Schedule(counts)
    single = fit_cell(cells[0], data, FollowCores(schedule, None).on_epoch)
    stacked = fit_stacked(cells, data, FollowCores(schedule, None).on_epoch)
    out[name] = {{"single": figures(single), "stacked": [figures(r) for r in stacked], "seen": sorted(schedule.seen)}}
print(json.dumps(out))
"""


@pytest.mark.slow  # trains cells three times over in a subprocess
@pytest.mark.parametrize("task", ["digits", "diabetes"])
def test_figures_are_the_same_at_one_thread_two_and_changing_between_epochs(task):
    if task == "diabetes" and not DOCUMENTED:
        pytest.skip(
            f"MKL documents strict mode for its AVX2 and AVX-512 branches; this CPU's is {cbwr_auto_branch()}, where "
            "products with few outputs still change with the thread count (the next test): auto keeps one thread here"
        )
    out = run_python(TRAIN.format(tests=TESTS, task=task), MKL_CBWR=STRICT)
    assert out["mode"] == STRICT
    assert out["changing"]["seen"] == [1, 2] and out["two"]["seen"] == [2]  # the count really changed
    for trainer in ("single", "stacked"):
        assert out["one"][trainer] == out["two"][trainer] == out["changing"][trainer], trainer


SMALL_PRODUCT = """\
import json, torch
import dropbench
from dropbench.threads import cbwr_in_effect
x, w, b = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)) for shape in ((5, 64), (16, 64), (16,)))
outs = []
for count in (1, 2):
    torch.set_num_threads(count)
    outs.append(torch.nn.functional.linear(x, w, b))
print(json.dumps({"mode": cbwr_in_effect(), "same": torch.equal(*outs)}))
"""


@pytest.mark.slow  # a subprocess
def test_where_mkl_does_not_document_strict_mode_a_small_product_still_depends_on_threads():
    """Why `strict_blas` asks for a documented branch, not the STRICT flag alone: on this project's AMD EPYC (MKL
    2024.2, whose AUTO branch names none) a 5-row batch into a 16-unit layer, one SGEMM that MKL ran in strict mode,
    gave other bits at two threads than at one. Another CPU may happen to give the same bits: then nothing to show."""
    if DOCUMENTED:
        pytest.skip(f"MKL documents strict mode on this CPU's branch ({cbwr_auto_branch()})")
    out = run_python(SMALL_PRODUCT, MKL_CBWR=STRICT)
    assert out["mode"] == STRICT
    if out["same"]:
        pytest.skip("this CPU's MKL gives the same bits at 1 and 2 threads for this product")


# The digits shape without strict mode: MKL's first call comes before `import dropbench` could set MKL_CBWR, so MKL
# runs as it does by default (the variable unset). One backward pass, at one thread and two.
WITHOUT_STRICT = """\
import json, sys
import torch
torch.nn.functional.linear(torch.ones(32, 256), torch.ones(10, 256))  # MKL's first call: its mode is now fixed
sys.path.insert(0, {tests!r})
from conftest import make_cell
from dropbench.data import load_task_data
from dropbench.threads import cbwr_in_effect
from dropbench.train import Training

data = load_task_data("digits")
grads = {{}}
for count in (1, 2):
    torch.set_num_threads(count)
    training = Training(make_cell("digits", keep=0.5, epochs=1, hidden=(256, 256), batch_size=32), data)
    idx = torch.arange(32)
    training.loss(training.model(data.inputs(data.x_train[idx])), data.y_train[idx]).backward()
    grads[count] = {{n: p.grad.clone() for n, p in training.model.named_parameters()}}
differ = [n for n in grads[1] if not torch.equal(grads[1][n], grads[2][n])]
print(json.dumps({{"mode": cbwr_in_effect(), "differ": differ}}))
"""


@pytest.mark.slow  # subprocesses
def test_without_strict_mode_the_thread_count_changes_a_gradient():
    """Why MKL_CBWR is set: without strict mode, the same backward pass at one thread and two gives another output
    layer weight gradient (seen on this project's AMD EPYC, MKL 2024.2). MKL picks its kernels by CPU, so another
    machine may happen to give the same bits for this shape: then there is nothing to show."""
    out = run_python(WITHOUT_STRICT.format(tests=TESTS))
    assert out["mode"] == "OFF"  # import dropbench came after MKL's first call: too late for this process
    if not out["differ"]:
        pytest.skip("this CPU's MKL gives the same bits at 1 and 2 threads for this shape without strict mode")
    assert out["differ"] == ["output.weight"]
    strict = run_python(WITHOUT_STRICT.format(tests=TESTS).replace("torch.nn.functional.linear", "# "))
    assert strict["mode"] == STRICT and strict["differ"] == []  # import dropbench came first: strict mode


# ---------------------------------------------------------------- when MKL reads MKL_CBWR

MODE = """\
import json, os, torch
{before}
import dropbench
from dropbench.executors import LocalExecutor
from dropbench.threads import cbwr_in_effect, strict_blas
print(json.dumps({{"env": os.environ.get("MKL_CBWR"), "mode": cbwr_in_effect(), "here": strict_blas(here=True),
                  "workers": strict_blas(here=False), "threads": LocalExecutor().threads}}))
"""


@pytest.mark.slow  # subprocesses
def test_mkl_reads_its_mode_at_its_first_call_so_import_dropbench_after_torch_is_in_time():
    cores = executors.usable_cores() if DOCUMENTED else 1
    out = run_python(MODE.format(before=""))  # torch imported first, no product yet
    assert out == {"env": STRICT, "mode": STRICT, "here": DOCUMENTED, "workers": DOCUMENTED, "threads": cores}
    late = run_python(MODE.format(before="torch.ones(8, 8) @ torch.ones(8, 8)"))  # a product first: MKL's mode is set
    assert late == {"env": STRICT, "mode": "OFF", "here": False, "workers": DOCUMENTED, "threads": 1}


@pytest.mark.slow  # a subprocess
def test_a_users_own_mkl_cbwr_wins():
    out = run_python(MODE.format(before=""), MKL_CBWR="COMPATIBLE")
    assert out == {"env": "COMPATIBLE", "mode": "COMPATIBLE", "here": False, "workers": False, "threads": 1}


def test_strict_mode_is_asked_for_by_name():
    assert strict_requested({CBWR_ENV: "AVX2,STRICT"}) and strict_requested({CBWR_ENV: "auto, strict"})
    assert not strict_requested({CBWR_ENV: "AVX2"}) and not strict_requested({})


def test_this_process_runs_mkl_in_strict_mode():
    """conftest imports dropbench before any product, as the CLI does: MKL is in strict mode here."""
    assert os.environ[CBWR_ENV] == STRICT and cbwr_in_effect() == STRICT
