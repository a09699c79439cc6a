"""Plugins (issue 18): tasks, model kinds and regularizers from entry points and module:object references, in the
registries the built-ins fill; the example package's model and regularizers trained, stacked where they declare
it and alone where not; the example package installed by pip and run through the CLI."""

import json
import subprocess
import sys
import tomllib
from dataclasses import replace

import pandas as pd
import pytest
import torch
from conftest import ROOT, make_cell, subprocess_env
from test_stacked import assert_same_figures, figures

from dropbench import plugins
from dropbench.catalogue import REGULARIZERS
from dropbench.cli import main
from dropbench.config import ModelConfig
from dropbench.data import load_task_data
from dropbench.data.registry import REGISTRY as TASKS
from dropbench.errors import UserError
from dropbench.models import REGISTRY as MODELS
from dropbench.models import build_model, model_class
from dropbench.regularizers import REGISTRY as REGULARIZER_REGISTRY
from dropbench.regularizers import Regularizer, parse_regularizer, regularizer_class
from dropbench.stacked import fit_stacked, stack_key
from dropbench.suite import load_suite
from dropbench.train import fit_cell

EXAMPLE = ROOT / "examples" / "dropbench-plugin-example"
PACKAGE = "dropbench_plugin_example"
RESMLP, ACTIVITY, CLIP = (
    f"{PACKAGE}.models:ResMLP",
    f"{PACKAGE}.regularizers:ActivityL1",
    f"{PACKAGE}.regularizers:WeightClip",
)


@pytest.fixture
def example(monkeypatch):
    """The example package importable (not installed): its objects are reachable as module:object references."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    plugins.refresh()
    yield
    plugins.refresh()


@pytest.fixture
def installed(example, tmp_path, monkeypatch):
    """The example package's entry points visible, as pip would leave them: a dist-info on sys.path."""
    dist = tmp_path / "dropbench_plugin_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dropbench-plugin-example\nVersion: 0.1.0\n")
    groups = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) for group, points in groups.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.refresh()
    yield
    plugins.refresh()


def test_the_built_ins_are_the_registries_own_entries():
    assert list(REGULARIZER_REGISTRY.builtins) == list(REGULARIZERS)
    assert list(MODELS.builtins) == ["mlp", "cnn"]
    assert "digits" in TASKS.builtins and TASKS.source("digits") == plugins.BUILTIN
    for name in REGULARIZERS:  # what --help reads from the catalogue is what the registered class says
        cls = regularizer_class(name)
        assert issubclass(cls, Regularizer) and cls.default_strength == REGULARIZERS[name].default_strength


def test_entry_points_are_found_listed_and_named_with_their_source(installed, capsys):
    assert "two-moons" in TASKS.names() and "resmlp" in MODELS.names()
    assert {"activity-l1", "weight-clip"} <= set(REGULARIZER_REGISTRY.names())
    assert REGULARIZER_REGISTRY.source("weight-clip") == "dropbench-plugin-example 0.1.0"
    assert main(["regularizers"]) == 0
    listing = capsys.readouterr().out
    assert "weight-clip" in listing and "dropbench-plugin-example 0.1.0" in listing
    assert main(["tasks"]) == 0
    assert "two-moons" in capsys.readouterr().out
    data = load_task_data("two-moons")
    assert data.name == "two-moons" and data.n_outputs == 2 and data.sizes() == (600, 200, 200)


def test_references_resolve_and_bad_ones_are_one_line(example):
    assert model_class(RESMLP).__name__ == "ResMLP" and regularizer_class(CLIP).stackable
    cases = [
        ("nowhere.models:Wide", r"model kind 'nowhere.models:Wide': cannot import nowhere.models: ModuleNotFound"),
        (f"{PACKAGE}.models:Narrow", r"module dropbench_plugin_example.models has no attribute 'Narrow'"),
        (f"{PACKAGE}.tasks:two_moons", r"a model kind is a subclass of dropbench.models.Network, got TaskInfo"),
    ]
    for reference, expected in cases:
        with pytest.raises(UserError, match=expected):
            model_class(reference)
    with pytest.raises(UserError, match=r"unknown regularizer 'l3' in 'l3'; known: none, l1, .*or module:object"):
        parse_regularizer("l3")


def test_a_broken_plugin_is_listed_with_its_problem_and_refused_when_used(installed, tmp_path, monkeypatch):
    dist = tmp_path / "broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dropbench.regularizers]\nshaky = not_a_module:Thing\nl2 = x:y\n")
    plugins.refresh()
    listed = {(e.name, e.source): e.problem for e in REGULARIZER_REGISTRY.entries()}
    assert "cannot load not_a_module:Thing: ModuleNotFoundError" in listed["shaky", "broken 1.0"]
    assert listed["l2", "broken 1.0"] == "ignored: a built-in regularizer has this name"
    assert regularizer_class("l2") is REGULARIZER_REGISTRY.builtins["l2"]
    with pytest.raises(UserError, match=r"regularizer 'shaky' \(broken 1.0\): cannot load"):
        regularizer_class("shaky")


def test_a_stackable_regularizer_may_use_step_hooks_only():
    class Loud(Regularizer):
        stackable = True

        def penalty(self, model):
            return None

    with pytest.raises(UserError, match="declares stackable = True but has penalty"):
        REGULARIZER_REGISTRY.check(Loud, "loud")


# ---------------------------------------------------------------- the example's model and regularizers


def plugin_cell(reg="none", keep=0.5, model=RESMLP, hidden=(16, 16), seed=0, strengths=None, epochs=3, **options):
    cell = make_cell("wine", reg=reg, keep=keep, hidden=hidden, seed=seed, strengths=strengths, epochs=epochs)
    config = ModelConfig(kind=model, hidden=tuple(hidden), options=tuple(sorted(options.items())))
    return replace(cell, task=replace(cell.task, model=config))


def test_a_plugin_model_gets_the_keep_rates_and_draws_its_masks_from_the_cell(example):
    model = build_model(ModelConfig(kind=RESMLP, hidden=(8, 8)), (5,), 3, (0.5, 0.8), 0.9)
    assert [m.keep for m in model.noise] == [0.5, 0.8] and model.input_dropout.keep == 0.9
    assert model.scale == 1.0  # the option's default
    data = load_task_data("wine")
    first, again = fit_cell(plugin_cell(epochs=1), data), fit_cell(plugin_cell(epochs=1), data)
    assert first.status == "ok" and first.val_loss == again.val_loss  # the cell's masks: the same figures
    other_seed = fit_cell(plugin_cell(seed=1, epochs=1), data)
    assert other_seed.val_loss != first.val_loss
    assert fit_cell(plugin_cell(scale=0.1, epochs=1), data).val_loss != first.val_loss


def test_plugin_model_options_and_dropout_kinds_are_checked_in_the_suite(example, tmp_path):
    def suite(model, top=""):
        path = tmp_path / "s.toml"
        path.write_text(f"{top}\nseeds = 1\nmodel = {model}\n[[task]]\nname = 'wine'\n")
        return path

    loaded = load_suite(str(suite(f"{{ kind = '{RESMLP}', hidden = [8], scale = 0.5 }}")))
    assert loaded.tasks[0].model.options == (("scale", 0.5),)
    assert loaded.tasks[0].model.label == f"{RESMLP}-8-scale=0.5"
    with pytest.raises(UserError, match=r"model: unknown key 'depth'.*allowed: kind, hidden, .*, scale"):
        load_suite(str(suite(f"{{ kind = '{RESMLP}', hidden = [8], depth = 3 }}")))
    with pytest.raises(UserError, match=r"model.scale: expected a number, text, true/false or a list of them"):
        load_suite(str(suite(f"{{ kind = '{RESMLP}', hidden = [8], scale = {{ a = 1 }} }}")))
    with pytest.raises(UserError, match=r"model: unknown key 'scale'"):
        load_suite(str(suite("{ kind = 'mlp', hidden = [8], scale = 3 }")))
    refused = r"dropout 'dropconnect': model kind '.*ResMLP' of task 'wine' implements bernoulli, gaussian"
    with pytest.raises(UserError, match=refused):
        load_suite(str(suite(f"{{ kind = '{RESMLP}', hidden = [8] }}", top="dropout = 'dropconnect'"))).cells()
    with pytest.raises(UserError, match=r"model.kind: unknown value 'rnn' \(did you mean 'cnn'\?\); allowed: mlp, cnn"):
        load_suite(str(suite("{ kind = 'rnn' }")))


def test_a_plugin_penalty_acts_through_the_objective_and_trains_alone(example):
    data = load_task_data("wine")
    plain, penalized = plugin_cell(model="mlp"), plugin_cell(ACTIVITY, model="mlp", strengths={ACTIVITY: 0.1})
    assert stack_key(plain) is not None and stack_key(penalized) is None  # not declared stackable: alone
    assert fit_cell(penalized, data).val_loss != fit_cell(plain, data).val_loss


def test_a_plugin_step_hook_declared_stackable_stacks_with_the_same_figures(example):
    """Beside built-ins and cells without it, a member's figures are bit for bit its stack of one's (what a run
    gives it whatever it is grouped with), and those of the single-cell trainer to the stacked tests' tolerance."""
    data = load_task_data("wine")
    cells = [
        plugin_cell(reg, keep=keep, model="mlp", strengths={CLIP: 0.05})
        for reg in ("none", CLIP, f"l2+{CLIP}", "max-norm")
        for keep in (0.5, 1.0)
    ]
    assert all(stack_key(c) == stack_key(cells[0]) for c in cells)  # one stack, plugin parts and built-ins mixed
    for cell, together in zip(cells, fit_stacked(cells, data)):
        (one,) = fit_stacked([cell], data)
        assert figures(together) == figures(one)
        assert_same_figures(together, fit_cell(cell, data))
    assert figures(fit_stacked([cells[2]], data)[0]) != figures(fit_stacked([cells[0]], data)[0])


def test_the_weight_clip_hook_bounds_every_weight(example):
    from dropbench.train import train_model

    model, result = train_model(plugin_cell(CLIP, model="mlp", strengths={CLIP: 0.05}), load_task_data("wine"))
    assert result.status == "ok"
    bound = torch.tensor(0.05, dtype=torch.float32).item()  # the strength as the weights' float32 holds it
    assert max(w.abs().max().item() for w in model.penalized_weights()) <= bound


def test_plugin_sources_are_in_the_run_s_provenance(installed, tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(
        "seeds = 1\nkeep_rates = [1.0]\nepochs = 1\nregularizers = ['none', 'weight-clip']\n"
        "model = { kind = 'resmlp', hidden = [8] }\n[[task]]\nname = 'two-moons'\n"
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "r.csv"), "--jobs", "1", "-q"]) == 0
    meta = json.loads((tmp_path / "r.json").read_text())
    source = "dropbench-plugin-example 0.1.0"
    assert meta["plugins"] == {
        "tasks": {"two-moons": source},
        "models": {"resmlp": source},
        "regularizers": {"weight-clip": source},
    }
    rows = pd.read_csv(tmp_path / "r.csv")
    assert rows["model"].tolist() == ["resmlp-8", "resmlp-8"] and (rows["status"] == "ok").all()


# ---------------------------------------------------------------- installed by pip, run by the CLI


@pytest.mark.slow
def test_the_example_package_installed_by_pip_runs_through_the_cli(tmp_path):
    pytest.importorskip("hatchling")
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(target)]
    done = subprocess.run([*install, str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    env = subprocess_env()
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{target}"  # importlib.metadata finds the dist-info there
    out = tmp_path / "plugin.csv"
    command = [sys.executable, "-m", "dropbench", "run", str(EXAMPLE / "suite.toml"), "--out", str(out)]
    done = subprocess.run([*command, "--epochs", "2", "--jobs", "2", "-q"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(out)
    assert len(rows) == 4 * 2 * 2 and (rows["status"] == "ok").all()
    assert set(rows["task"]) == {"two-moons"} and set(rows["model"]) == {"resmlp-32-32-scale=0.5"}
    assert set(rows["regularizer"]) == {"none", "activity-l1", "weight-clip", "l2+weight-clip"}
    assert set(rows.loc[rows["regularizer"] == "weight-clip", "strength"].astype(str)) == {"0.5"}
    listing = subprocess.run(
        [sys.executable, "-m", "dropbench", "regularizers"], env=env, capture_output=True, text=True
    ).stdout
    assert "activity-l1" in listing and "dropbench-plugin-example 0.1.0" in listing
    tasks = subprocess.run([sys.executable, "-m", "dropbench", "tasks"], env=env, capture_output=True, text=True)
    assert "two-moons" in tasks.stdout and "plugin: dropbench-plugin-example" in tasks.stdout


def test_a_plugin_regularizer_is_swept_and_tuned_like_a_built_in(installed, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        "seeds = 1\nkeep_rates = [1.0]\nregularizers = ['none', 'weight-clip', 'l2+weight-clip']\n"
        "[regularizer.weight-clip]\nstrength = [0.1, 1.0]\n[[task]]\nname = 'wine'\n"
    )
    names = [(c.regularizer.name, c.regularizer.strength_label) for c in load_suite(str(path)).cells()]
    assert names == [
        ("none", ""),
        ("weight-clip", "0.1"),
        ("weight-clip", "1"),
        ("l2+weight-clip", "0.0001+0.1"),
        ("l2+weight-clip", "0.0001+1"),
    ]
    path.write_text(
        "[tuning]\nmethods = ['none', 'weight-clip+dropout']\nbudget = 2\ntuning_seeds = 1\n"
        "[tuning.space]\nweight-clip = { log = [0.01, 1.0] }\nkeep = [0.5, 0.8]\n[[task]]\nname = 'wine'\n"
    )
    cells = load_suite(str(path)).cells()
    assert {c.regularizer.name for c in cells} == {"none", "weight-clip"} and len(cells) == 3
    path.write_text(path.read_text().replace("weight-clip = { log = [0.01, 1.0] }", "weight-clip = [0.0]"))
    with pytest.raises(UserError, match=r"tuning.space.weight-clip: strength must be > 0"):
        load_suite(str(path))


def test_a_plugin_task_whose_load_fails_is_one_line(example, tmp_path, monkeypatch):
    module = tmp_path / "failing_tasks.py"
    module.write_text(
        "from dropbench.data import SplitSpec, TaskInfo\n"
        "def load():\n    raise FileNotFoundError('no file /data/moons.csv')\n"
        "task = TaskInfo('x', 'classification', 'a task', 'nowhere', load, SplitSpec(0.2, 0.2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        UserError, match=r"task 'failing_tasks:task' \(nowhere\): load\(\) failed: FileNotFoundError: no"
    ):
        load_task_data("failing_tasks:task")


def test_a_subclass_of_mlp_stacks_only_when_it_says_so(monkeypatch):
    from dropbench.models import MLP

    class Inherits(MLP):
        pass

    class Declares(MLP):
        stackable = True

    monkeypatch.setitem(MODELS.builtins, "inherits", Inherits)
    monkeypatch.setitem(MODELS.builtins, "declares", Declares)
    cell = make_cell("wine")
    for kind, stacks in (("mlp", True), ("inherits", False), ("declares", True)):
        config = replace(cell.task.model, kind=kind)
        assert (stack_key(replace(cell, task=replace(cell.task, model=config))) is not None) == stacks, kind
