"""--threads auto: the cores shared among the cells in flight, where a probe shows the figures do not depend on it.

A unit of work starts at one thread and takes more only where every operation of its probe (executors.probe_unit)
gives the same bits at that count as at one (dropbench.opprobe); it measures at one thread. MKL runs in strict
reproducibility mode (MKL_CBWR=AUTO,STRICT), which MKL reads at its first call in a process: the trainings that show
it run in subprocesses, where it is set before torch's first product. Tests of the sharing itself take every probe
to agree (DROPBENCH_TEST_PROBE_AGREES, tests/hooks, or a patched `same_bits`), whatever this CPU's kernels do.
"""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import ROOT, make_cell, subprocess_env

from dropbench import executors
from dropbench.checkpoints import CheckpointStore, TrainingState
from dropbench.cli import main
from dropbench.config import ModelConfig
from dropbench.data import load_task_data
from dropbench.executors import FollowCores, LocalExecutor, ThreadShare, make_executor, probe_unit, threads_policy
from dropbench.opprobe import Call, OpRecorder, differing, same_bits
from dropbench.stacked import WorkUnit, work_units
from dropbench.threads import (
    AUTO,
    CBWR_ENV,
    STRICT,
    auto_threads,
    cbwr_auto_branch,
    cbwr_in_effect,
    figures_threads,
    probe_covers,
    set_figures_threads,
)
from dropbench.train import EpochProgress, fit_cell

TESTS = str(ROOT / "tests")
WINE = make_cell("wine", epochs=2, hidden=(16,))


def unit(cell):
    return work_units([cell], jobs=1, stack=True)[0]


@pytest.fixture
def agree(monkeypatch):
    """Every probe agrees: the sharing itself, apart from this CPU's kernels."""
    monkeypatch.setattr(executors, "same_bits", lambda calls, threads: True)


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    set_figures_threads(None)


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


def test_a_worker_follows_the_share_at_each_epoch_end(agree, keep_threads):
    """What a pool worker does (`_fit_in_worker`): its threads follow the busy count the driver writes, read when a
    unit starts and at every epoch's end, never within an epoch."""
    share = ThreadShare(cores=2, jobs=2)
    share.busy.value = 1
    heard = []
    cores = FollowCores(unit(WINE), "cpu", share.threads, heard.append)
    assert torch.get_num_threads() == 2 and cores.most == 2  # alone in the pool: both cores
    assert figures_threads() == 1  # its figures are those of one thread, whatever it runs at
    share.busy.value = 2  # another unit started: one each from the next epoch
    assert torch.get_num_threads() == 2
    first = EpochProgress(1, 2, (WINE.cell_id,))
    cores.on_epoch(first)
    assert torch.get_num_threads() == 1 and heard == [first]
    share.busy.value = 1
    cores.on_epoch(EpochProgress(2, 2, (WINE.cell_id,)))
    assert torch.get_num_threads() == 2
    cores.on_epoch(EpochProgress(2, 2, (WINE.cell_id,), stopped=(WINE.cell_id,)))  # ended: it measures next,
    assert torch.get_num_threads() == 2 and cores.most == 2  # at the count its probe's measuring agreed at


def test_a_unit_takes_more_threads_only_where_its_probe_agrees(monkeypatch, keep_threads):
    asked = []

    def probe_says(calls, threads):
        asked.append(threads)
        return threads == 2

    monkeypatch.setattr(executors, "same_bits", probe_says)
    counts = iter([2, 3, 2, 3])
    cores = FollowCores(unit(WINE), "cpu", lambda: next(counts), None)
    assert torch.get_num_threads() == 2 and cores.calls  # probed once, recorded operations kept
    cores.on_epoch(EpochProgress(1, 4, (WINE.cell_id,)))
    assert torch.get_num_threads() == 1  # three threads: the probe found a difference
    cores.follow()
    cores.follow()
    assert asked == [2, 3]  # each count's verdict is asked for once


def test_a_one_cell_run_in_this_process_takes_every_core_where_the_probe_agrees(monkeypatch, agree):
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    executor = LocalExecutor()
    assert executor.threads == 2 and executor.unit_threads()() == 2
    seen = []
    [(_, result, _)] = executor.run([WINE], on_epoch=lambda _: seen.append(torch.get_num_threads()))
    assert result.status == "ok" and result.threads == 2 and seen == [2, 2]
    assert torch.get_num_threads() == 1  # the caller's count is set back (conftest's one thread)
    assert LocalExecutor(threads=1).unit_threads() == 1  # a fixed count stays fixed


def test_where_the_probe_disagrees_auto_gives_the_unit_one_thread(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    monkeypatch.setattr(executors, "same_bits", lambda calls, threads: False)
    [(_, result, _)] = LocalExecutor().run([WINE])
    assert result.status == "ok" and result.threads == 1


def test_a_probe_that_fails_leaves_the_unit_at_one_thread(monkeypatch, keep_threads):
    def broken(unit, device):
        raise RuntimeError("a probe that cannot train")

    monkeypatch.setattr(executors, "probe_unit", broken)
    cores = FollowCores(unit(WINE), "cpu", lambda: 2, None)
    cores.on_epoch(EpochProgress(1, 2, (WINE.cell_id,)))
    assert torch.get_num_threads() == 1 and cores.most == 1


def test_a_plugins_cells_keep_one_thread_under_auto(monkeypatch, agree, keep_threads):
    """A plugin's model or regularizer may compute over the whole training set, which a probe of two batches would
    not see at its size; dropbench's own parts, conv nets and bf16 included, are probed."""
    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    plugin = replace(WINE, regularizer=replace(WINE.regularizer, parts=(("tests.plugin:Penalty", 1.0),)))
    cnn = replace(WINE, task=replace(WINE.task, model=ModelConfig(kind="cnn", channels=(8,), hidden=(16,))))
    assert not probe_covers(plugin)
    assert all(probe_covers(cell) for cell in (WINE, cnn, replace(WINE, precision="bf16")))
    assert all(probe_covers(make_cell("wine", reg=reg)) for reg in ("l1+l2", "max-norm", "mixup", "kl-sparsity"))
    alone = WorkUnit([plugin], stacked=False)  # as work_units would make it, without importing the plugin
    assert FollowCores(alone, "cpu", lambda: 2, None).most == 1
    assert FollowCores(alone, "cpu", 2, None).most == 2  # a fixed count, asked for: the user's choice


def test_a_checkpoint_under_auto_records_one_thread_whatever_it_ran_at(tmp_path, keep_threads):
    cell = make_cell("wine", epochs=6, hidden=(16,))
    torch.set_num_threads(2)
    set_figures_threads(1)  # what FollowCores sets under auto
    data = fit_cell(replace(cell, epoch_limit=3), load_task_data("wine")).state
    assert TrainingState.from_bytes(data).threads == 1
    store = CheckpointStore(tmp_path / "r.csv", "cpu", 1)
    store.save(replace(cell, epoch_limit=3), data)
    assert store.start(cell) is not None  # the run under auto (or at --threads 1) continues it
    assert CheckpointStore(tmp_path / "r.csv", "cpu", 2).start(cell) is None  # --threads 2: not its figures
    set_figures_threads(None)
    assert figures_threads() == 2  # outside the executors: the count it runs at


def test_a_run_records_the_policy_and_mkls_mode(tmp_path):
    out = tmp_path / "r.csv"
    grid = ["run", "--task", "wine", "--reg", "none", "--keep", "1", "--epochs", "1", "--jobs", "1", "-q", "--out"]
    assert main([*grid, str(out), "--seeds", "1"]) == 0
    run = json.loads(out.with_suffix(".json").read_text())["runs"][-1]
    assert run["threads"] == AUTO and run["mkl_cbwr"] == STRICT == run["mkl_cbwr_in_effect"]
    assert run["mkl_cbwr_auto_branch"] == cbwr_auto_branch()
    header, row = (line.split(",") for line in out.read_text().splitlines())
    assert 1 <= int(row[header.index("threads")]) <= executors.usable_cores()
    assert main([*grid, str(out), "--seeds", "2", "--threads", "1"]) == 0  # a resume, at a fixed count
    assert json.loads(out.with_suffix(".json").read_text())["runs"][-1]["threads"] == 1


# ---------------------------------------------------------------- the probe


def test_the_recorder_keeps_one_call_per_signature_and_runs_every_one():
    a, b = torch.ones(4, 3), torch.ones(3, 2)
    with OpRecorder() as recorder:
        first = a @ b
        second = (a + 1) @ b  # the same product's signature: recorded once
        third = a[:2] @ b  # another shape: recorded
    names = [str(call.func) for call in recorder.calls.values()]
    assert names.count("aten.mm.default") == 2 and names.count("aten.add.Tensor") == 1
    assert torch.equal(first, torch.full((4, 2), 3.0)) and torch.equal(second, 2 * first) and third.shape == (2, 2)


def test_a_call_whose_bits_change_with_the_thread_count_is_found():
    x = torch.zeros(3)
    steady = Call(torch.add, (x, 1.0), {})
    counting = Call(lambda t: t + torch.get_num_threads(), (x,), {})
    failing = Call(lambda t: t.view(7), (x,), {})
    calls = {("steady",): steady, ("counting",): counting, ("failing",): failing}
    found = differing(calls, 2)
    assert len(found) == 2 and not any("add" in f for f in found)  # the thread-counting one, and one not replayed
    assert not same_bits(calls, 2) and same_bits(calls, 1) and same_bits({("steady",): steady}, 2)


def test_bits_are_compared_exactly():
    signed_zero = Call(lambda t: t * (-1.0 if torch.get_num_threads() > 1 else 1.0), (torch.zeros(2),), {})
    nan = Call(lambda t: t / t, (torch.zeros(2),), {})  # NaN at both counts: the same bits
    assert differing({("zero",): signed_zero}, 2) and not differing({("nan",): nan}, 2)


def test_writes_into_arguments_are_compared_and_draws_replay_from_their_generators_state():
    target = torch.zeros(4)
    writes = Call(lambda t: t.add_(torch.get_num_threads()), (target,), {})
    generator = torch.Generator().manual_seed(3)
    draw = Call(torch.rand, ((4,),), {"generator": generator})
    assert differing({("w",): writes}, 2) and not differing({("d",): draw}, 2)
    with OpRecorder() as recorder:
        torch.rand(5)  # the global generator: both replays start from its present state
        torch.ones(1, 3).expand(4, 3).contiguous()  # a broadcast view (elements sharing memory) is copied whole
    assert not differing(recorder.calls, 2)


def test_a_probe_records_a_stacks_training_and_leaves_the_thread_count_alone(keep_threads):
    cells = [make_cell("diabetes", keep=0.5, seed=s, epochs=5, hidden=(32,)) for s in range(3)]
    [stack] = work_units(cells, jobs=1, stack=True)
    torch.set_num_threads(2)
    calls = probe_unit(stack, "cpu")
    names = {str(call.func) for call in calls.values()}
    assert torch.get_num_threads() == 2 and {"aten.bmm.default", "aten.baddbmm.default"} & names
    # the training's two batch sizes (266 training rows, batch 64: 64 and a last one of 10), the validation pass, and
    # the final measuring's chunks: the whole training split at once (266 rows), as the splits are measured
    rows = {tuple(t.shape) for call in calls.values() for t in call.args if isinstance(t, torch.Tensor)}
    assert any(10 in shape for shape in rows) and any(64 in shape for shape in rows)
    assert any(shape[:1] == (266,) for shape in rows)


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
    assert run_python(POOL.format(tests=TESTS), DROPBENCH_TEST_PROBE_AGREES="1") == ["ok", 3]
    status, count = run_python(POOL.format(tests=TESTS))  # this CPU's own probe: 3 threads, or 1 where it differs
    assert status == "ok" and count in (1, 3)


# Cells trained by the executors under auto with the cores offered changing between epochs, against the same cells at
# --threads 1: digits, a 64-256-256-10 MLP at batch 32 (the shape where MKL's kernels differ with the thread count
# without strict mode), as a stack and alone; diabetes, a stack of one whose last batch of 10 rows makes products
# with few output elements (on this project's AMD EPYC some still change with the thread count in strict mode: its
# probe must find them). Whatever the probe decides, the figures must be those of one thread.
TRAIN = """\
import json, sys
sys.path.insert(0, {tests!r})
from conftest import make_cell
import torch
from dropbench import executors
from dropbench.config import OptimizerConfig
from dropbench.threads import cbwr_in_effect

offers = iter([1, 2, 1, 2] * 100)
executors.usable_cores = lambda: 2
executors.auto_threads = lambda cores, jobs, busy: next(offers)

def figures(r):
    return [r.status, r.epochs_run, r.best_epoch, r.train_loss, r.train_acc, r.val_loss, r.val_acc, r.test_loss,
            r.test_acc, r.test_ece, [[c.fit_loss, c.val_loss, c.val_acc] for c in r.curves]]

task = {task!r}
if task == "digits":
    cells = [make_cell(task, reg=reg, keep=keep, epochs=2, hidden=(256, 256), batch_size=32, input_keep=0.8)
             for reg, keep in (("l2", 0.5), ("max-norm", 0.5), ("none", 1.0))]
else:
    cells = [make_cell(task, keep=0.5, epochs=3, hidden=(128, 128), optimizer=OptimizerConfig(name="adam", lr=1e-3))]
out = {{"mode": cbwr_in_effect()}}
for name, threads in (("one", 1), ("auto", "auto")):
    for stack in (True, False):
        done = executors.LocalExecutor(threads=threads, stack=stack).run(cells)
        out[f"{{name}} {{stack}}"] = [[figures(r), r.threads] for _, r, _ in done]
print(json.dumps(out))
"""


@pytest.mark.slow  # trains cells four times over in a subprocess
@pytest.mark.parametrize("task", ["digits", "diabetes"])
def test_figures_under_auto_are_those_of_one_thread_whatever_the_cores_offered(task):
    out = run_python(TRAIN.format(tests=TESTS, task=task), MKL_CBWR=STRICT)
    assert out["mode"] == STRICT
    for stack in (True, False):
        one, auto = out[f"one {stack}"], out[f"auto {stack}"]
        assert [figures for figures, _ in one] == [figures for figures, _ in auto], stack
        assert all(threads == 1 for _, threads in one)
    if task == "digits":  # in strict mode its probe agrees at two threads: auto really changed the count
        assert any(threads == 2 for _, threads in out["auto True"])


@pytest.mark.slow  # a subprocess
def test_the_probe_finds_what_a_small_product_does_at_two_threads():
    """On this project's AMD EPYC (MKL's AUTO branch names none) a 5-row batch into a 16-unit layer, one SGEMM in
    strict mode, gave other bits at two threads than at one: the probe must say so wherever the product does."""
    code = """\
import json, torch
import dropbench
from dropbench.opprobe import OpRecorder, differing
from dropbench.threads import cbwr_in_effect
x, w, b = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)) for shape in ((5, 64), (16, 64), (16,)))
outs = []
for count in (1, 2):
    torch.set_num_threads(count)
    outs.append(torch.nn.functional.linear(x, w, b))
torch.set_num_threads(1)
with OpRecorder() as recorder:
    torch.nn.functional.linear(x, w, b)
print(json.dumps({"mode": cbwr_in_effect(), "same": torch.equal(*outs), "probe": not differing(recorder.calls, 2)}))
"""
    out = run_python(code, MKL_CBWR=STRICT)
    assert out["mode"] == STRICT and out["probe"] == out["same"]


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
from dropbench.threads import cbwr_in_effect
print(json.dumps({{"env": os.environ.get("MKL_CBWR"), "mode": cbwr_in_effect()}}))
"""


@pytest.mark.slow  # subprocesses
def test_mkl_reads_its_mode_at_its_first_call_so_import_dropbench_after_torch_is_in_time():
    assert run_python(MODE.format(before="")) == {"env": STRICT, "mode": STRICT}  # torch imported, no product yet
    late = run_python(MODE.format(before="torch.ones(8, 8) @ torch.ones(8, 8)"))  # a product first: mode fixed
    assert late == {"env": STRICT, "mode": "OFF"}


@pytest.mark.slow  # a subprocess
def test_a_users_own_mkl_cbwr_wins():
    assert run_python(MODE.format(before=""), MKL_CBWR="COMPATIBLE") == {"env": "COMPATIBLE", "mode": "COMPATIBLE"}


def test_this_process_runs_mkl_in_strict_mode():
    """conftest imports dropbench before any product, as the CLI does: MKL is in strict mode here."""
    assert os.environ[CBWR_ENV] == STRICT and cbwr_in_effect() == STRICT
