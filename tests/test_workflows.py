"""The GitHub workflows: the example benchmark job, run here step by step; both files against GitHub's schema.

`run_workflow` plays a workflow run as GitHub Actions would on one machine: jobs in the order their `needs` give,
a matrix job once per entry, each in a fresh workspace, every `run:` step in bash -eo pipefail (the workflow's
`shell: bash`) with GitHub's variables pointing at local files, and `${{ }}` expressions replaced from a table
that knows only what these workflows use (an expression it does not know fails the test, so the workflow cannot
grow past what is tested). The actions it uses are played by copying folders: checkout (this checkout's tracked
files), setup-python (nothing: this interpreter), cache, upload-artifact and download-artifact (a folder per run
and artifact). `gh`, which finds the last successful run and downloads its artifact, is a stand-in that answers
from those folders. Steps that pip-install are skipped: this environment has torch and dropbench already (the
`dropbench` on PATH runs this checkout), and nothing here may reach the network.
"""

import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, subprocess_env

EXAMPLE = ROOT / "examples" / "benchmark-workflow.yml"
CI = ROOT / ".github" / "workflows" / "ci.yml"
README_TEST_COMMAND_INDEX = 1  # the README's second bash block (tests/test_readme.py)

# 1 task × 2 keep rates × 3 seeds of 2 epochs on a 16-unit net: 6 cells, 2 per shard, a second or two each.
TINY_SUITE = """
name = "tiny"
seeds = 3
keep_rates = [0.5, 1.0]
regularizers = ["none"]
epochs = 2
batch_size = 64
model = { kind = "mlp", hidden = [16] }
optimizer = { name = "sgd", lr = 0.05, momentum = 0.9 }

[[task]]
name = "wine"
"""

# gh, as far as the workflow uses it: `gh run list ... --json databaseId --jq ...` prints the id of the last
# successful run (or nothing), `gh run download ID --name NAME --dir DIR` copies that run's artifact.
FAKE_GH = """
import json, os, shutil, sys
from pathlib import Path

args = sys.argv[1:]
state = json.loads(Path(os.environ["FAKE_GH_STATE"]).read_text())
def option(name):
    return args[args.index(name) + 1]
if args[:2] == ["run", "list"]:
    assert option("--status") == "success" and option("--limit") == "1" and option("--json") == "databaseId", args
    assert option("--workflow") == state["workflow"] and option("--repo") == state["repository"], args
    done = [run["id"] for run in state["runs"] if run["conclusion"] == "success"]
    print(max(done) if done else "")
elif args[:2] == ["run", "download"]:
    artifact = Path(state["store"]) / args[2] / option("--name")
    if not artifact.is_dir():
        sys.exit(f"no artifact {option('--name')} in run {args[2]}")
    shutil.copytree(artifact, Path(option("--dir")), dirs_exist_ok=True)
else:
    sys.exit(f"fake gh: not supported: {args}")
"""


@dataclass
class RunResult:
    conclusion: str  # "success" or "failure"
    summary: str  # every step's $GITHUB_STEP_SUMMARY, in order
    skipped: list[str] = field(default_factory=list)  # the `run:` steps not run (the pip installs)
    log: list[str] = field(default_factory=list)


class Actions:
    """Workflow runs of one repository on this machine: the runs so far, their artifacts and the cache."""

    def __init__(self, root: Path, workflow: Path, env: dict[str, str]) -> None:
        self.root, self.env_overrides = root, env
        self.workflow = yaml.safe_load(workflow.read_text())
        self.store, self.cache = root / "artifacts", root / "cache"
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self._tool("dropbench", f'#!/bin/sh\nexec "{sys.executable}" -m dropbench "$@"\n')
        self._tool("gh", f"#!{sys.executable}\n{FAKE_GH}")
        self.runs: list[dict] = []
        self.jobs: dict[tuple[int, str], tuple[bool, list[str]]] = {}  # (run, job): its outcome, its artifacts

    def _tool(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    def run(self, reuse: dict[str, int] | None = None) -> RunResult:
        """Play the workflow once. `reuse` maps a job to an earlier run: the job is not played again but takes
        that run's outcome and artifacts, as the same steps on the same inputs would give them again."""
        run_id, reuse = len(self.runs) + 1, reuse or {}
        result = RunResult("success", "")
        done: dict[str, bool] = {}
        for name in job_order(self.workflow["jobs"]):
            job = self.workflow["jobs"][name]
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            upstream_ok = all(done[n] for n in needs)
            if not condition(job.get("if"), upstream_ok):
                done[name] = False
                continue
            if name in reuse:
                done[name] = self._reuse(name, reuse[name], run_id)
                continue
            before = self._artifacts(run_id)
            entries = matrix_entries(job)
            done[name] = all(
                self._job(run_id, name, job, entry, i, len(entries), result) for i, entry in enumerate(entries)
            )
            self.jobs[(run_id, name)] = (done[name], sorted(self._artifacts(run_id) - before))
        result.conclusion = "success" if all(done.values()) else "failure"
        self.runs.append({"id": run_id, "conclusion": result.conclusion})
        return result

    def _artifacts(self, run_id: int) -> set[str]:
        folder = self.store / str(run_id)
        return {path.name for path in folder.iterdir()} if folder.is_dir() else set()

    def _reuse(self, name: str, earlier: int, run_id: int) -> bool:
        ok, artifacts = self.jobs[(earlier, name)]
        for artifact in artifacts:
            shutil.copytree(self.store / str(earlier) / artifact, self.store / str(run_id) / artifact)
        self.jobs[(run_id, name)] = (ok, artifacts)
        return ok

    def _job(self, run_id: int, name: str, job: dict, entry: dict, index: int, total: int, result: RunResult) -> bool:
        workspace = self.root / f"run-{run_id}" / f"{name}-{index + 1}"
        workspace.mkdir(parents=True)
        context = {
            "github.workspace": str(workspace),
            "github.token": "token-of-this-test",
            "strategy.job-total": str(total),
            "strategy.job-index": str(index),
            **{f"matrix.{k}": str(v) for k, v in entry.items()},
        }
        env = {}
        for key, value in {**self.workflow.get("env", {}), **job.get("env", {})}.items():
            env[key] = self.env_overrides.get(key, substitute(str(value), context, env))
        context.update({f"env.{k}": v for k, v in env.items()})
        ok, post = True, []
        for number, step in enumerate(job["steps"]):
            if not condition(step.get("if"), ok):
                continue
            step_env = {k: substitute(str(v), context, env) for k, v in step.get("env", {}).items()}
            if "uses" in step:
                post += self._action(step, workspace, context, env, run_id)
                continue
            script = substitute(step["run"], context, env)
            if re.search(r"\bpip install\b", script):
                result.skipped.append(step.get("name", script))
                continue
            summary = workspace.parent / f"summary-{name}-{index}-{number}.md"
            code = self._shell(script, workspace, {**env, **step_env}, summary, run_id, result)
            result.summary += summary.read_text() if summary.exists() else ""
            ok = ok and code == 0
        for finish in post:
            finish(ok)
        return ok

    def _shell(self, script: str, workspace: Path, env: dict, summary: Path, run_id: int, result: RunResult) -> int:
        files = {name: workspace.parent / f"{name.lower()}-{run_id}" for name in ("GITHUB_OUTPUT", "GITHUB_ENV")}
        state = self.root / "gh-state.json"
        state.write_text(
            json.dumps(
                {
                    "runs": self.runs,
                    "store": str(self.store),
                    "workflow": self.workflow["name"],
                    "repository": "you/dropbench",
                }
            )
        )
        variables = {
            **subprocess_env(),
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_REPOSITORY": "you/dropbench",
            "GITHUB_WORKFLOW": self.workflow["name"],
            "GITHUB_REF_NAME": "main",
            "GITHUB_RUN_ID": str(run_id),
            "RUNNER_TEMP": str(workspace.parent),
            "DROPBENCH_OFFLINE": "1",  # the tiny suite's data ships with scikit-learn: nothing to fetch, ever
            "FAKE_GH_STATE": str(state),
            **{name: str(path) for name, path in files.items()},
            **env,
        }
        process = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=workspace,
            env=variables,
            capture_output=True,
            text=True,
            timeout=300,
        )
        result.log.append(f"$ {script}\n{process.stdout}{process.stderr}[exit {process.returncode}]")
        return process.returncode

    def _action(self, step: dict, workspace: Path, context: dict, env: dict, run_id: int) -> list:
        """Play a `uses:` step; returns what runs when the job ends (a cache's save)."""
        action = step["uses"].split("@")[0]
        given = {k: substitute(str(v), context, env) for k, v in step.get("with", {}).items()}
        if action == "actions/checkout":
            tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
            for name in filter(None, tracked.stdout.split("\0")):
                if (ROOT / name).is_file():
                    (workspace / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / name, workspace / name)
        elif action == "actions/setup-python":
            pass  # this interpreter: the workflow's python-version is 3.11, as this project requires
        elif action == "actions/cache":
            return [self._cache(given, workspace)]
        elif action == "actions/upload-artifact":
            target = self.store / str(run_id) / given["name"]
            for path in sorted(workspace.glob(given["path"])):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)  # one folder's files: the artifact holds them at its root
        elif action == "actions/download-artifact":
            for artifact in sorted((self.store / str(run_id)).glob(given.get("pattern", "*"))):
                merge = given.get("merge-multiple") == "True" or given.get("merge-multiple") == "true"
                target = workspace / given["path"] / ("" if merge else artifact.name)
                shutil.copytree(artifact, target, dirs_exist_ok=True)
        else:
            raise AssertionError(f"the test does not know how to play {step['uses']}")
        return []

    def _cache(self, given: dict, workspace: Path):
        """actions/cache: restore the key's folder now; save it when the job succeeded and the key missed."""
        saved = self.cache / re.sub(r"[^\w.-]", "_", given["key"])
        path = Path(given["path"])
        path = path if path.is_absolute() else workspace / path
        hit = saved.is_dir()
        if hit:
            shutil.copytree(saved, path, dirs_exist_ok=True)

        def save(ok: bool) -> None:
            if ok and not hit and path.is_dir():
                shutil.copytree(path, saved)

        return save


def substitute(text: str, context: dict[str, str], env: dict[str, str]) -> str:
    """`${{ name }}` replaced from `context` and the env known so far; an expression outside them fails the test."""

    def value(match: re.Match) -> str:
        name = match.group(1).strip()
        if name.startswith("env.") and name[4:] in env:
            return env[name[4:]]
        if name not in context:
            raise AssertionError(f"the test does not know the expression {name!r}")
        return context[name]

    return re.sub(r"\$\{\{(.+?)\}\}", value, text)


def condition(expression: str | None, ok: bool) -> bool:
    """A job's or step's `if:` (the status functions only)."""
    expression = (expression or "success()").strip()
    known = {"success()": ok, "always()": True, "failure()": not ok}
    if expression not in known:
        raise AssertionError(f"the test does not know the condition {expression!r}")
    return known[expression]


def matrix_entries(job: dict) -> list[dict]:
    matrix = job.get("strategy", {}).get("matrix")
    if not matrix:
        return [{}]
    assert set(matrix) - {"include", "exclude"} == set(matrix), "include/exclude are not played"
    names = list(matrix)
    return [dict(zip(names, values)) for values in itertools.product(*(matrix[n] for n in names))]


def job_order(jobs: dict) -> list[str]:
    """The jobs, each after the ones it needs."""
    order: list[str] = []
    while len(order) < len(jobs):
        for name, job in jobs.items():
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            if name not in order and all(n in order for n in needs):
                order.append(name)
    return order


def logs(result: RunResult) -> str:
    return "\n".join(result.log)


@pytest.mark.slow  # two workflow runs, 8 dropbench processes (3 of them train), mostly importing torch
def test_the_example_workflow_runs_green_twice_the_second_time_against_the_first(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(textwrap.dedent(TINY_SUITE))
    actions = Actions(tmp_path / "actions", EXAMPLE, {"SUITE": str(suite)})

    first = actions.run()
    assert first.conclusion == "success", logs(first)
    # Skipped: the pip installs alone, once in each of the three shard jobs and the merge job.
    assert len(first.skipped) == 4 and all(name.startswith("Install") for name in first.skipped), first.skipped
    assert "### wine · gap_acc (pp) · mean ± 95% CI over 3 seeds" in first.summary
    assert "No baseline yet" in first.summary and "Verdict" not in first.summary
    merged = (tmp_path / "actions" / "artifacts" / "1" / "benchmark-results").glob("*")
    assert sorted(p.name for p in merged) == ["benchmark.csv", "benchmark.epochs.csv", "benchmark.json"]
    assert "skipped, the per-epoch sidecar of shard-1.csv" in logs(first)

    # The second run's shard jobs would run the first's commands on the same suite and seeds, and a run's figures
    # are the same for the same seeds (tests/test_cli.py checks it): they take the first run's outcome and
    # artifacts instead of training again, which saves three of the test's six training processes. What the
    # second run is for, the merge job finding the last successful run, fetching its results and comparing, is
    # all played.
    second = actions.run(reuse={"shard": 1})
    assert second.conclusion == "success", logs(second)
    artifacts = sorted(p.name for p in (tmp_path / "actions" / "artifacts" / "2").iterdir())
    assert artifacts == ["benchmark-results", "shard-1", "shard-2", "shard-3"]
    assert "### wine · gap_acc (pp)" in second.summary and "No baseline yet" not in second.summary
    assert "## Against the last successful run" in second.summary
    assert "**Verdict: no regression** — 0 of 2 configurations worse in test_acc beyond 0.5 pp" in second.summary
    assert "2 no change; exit 0" in second.summary


@pytest.mark.slow  # check-jsonschema starts a process per file
@pytest.mark.parametrize("workflow", [EXAMPLE, CI], ids=["example", "ci"])
def test_the_workflows_are_valid_against_githubs_schema(workflow):
    """check-jsonschema carries GitHub's published workflow schema (SchemaStore's github-workflow.json), so this
    runs offline."""
    checker = Path(sys.executable).with_name("check-jsonschema")
    command = [str(checker)] if checker.exists() else [sys.executable, "-m", "check_jsonschema"]
    done = subprocess.run(
        [*command, "--builtin-schema", "vendor.github-workflows", str(workflow)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_the_readme_test_command_with_the_system_packages_of_ci_run():
    from test_readme import readme_commands

    steps = yaml.safe_load(CI.read_text())["jobs"]["test"]["steps"]
    scripts = [step["run"].strip() for step in steps if "run" in step]
    assert scripts[-1] == readme_commands()[README_TEST_COMMAND_INDEX]
    triggers = yaml.safe_load(CI.read_text())[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"push", "pull_request"}
    ci_run = (ROOT / ".ci" / "run").read_text()
    for package in ("dataset-fashion-mnist", "chromium", "libreoffice-calc-nogui"):
        assert package in ci_run and package in scripts[0]


def test_the_example_pins_the_torch_the_readme_installs_from_the_cpu_index():
    workflow = EXAMPLE.read_text()
    installs = re.findall(r"pip install torch\S*.*", workflow)
    assert installs and all("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in i for i in installs)
    assert "torch==2.13.0" in (ROOT / "README.md").read_text()
    assert not (ROOT / ".github" / "workflows" / "benchmark.yml").exists()  # an example, not this repository's job
