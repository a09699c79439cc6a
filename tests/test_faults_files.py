"""Faults around files, from issue 14: foreign files beside --out, concurrent runs, paths that are not
files, read-only places, a full disk, interrupts mid-write, junk and malformed inputs to merge, report,
compare and plot.

Each case runs through the real CLI and checks the same three promises: the exit code, exactly one line on
stderr starting `dropbench: error:` (never a traceback), and every file that was there before is
byte-identical afterwards unless it is the run's own. Cases that could print a traceback from outside
main() or hang, and the kill cases, run in a subprocess; the rest call main() in this process (faster).
"""

import csv
import errno
import fcntl
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import subprocess_env

import dropbench.files as files
from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.results import (
    COLUMNS,
    CsvTable,
    ResultStore,
    format_value,
    read_results,
    read_text,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--task", "wine", "--reg", "none", "--keep", "1.0", "--seeds", "1", "--epochs", "1", "--jobs", "1", "-q"]
TWO_SEEDS = ["--task", "wine", "--reg", "none", "--keep", "1.0", "--seeds", "2", "--epochs", "1", "--jobs", "1", "-q"]


# ---------------------------------------------------------------- helpers


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def assert_untouched(before: dict[Path, bytes], own: tuple[Path, ...] = ()) -> None:
    """Every file that existed before is byte-identical, but for the run's own files."""
    changed = [str(path) for path, data in before.items() if path not in own and path.read_bytes() != data]
    assert not changed, f"changed: {changed}"


def assert_one_error_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropbench: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def cli_main(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def cli_process(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a process of its own, entered through `entry()`."""
    return subprocess.run(_command(*args), cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _command(*args: str) -> list[str]:
    launch = "import sys; from dropbench.cli import entry; sys.argv[0] = 'dropbench'; entry()"
    return [sys.executable, "-c", launch, *map(str, args)]


def _env(**extra: str) -> dict[str, str]:
    return subprocess_env(**extra)


@pytest.mark.slow
def test_the_write_pause_hook_reaches_a_dropbench_subprocess(tmp_path):
    """The tests that land a kill or a Ctrl-C in the middle of a line rely on tests/hooks/sitecustomize.py: in a
    subprocess, an append is written in two halves with the pause between; an atomic rewrite is not paused."""
    code = (
        "import sys, time; from pathlib import Path; from dropbench import files; path = Path(sys.argv[1]); "
        "t = time.monotonic(); files.append_bytes(path, b'a,b\\n'); appended = time.monotonic() - t; "
        "t = time.monotonic(); files.replace_atomically(path, b'a,b\\n'); print(appended, time.monotonic() - t)"
    )
    paused = _env(DROPBENCH_TEST_WRITE_PAUSE="0.5")
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.csv")], env=paused, capture_output=True, text=True, check=True
    )
    appended, replaced = map(float, done.stdout.split())
    assert appended >= 0.5 > replaced


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-cell run (r.csv, r.epochs.csv, r.json), made once and copied into each test."""
    out = tmp_path_factory.mktemp("finished") / "r.csv"
    assert main(["run", *TINY, "--out", str(out)]) == 0
    return out


def copy_run(finished: Path, folder: Path, stem: str = "r") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".csv", ".epochs.csv", ".json"):
        shutil.copy(finished.with_name(f"r{suffix}"), folder / f"{stem}{suffix}")
    return folder / f"{stem}.csv"


def edited(source: Path, target: Path, edit) -> Path:
    """A copy of a results CSV with `edit(rows)` applied to its rows of text (lists of fields)."""
    with open(source, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    edit(rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    target.write_text(buffer.getvalue(), encoding="utf-8")
    return target


def set_field(column: str, value: str):
    def edit(rows):
        for row in rows:
            row[COLUMNS.index(column)] = value

    return edit


# ---------------------------------------------------------------- 1. files beside --out that dropbench did not write


@pytest.mark.parametrize(
    "name, content",
    [
        ("package.json", b'{"name": "my-project", "version": "1.0.0"}\n'),  # a project's own package.json
        ("package.json", b"[1, 2, 3]\n"),
        ("package.json", b"not json at all\n"),
        ("package.epochs.csv", b"cell_id,note\nabc,keep me\n"),  # a user's notes, not curves
        ("package.csv", b"name,value\nx,1\n"),
    ],
)
@pytest.mark.parametrize("fresh", [False, True])
def test_a_file_beside_out_that_dropbench_did_not_write_is_left_alone(tmp_path, capsys, name, content, fresh):
    (tmp_path / name).write_bytes(content)
    before = snapshot(tmp_path)
    args = ["run", *TINY, "--out", tmp_path / "package.csv", *(["--fresh"] if fresh else [])]
    code, err = cli_main(capsys, *args)
    assert code == 2
    assert_one_error_line(err, str(tmp_path / name))
    assert_untouched(before)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [name]


def test_a_sidecar_that_is_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "r.json").mkdir()
    code, err = cli_main(capsys, "run", *TINY, "--out", tmp_path / "r.csv")
    assert code == 2
    assert_one_error_line(err, "r.json", "not a regular file")
    assert not (tmp_path / "r.csv").exists()


def test_dropbench_files_of_an_earlier_schema_may_still_be_set_aside_with_fresh(tmp_path, capsys, finished):
    out = copy_run(finished, tmp_path)
    old = edited(out, out, lambda rows: None)
    old.write_text(old.read_text().replace(",schema_version", ""))  # as a file of an earlier schema
    code, _ = cli_main(capsys, "run", *TINY, "--out", out)
    assert code == 2  # resuming into it is refused ...
    assert cli_main(capsys, "run", *TINY, "--out", out, "--fresh")[0] == 0  # ... moving it aside is not
    assert len(list(tmp_path.glob("r.*.bak.csv"))) == 1


def test_fresh_twice_in_one_second_keeps_both_backups(tmp_path):
    store = ResultStore(tmp_path / "r.csv")
    first, second = b"cell_id,suite\n1,a\n", b"cell_id,suite\n2,b\n"
    for data in (first, second):
        store.csv_path.write_bytes(data)
        store.set_aside()
    assert sorted(p.read_bytes() for p in tmp_path.glob("r.*.bak.csv")) == sorted([first, second])


# ---------------------------------------------------------------- 2 and 11. one run per file; never a hang


@pytest.mark.slow
def test_a_second_run_into_the_same_file_is_refused_while_the_first_goes_on(tmp_path, capsys):
    out = tmp_path / "r.csv"
    args = [
        "run",
        "--task",
        "wine",
        "--reg",
        "none",
        "--keep",
        "1.0",
        "--seeds",
        "3",
        "--epochs",
        "1",
        "--jobs",
        "1",
        "-q",
        "--out",
        out,
    ]
    # Each write takes a second, so the first run is still going when the second starts.
    first = subprocess.Popen(
        _command(*args),
        env=_env(DROPBENCH_TEST_WRITE_PAUSE="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / ".r.csv.run.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.1)
    code, err = cli_main(capsys, *args)
    assert code == 2
    assert_one_error_line(err, "another dropbench run", f"PID {first.pid}")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    frame = pd.read_csv(out)
    assert len(frame) == 3 and frame["cell_id"].is_unique  # each cell once, by the first run
    assert len(pd.read_csv(tmp_path / "r.epochs.csv")) == 3


def test_the_run_lock_names_its_holder_and_is_free_again_after(tmp_path):
    out = tmp_path / "r.csv"
    holder = f"another dropbench run \\(PID {os.getpid()}\\)"
    with files.run_lock(out), pytest.raises(UserError, match=holder), files.run_lock(out):
        pass
    with files.run_lock(out):  # released: a later run may go on
        pass


@pytest.mark.slow
@pytest.mark.parametrize("target", ["/dev/null", "/proc/version"])
def test_an_out_that_is_not_a_regular_file_is_refused_at_once(tmp_path, target):
    if not Path(target).exists():
        pytest.skip(f"no {target} here")
    before = Path(target).read_bytes() if target == "/proc/version" else b""
    done = cli_process("run", *TINY, "--out", target, cwd=tmp_path, timeout=120)  # /proc/version used to hang
    assert done.returncode == 2
    assert_one_error_line(done.stderr)
    if target == "/proc/version":
        assert Path(target).read_bytes() == before


def test_an_out_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    code, err = cli_main(capsys, "run", *TINY, "--out", tmp_path / "notes.txt" / "sub" / "r.csv")
    assert code == 2
    assert_one_error_line(err, "notes.txt is a file, not a folder")
    assert_untouched(before)


def test_an_append_lock_that_cannot_be_made_is_an_error_not_a_wait(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    started = time.monotonic()
    with pytest.raises(UserError, match="cannot write in"):
        CsvTable(blocked / "t.csv", ("a",)).append([{"a": 1}])
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- 10. read-only places and a full disk


def _refuse_opening(monkeypatch, folder: Path, error: int, only_new: bool = False) -> None:
    """os.open of files in `folder` for writing fails as it would in a read-only place (tests run as root,
    for whom chmod changes nothing)."""
    real = os.open

    def fake(path, flags, *args, **kwargs):
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if writing and Path(path).parent == folder and (not only_new or not Path(path).exists()):
            raise OSError(error, os.strerror(error), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", fake)


def test_a_read_only_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    _refuse_opening(monkeypatch, folder, errno.EACCES)
    code, err = cli_main(capsys, "run", *TINY, "--out", folder / "r.csv")
    assert code == 2
    assert_one_error_line(err, "cannot write in", "Permission denied")
    assert list(folder.iterdir()) == []


def test_a_read_only_folder_on_resume_changes_nothing(tmp_path, capsys, monkeypatch, finished):
    out = copy_run(finished, tmp_path / "ro")
    before = snapshot(tmp_path)
    _refuse_opening(monkeypatch, out.parent, errno.EACCES, only_new=True)
    code, err = cli_main(capsys, "run", *TWO_SEEDS, "--out", out)
    assert code == 2
    assert_one_error_line(err, "Permission denied")
    assert_untouched(before)


def test_a_write_refused_on_resume_changes_no_row(tmp_path, capsys, monkeypatch, finished):
    out = copy_run(finished, tmp_path)
    before = snapshot(tmp_path)
    real = os.open

    def read_only_results(path, flags, *args, **kwargs):
        if Path(path).name in ("r.csv", "r.epochs.csv") and flags & os.O_APPEND:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", read_only_results)
    code, err = cli_main(capsys, "run", *TWO_SEEDS, "--out", out)
    assert code == 2
    assert_one_error_line(err, "cannot write", "r.epochs.csv", "Permission denied")
    assert_untouched(before, own=(out.with_suffix(".json"),))


def test_a_read_only_results_file_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, finished):
    out = copy_run(finished, tmp_path)
    before = snapshot(tmp_path)
    real = os.access
    monkeypatch.setattr(
        files.os, "access", lambda path, mode: (Path(path) != out or not mode & os.W_OK) and real(path, mode)
    )
    code, err = cli_main(capsys, "run", *TWO_SEEDS, "--out", out)
    assert code == 2
    assert_one_error_line(err, str(out), "read-only")
    assert_untouched(before)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_folder_is_one_line(tmp_path, capsys, finished):
    out = copy_run(finished, tmp_path / "ro")
    before = snapshot(tmp_path)
    out.parent.chmod(0o555)
    try:
        code, err = cli_main(capsys, "run", *TWO_SEEDS, "--out", out)
    finally:
        out.parent.chmod(0o755)
    assert code == 2
    assert_one_error_line(err)
    assert_untouched(before)


def test_a_full_disk_leaves_every_row_whole(tmp_path, capsys, monkeypatch, finished):
    out = copy_run(finished, tmp_path)
    before = snapshot(tmp_path)

    write_all = files.write_all

    def disk_fills_halfway(fd, data):
        if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:  # the metadata's atomic rewrite still fits
            return write_all(fd, data)
        os.write(fd, data[: len(data) // 2])  # part of a line gets out, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_all", disk_fills_halfway)
    code, err = cli_main(capsys, "run", *TWO_SEEDS, "--out", out)
    assert code == 2
    assert_one_error_line(err, "No space left on device", "intact")
    assert_untouched(before, own=(out.with_suffix(".json"),))
    monkeypatch.undo()
    assert cli_main(capsys, "run", *TWO_SEEDS, "--out", out)[0] == 0  # with space again, the run resumes
    assert len(pd.read_csv(out)) == 2


def test_a_full_disk_while_writing_the_metadata_keeps_the_old_metadata(tmp_path, capsys, monkeypatch, finished):
    out = copy_run(finished, tmp_path)
    before = snapshot(tmp_path)

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_all", full)
    code, err = cli_main(capsys, "run", *TWO_SEEDS, "--out", out)
    assert code == 2
    assert_one_error_line(err, "r.json", "No space left on device")
    assert_untouched(before)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


# ---------------------------------------------------------------- 9. an interrupt never tears a line


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_in_the_middle_of_a_write_waits_for_the_line_to_end(tmp_path, sig):
    out = tmp_path / "r.csv"
    # Each write is made in two halves two seconds apart: the signal is sent once the first half is in.
    proc = subprocess.Popen(
        _command("run", *TINY, "--out", out),
        env=_env(DROPBENCH_TEST_WRITE_PAUSE="2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    targets = (tmp_path / "r.epochs.csv", out)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.exists() and not p.read_bytes().endswith(b"\n") for p in targets):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert "Traceback" not in err
    assert code in (130, 143, -sig)
    for path in targets:
        assert not path.exists() or path.read_bytes().endswith(b"\n"), path.read_bytes()


def test_held_interrupts_are_delivered_after_the_block(tmp_path):
    with pytest.raises(KeyboardInterrupt), files.interrupts_held():
        signal.raise_signal(signal.SIGINT)
        reached = True  # the interrupt waited for the block to end
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------- 4 and 5. escaping: everywhere, and reversible

AWKWARD = ["-smoke", "=1+1", "+x", "@sum(A1)", "\tx", "'quoted'", "'", "''", "plain", "a-b", ""]


def test_escaping_round_trips():
    for text in AWKWARD:
        assert read_text(format_value(text)) == text
        assert format_value(text)[:1] not in ("=", "+", "-", "@", "\t")


def test_text_written_escaped_reads_back_as_written(tmp_path, finished):
    store = ResultStore(copy_run(finished, tmp_path))
    (row,) = read_results(store.csv_path).to_dict("records")
    for text in AWKWARD:
        store.rows.append([{**row, "cell_id": f"id{AWKWARD.index(text)}", "suite": text, "error": text}])
    written = store.written()
    frame = read_results(store.csv_path).set_index("cell_id")
    for i, text in enumerate(AWKWARD):
        assert written[f"id{i}"]["suite"] == text and written[f"id{i}"]["error"] == text
        assert frame.loc[f"id{i}", "suite"] == text and frame.loc[f"id{i}", "error"] == text


def test_a_suite_named_like_a_formula_can_be_resumed(tmp_path, capsys):
    suite = tmp_path / "smoke.toml"
    suite.write_text('name = "-smoke"\nepochs = 1\nseeds = 2\n[[task]]\nname = "wine"\n')
    out = tmp_path / "r.csv"
    args = ["run", suite, "--reg", "none", "--keep", "1.0", "--jobs", "1", "-q", "--out", out]
    code, err = cli_main(capsys, *args, "--seeds", "1")
    if code == 2 and "name" in err:
        pytest.skip("suite names like '-smoke' are refused when the suite is loaded")
    assert code == 0
    assert "'-smoke" in out.read_text()  # escaped in the file ...
    code, err = cli_main(capsys, *args)  # ... and recognised on resume
    assert code == 0, err
    assert "(1 already done)" in err
    assert (pd.read_csv(out)["suite"] == "'-smoke").all()


def test_merge_escapes_formulas_from_its_inputs(tmp_path, capsys, finished):
    shard = edited(finished, tmp_path / "s.csv", set_field("suite", "=1+1"))
    code, _ = cli_main(capsys, "merge", shard, "-o", tmp_path / "m.csv")
    assert code == 0
    with open(tmp_path / "m.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["suite"] == "'=1+1"


def test_merging_one_file_writes_it_again_byte_for_byte(tmp_path, capsys, finished):
    out = copy_run(finished, tmp_path, "in")
    edited(out, out, set_field("error", "'-1 is not a keep rate"))  # an escaped text cell, as dropbench writes it
    assert "'-1 is not" in out.read_text()
    assert cli_main(capsys, "merge", out, "-o", tmp_path / "m.csv")[0] == 0
    assert (tmp_path / "m.csv").read_bytes() == out.read_bytes()
    assert (tmp_path / "m.epochs.csv").read_bytes() == (tmp_path / "in.epochs.csv").read_bytes()


def test_report_csv_escapes_text_it_read_unescaped(tmp_path, capsys, finished):
    source = edited(finished, tmp_path / "r.csv", set_field("task", "=1+1"))
    assert main(["report", str(source), "--format", "csv"]) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["task"] == "'=1+1"


# ---------------------------------------------------------------- 8a, 10, 12. what merge reads


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda rows: rows[0].append("extra"), f"line 2: {len(COLUMNS) + 1} fields, expected {len(COLUMNS)}"),
        (lambda rows: rows[0].pop(), f"line 2: {len(COLUMNS) - 1} fields"),
        (lambda rows: rows.append(["abc", "def"]), "line 3: 2 fields"),
        (set_field("test_acc", "abc"), "line 2: test_acc is 'abc', not a finite number"),
        (set_field("test_loss", "inf"), "line 2: test_loss is 'inf'"),
        (set_field("seed", "1.5"), "line 2: seed is '1.5', not a whole number"),
    ],
)
def test_merge_refuses_a_malformed_row_naming_file_and_line(tmp_path, capsys, finished, edit, fragment):
    good = copy_run(finished, tmp_path, "good")
    bad = edited(finished, tmp_path / "bad.csv", edit)
    before = snapshot(tmp_path)
    code, err = cli_main(capsys, "merge", good, bad, "-o", tmp_path / "m.csv")
    assert code == 2
    assert_one_error_line(err, str(bad), fragment)
    assert_untouched(before)
    assert not list(tmp_path.glob("m*"))


def test_merge_refuses_a_torn_last_line(tmp_path, capsys, finished):
    torn = copy_run(finished, tmp_path, "t")
    torn.write_bytes(torn.read_bytes()[:-20])
    code, err = cli_main(capsys, "merge", torn, "-o", tmp_path / "m.csv")
    assert code == 2
    assert_one_error_line(err, "last line is cut short")


@pytest.mark.slow
def test_merge_on_binary_junk_is_one_line(tmp_path):
    (tmp_path / "junk.csv").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "nul.csv").write_bytes(",".join(COLUMNS).encode() + b"\n\x00a,b\n")
    for name in ("junk.csv", "nul.csv"):
        done = cli_process("merge", name, "-o", "m.csv", cwd=tmp_path)
        assert done.returncode == 2
        assert_one_error_line(done.stderr, name)
    assert not (tmp_path / "m.csv").exists()


def test_merge_refuses_junk_in_an_epochs_file(tmp_path, capsys, finished):
    out = copy_run(finished, tmp_path, "s")
    (tmp_path / "s.epochs.csv").write_bytes(b"\xff\xfe junk\n")
    code, err = cli_main(capsys, "merge", out, "-o", tmp_path / "m.csv")
    assert code == 2
    assert_one_error_line(err, "s.epochs.csv")


def test_merge_accepts_a_shard_with_a_header_and_no_rows(tmp_path, capsys, finished):
    full = copy_run(finished, tmp_path, "s1")
    empty = tmp_path / "s2.csv"
    empty.write_text(",".join(COLUMNS) + "\n")
    code, err = cli_main(capsys, "merge", full, empty, "-o", tmp_path / "m.csv")
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "m.csv")) == 1
    code, err = cli_main(capsys, "merge", empty, "-o", tmp_path / "only-empty.csv")
    assert code == 0, err
    assert (tmp_path / "only-empty.csv").read_text() == ",".join(COLUMNS) + "\n"


def test_merge_writes_none_of_its_files_when_one_is_there(tmp_path, capsys, finished):
    shard = copy_run(finished, tmp_path, "s")
    (tmp_path / "m.json").write_text('{"mine": true}\n')
    before = snapshot(tmp_path)
    code, err = cli_main(capsys, "merge", shard, "-o", tmp_path / "m.csv")
    assert code == 2
    assert_one_error_line(err, "m.json", "exists")
    assert_untouched(before)
    assert not (tmp_path / "m.csv").exists()


def test_a_merge_that_fails_halfway_leaves_no_file(tmp_path, capsys, monkeypatch, finished):
    shard = copy_run(finished, tmp_path, "s")
    real = files.replace_atomically

    def fails_on_the_csv(path, data):
        if path.name == "m.csv":
            raise UserError(f"cannot write {path}: No space left on device")
        real(path, data)

    monkeypatch.setattr("dropbench.merge.replace_atomically", fails_on_the_csv)
    code, err = cli_main(capsys, "merge", shard, "-o", tmp_path / "m.csv")
    assert code == 2
    assert_one_error_line(err, "No space left on device")
    assert not list(tmp_path.glob("m*"))


# ---------------------------------------------------------------- 10. report, compare, plot on bad files


def _header_only(finished: Path, folder: Path) -> Path:
    path = folder / "header.csv"
    path.write_text(",".join(COLUMNS) + "\n")  # what a killed --rerun-failed, or an empty shard, leaves
    return path


def _binary(finished: Path, folder: Path) -> Path:
    path = folder / "b.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return path


BAD_RESULTS = {
    "header-only": (_header_only, "no results rows"),
    "keep-rate-text": (lambda f, d: edited(f, d / "k.csv", set_field("keep_rate", "abc")), "keep_rate is 'abc'"),
    "keep-rate-nan": (lambda f, d: edited(f, d / "k.csv", set_field("keep_rate", "nan")), "keep_rate is 'nan'"),
    "keep-rate-empty": (lambda f, d: edited(f, d / "k.csv", set_field("keep_rate", "")), "keep_rate is ''"),
    "keep-rate-2": (lambda f, d: edited(f, d / "k.csv", set_field("keep_rate", "2")), "not a keep rate in (0, 1]"),
    "inf-figure": (lambda f, d: edited(f, d / "i.csv", set_field("test_acc", "inf")), "test_acc is 'inf', not finite"),
    "neg-inf": (lambda f, d: edited(f, d / "i.csv", set_field("gap_loss", "-inf")), "gap_loss is '-inf'"),
    "figure-text": (lambda f, d: edited(f, d / "t.csv", set_field("val_acc", "high")), "val_acc is 'high'"),
    "binary": (_binary, "b.csv"),
}


@pytest.mark.parametrize("command", ["report", "plot", "compare"])
@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_bad_results_files_are_one_line(tmp_path, capsys, finished, command, case):
    make, fragment = BAD_RESULTS[case]
    bad = make(finished, tmp_path)
    if command == "compare" and case == "header-only":
        fragment = "nothing to compare"
    before = snapshot(tmp_path)
    args = {
        "report": ["report", bad],
        "plot": ["plot", bad, "-o", tmp_path / "plots"],
        "compare": ["compare", finished, bad],
    }[command]
    code, err = cli_main(capsys, *args)
    assert code == 2
    assert_one_error_line(err, fragment)
    assert_untouched(before)


@pytest.mark.slow
def test_report_on_a_header_only_file_in_a_process_of_its_own(tmp_path, finished):
    done = cli_process("report", _header_only(finished, tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "no results rows")


@pytest.mark.parametrize(
    "junk, fragment",
    [
        (b"\x00\xff junk\n1,2\n", "r.epochs.csv"),
        (b"a,b\n1,2\n", "missing columns"),
        (b"cell_id,epoch,fit_loss,val_loss,val_acc\nx,one,1,1,1\n", "epoch is 'one'"),
    ],
)
def test_plot_with_a_junk_epochs_file_is_one_line(tmp_path, capsys, finished, junk, fragment):
    out = copy_run(finished, tmp_path)
    (tmp_path / "r.epochs.csv").write_bytes(junk)
    code, err = cli_main(capsys, "plot", out, "-o", tmp_path / "plots")
    assert code == 2
    assert_one_error_line(err, fragment)


def test_plot_into_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch, finished):
    from matplotlib.figure import Figure

    def refuse(self, path, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(Figure, "savefig", refuse)
    code, err = cli_main(capsys, "plot", finished, "-o", tmp_path / "plots")
    assert code == 2
    assert_one_error_line(err, "cannot write", "Permission denied")


def test_plot_into_a_path_that_is_a_file_is_one_line(tmp_path, capsys, finished):
    (tmp_path / "plots").write_text("mine\n")
    before = snapshot(tmp_path)
    code, err = cli_main(capsys, "plot", finished, "-o", tmp_path / "plots")
    assert code == 2
    assert_one_error_line(err, "plots")
    assert_untouched(before)
