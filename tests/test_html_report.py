"""The HTML page (report, compare, history) as a reader gets it: self-contained, accessible, and rendered by a real
browser. The browser test runs Debian's chromium headless (`apt-get install -y chromium`; .ci/run installs it):
it loads the page from file://, dumps the DOM after load with a probe that writes what rendered into it, checks
the console stayed silent, and takes a screenshot. Without chromium it skips and says so."""

import html
import html.parser
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from test_verdicts import grid_rows

from dropbench.cli import main
from dropbench.report import exporters
from dropbench.report.compare import compare
from dropbench.report.data import build_report

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "results" / "quick" / "quick.csv"  # a real run, with its epochs sidecar and its metadata
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)"
)
BROWSER_SECONDS = 120
# Written into the page (its policy widened to let it run) to report what rendered: the DOM dump carries it out.
PROBE = """<script>
addEventListener("load", () => {
  const images = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, done: i.complete, alt: i.alt}));
  const tables = [...document.querySelectorAll("table")].map(t => ({
    caption: t.caption ? t.caption.textContent : "",
    rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
    columnHeads: t.querySelectorAll("thead th[scope=col]").length,
    rowHeads: t.querySelectorAll("tbody th[scope=row]").length,
  }));
  const overflow = document.documentElement.scrollWidth > document.documentElement.clientWidth;
  document.body.dataset.probe = JSON.stringify({images, tables, overflow, title: document.title});
});
</script>"""


def page_of(args, capsys, expected_code=0):
    assert main(args) == expected_code
    return capsys.readouterr().out


def earlier_copy(tmp_path):
    """The committed run as if it had run a week earlier from another commit: the same cells, other provenance."""
    rows = pd.read_csv(QUICK, dtype=str, keep_default_na=False)
    started = pd.to_datetime(rows["started_at"]) - pd.Timedelta(days=7)
    rows["started_at"] = started.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    rows["git_commit"] = "0123456789abcdef0123456789abcdef01234567"
    path = tmp_path / "last-week.csv"
    rows.to_csv(path, index=False)
    return path


class _Body(html.parser.HTMLParser):
    """The attributes of <body> in a DOM dump."""

    def __init__(self):
        super().__init__()
        self.attributes = {}

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.attributes = dict(attrs)


def chromium(tmp_path, *args):
    """Headless chromium with a profile of its own; (stdout, console lines it logged)."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # as root in a container; the page runs no script of its own
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console


def rendered(tmp_path, page: str, name: str) -> dict:
    """What the browser rendered of `page`: the probe's findings after load. The console must stay silent: the
    page runs no script, so any message is an error (a blocked request, a broken image)."""
    with_probe = page.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'")
    path = tmp_path / f"{name}.probe.html"
    path.write_text(with_probe.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom, console = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=10000", path.as_uri())
    assert console == []
    body = _Body()
    body.feed(dom)
    return json.loads(body.attributes["data-probe"])


def screenshot(tmp_path, page: str, name: str) -> np.ndarray:
    """The page itself (no probe) in a 1280 × 2000 window: a PNG, and the console silent."""
    path, shot = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
    path.write_text(page, encoding="utf-8")
    _, console = chromium(
        tmp_path, "--window-size=1280,2000", "--hide-scrollbars", f"--screenshot={shot}", path.as_uri()
    )
    assert console == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(shot)


def assert_not_blank(image: np.ndarray) -> None:
    pixels = image[..., :3].reshape(-1, 3)
    assert image.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05 and len(np.unique((pixels * 255).astype(np.uint8), axis=0)) > 50


def assert_self_contained(page: str) -> None:
    """Every address in the page is inside it: data: URLs or fragments; and its policy forbids the rest."""
    assert re.findall(r'(?:src|href)="(?!data:|#)([^"]*)"', page) == []
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert '<html lang="en">' in page and "<title>" in page


@pytest.mark.slow  # draws every figure of two tasks
@needs_chromium
def test_the_report_page_renders_its_tables_figures_and_verdicts_in_a_browser(tmp_path, capsys):
    last_week = earlier_copy(tmp_path)
    args = ["report", str(QUICK), "--task", "synthetic,diabetes", "--paired", "--compare", str(last_week)]
    page = page_of([*args, "--history", str(last_week), "--format", "html"], capsys)
    assert_self_contained(page)
    found = rendered(tmp_path, page, "report")
    assert found["title"] == "dropbench report · " + f"{QUICK} · metric gap · exact sign-flip test, Holm, α = 0.05"
    assert not found["overflow"]  # wide tables scroll in their own box; the page does not
    # Keep rate, heatmap and learning curves of both tasks, and the history's trends: each decoded and drawn.
    assert len(found["images"]) == 7
    assert all(i["done"] and i["w"] > 300 and i["h"] > 200 and len(i["alt"]) > 40 for i in found["images"])
    tables = {t["caption"]: t for t in found["tables"]}
    grid = tables["synthetic · gap_acc (pp) · mean ± 95% CI over 9 seeds"]
    assert (grid["rows"], grid["columnHeads"], grid["rowHeads"]) == (4, 3, 4)  # regularizers × keep rates
    assert tables["diabetes · gap_loss · mean ± 95% CI over 9 seeds"]["rows"] == 4
    (compared,) = [t for c, t in tables.items() if c.startswith("compare · test_acc")]
    assert compared["rows"] == 8  # synthetic's configurations (diabetes has no accuracy)
    assert tables["runs, oldest first"]["rows"] == 2
    assert all(t["columnHeads"] + t["rowHeads"] > 0 for t in found["tables"])  # every table has headers
    for text in ("Verdict: no regression", "▲", "◆", "★", "provenance", "b1bb4b844f36307ff667d7332d56e5954e50bc3e"):
        assert text in page
    assert_not_blank(screenshot(tmp_path, page, "report"))


@pytest.mark.slow  # draws the trend figure
@needs_chromium
def test_the_history_and_compare_pages_render_in_a_browser(tmp_path, capsys):
    last_week = earlier_copy(tmp_path)
    history_page = page_of(["history", str(QUICK), str(last_week), "--format", "html"], capsys)
    assert_self_contained(history_page)
    found = rendered(tmp_path, history_page, "history")
    assert len(found["images"]) == 1 and found["images"][0]["w"] > 600
    assert sum(t["caption"].endswith("per run, oldest first") for t in found["tables"]) == 3  # accuracy tasks
    assert "Verdict: no regression" in history_page and "commit 0123456 → b1bb4b8-dirty" in history_page
    compare_page = page_of(["compare", str(last_week), str(QUICK), "--format", "html"], capsys)
    assert_self_contained(compare_page)
    found = rendered(tmp_path, compare_page, "compare")
    assert found["images"] == [] and found["tables"][0]["rows"] == 24
    assert_not_blank(screenshot(tmp_path, compare_page, "compare"))


def test_the_page_escapes_what_the_results_hold():
    """Text from a results file is text on the page, never markup."""
    frame = pd.DataFrame(grid_rows(task="<script>alert(1)</script>", seeds=3))
    page = exporters.get("html").export(build_report(frame, best=True))  # the best table: no figures to draw
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_comparison_page_ends_its_table_with_the_verdicts_classed_for_their_colour():
    frame = pd.DataFrame(grid_rows(seeds=4))
    page = exporters.get("html").export_comparison(compare(frame, frame))
    assert_self_contained(page)
    assert '<td class="num no-change">no change</td>' in page
    assert '<p class="verdict no-regression"><strong>Verdict: no regression</strong>' in page


@pytest.mark.slow  # draws each task's tuned and tuning figures
def test_the_tuned_report_page_holds_each_methods_choice_and_its_figures_as_plot_draws_them():
    from test_tuning_report import tuned_frame

    from dropbench.report.text import tuned_tasks, tuned_title

    frame = tuned_frame()
    report = build_report(frame, tuned=True)
    page = exporters.get("html").export(report)
    assert_self_contained(page)
    tasks = tuned_tasks(report.tuned)
    assert all(f"<caption>{html.escape(tuned_title(rows))}</caption>" in page for _, rows in tasks)
    # plot's figures of a tuned task (no epochs here: no learning curves): each method's choice, every trial.
    assert page.count('<img src="data:image/png;base64,') == 2 * len(tasks) == 4
    for task, _ in tasks:
        assert f'alt="{task}: test ' in page and f'alt="{task}: validation figure of every tuning trial' in page
    assert "tuned methods, chosen on validation" in page and "baseline ◆" not in page  # the mark has its title
    # Without --tuned the tables pool the trials, but the figures never do: the same tuned figures, no keep rate.
    pooled = exporters.get("html").export(build_report(frame))
    assert pooled.count('<img src="data:image/png;base64,') == 4 and "against the hidden keep rate" not in pooled
