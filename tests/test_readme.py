"""The README's first two commands are what a new user runs and what CI runs: keep them true."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_install_and_run_then_install_and_test():
    run, test = readme_commands()[:2]
    assert "pip install torch==2.13.0" in run and run.endswith("dropbench run")
    assert "pip install torch==2.13.0" in test and test.endswith("pytest -q --slow")


def test_ci_runs_the_readme_test_command_verbatim():
    test = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()


@pytest.mark.slow
def test_every_result_the_readme_quotes_is_generated_from_the_committed_csvs():
    """docs/readme_results.py rewrites README.md's generated blocks and the committed report files from
    results/; a README (or report) that says anything the results do not is stale, and fails here."""
    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "docs" / "readme_results.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    text = (ROOT / "README.md").read_text()
    assert set(re.findall(r"<!-- generated: ([\w-]+) -->", text)) == set(generator.BLOCKS)
    assert generator.main(["--check"]) == 0
