"""What the results files say about the runs that wrote them: when, from which commit, with which versions, on
which machine. Read from the provenance columns every row carries and from the run metadata beside the file
(NAME.json: command lines, platform), so that a report page can show it and `history` can line runs up by it.

A run is one results file, or the several files given as one (the shards of one run, as `report` reads them).
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import sidecar_paths
from .summary import latest_rows

# The versions each row records, under the names the run metadata uses.
VERSION_COLUMNS = {
    "dropbench": "dropbench_version",
    "torch": "torch_version",
    "scikit-learn": "sklearn_version",
    "python": "python_version",
}
SHORT_COMMIT = 7  # as git abbreviates a commit


@dataclass(frozen=True)
class RunInfo:
    """One run's provenance. `started`/`ended`: the first and last cell's start (UTC ISO 8601, '' when the rows
    record none); every other field lists the distinct values its cells or metadata record, in order of
    appearance (a resumed or sharded run may hold several)."""

    paths: tuple[Path, ...]
    cells: int
    suites: tuple[str, ...]
    started: str
    ended: str
    commits: tuple[str, ...]
    versions: dict[str, tuple[str, ...]]
    machines: tuple[str, ...]  # 'host · cpu'
    devices: tuple[str, ...]
    commands: tuple[str, ...]  # from the run metadata; empty for a merged file (its metadata names its inputs)
    platforms: tuple[str, ...]
    merged_from: tuple[str, ...]

    @property
    def name(self) -> str:
        """The file (or files) as given: 'results/quick.csv', 'results/shard-1.csv + 2 more'."""
        if not self.paths:
            return "results in memory"
        first = str(self.paths[0])
        return first if len(self.paths) == 1 else f"{first} + {len(self.paths) - 1} more"

    @property
    def date(self) -> str:
        """'2026-11-30 00:59' (UTC), or 'undated'."""
        return self.started[:16].replace("T", " ") if self.started else "undated"

    @property
    def commit(self) -> str:
        """The short commit ('b1bb4b8', 'b1bb4b8-dirty'), several joined by '+', or '' when none is recorded."""
        return "+".join(short_commit(commit) for commit in self.commits)

    @property
    def label(self) -> str:
        """How a table heads the run's column: '2026-11-30 00:59 · b1bb4b8'."""
        return " · ".join(part for part in (self.date, self.commit) if part)


def short_commit(commit: str) -> str:
    """'b1bb4b844f…-dirty' -> 'b1bb4b8-dirty'."""
    head, dirty, _ = commit.partition("-dirty")
    return head[:SHORT_COMMIT] + dirty


def _distinct(values: Iterable[object]) -> tuple[str, ...]:
    """The non-empty values as text, once each, in order of appearance."""
    texts = (str(value).strip() for value in values if value is not None and not pd.isna(value))
    return tuple(dict.fromkeys(text for text in texts if text))


def _column(frame: pd.DataFrame, column: str) -> tuple[str, ...]:
    return _distinct(frame[column]) if column in frame else ()


def _metadata(path: Path) -> dict:
    """The run metadata beside a results file; {} when it is absent or not a JSON object (a CSV copied alone)."""
    try:
        meta = json.loads(sidecar_paths(path)[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def run_info(files: Sequence[str | Path], frame: pd.DataFrame) -> RunInfo:
    """The provenance of the run written to `files`, whose rows are `frame` (read_results of those files)."""
    paths = tuple(map(Path, files))
    rows = latest_rows(frame)
    metas = [_metadata(path) for path in paths]
    invocations = [run for meta in metas for run in meta.get("runs", []) if isinstance(run, dict)]
    started = sorted(_column(rows, "started_at"))
    versions = {name: _column(rows, column) for name, column in VERSION_COLUMNS.items()}
    for invocation in invocations:  # numpy and pandas are recorded per invocation only
        for name, version in (invocation.get("versions") or {}).items():
            if name not in VERSION_COLUMNS:
                versions[name] = _distinct([*versions.get(name, ()), version])
    hosts = rows["host"].astype("string").fillna("") if "host" in rows else pd.Series("", index=rows.index)
    cpus = rows["cpu"].astype("string").fillna("") if "cpu" in rows else pd.Series("", index=rows.index)
    machines = _distinct(" · ".join(part for part in pair if part) for pair in zip(hosts, cpus))
    return RunInfo(
        paths=paths,
        cells=len(rows),
        suites=_column(rows, "suite"),
        started=started[0] if started else "",
        ended=started[-1] if started else "",
        commits=_column(rows, "git_commit"),
        versions={name: values for name, values in versions.items() if values},
        machines=machines,
        devices=_column(rows, "device"),
        commands=_distinct(invocation.get("command") for invocation in invocations),
        platforms=_distinct((invocation.get("machine") or {}).get("platform") for invocation in invocations),
        merged_from=_distinct(name for meta in metas for name in meta.get("merged_from", [])),
    )


def changes(before: RunInfo, after: RunInfo) -> list[str]:
    """What differs between two runs' provenance, for a reader wondering why a figure moved:
    ['commit b1bb4b8 → 0c2d9e1', 'torch 2.13.0 → 2.14.0', 'machine vm · AMD EPYC → ci · Intel Xeon']."""
    pairs = [("commit", before.commit, after.commit)]
    for name in dict.fromkeys([*before.versions, *after.versions]):
        pairs.append((name, "+".join(before.versions.get(name, ())), "+".join(after.versions.get(name, ()))))
    pairs += [
        ("machine", " + ".join(before.machines), " + ".join(after.machines)),
        ("device", "+".join(before.devices), "+".join(after.devices)),
    ]
    return [f"{what} {old or '?'} → {new or '?'}" for what, old, new in pairs if old != new]
