"""Where a result came from: versions, the code's git commit, the machine, the time."""

import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import TypedDict


def utc_now() -> str:
    """UTC time in ISO 8601 with seconds, e.g. 2026-11-27T15:32:46Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp() -> str:
    """A file-name-safe UTC timestamp, e.g. 20261127T153246Z."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


@cache
def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the dropbench source that ran (with '-dirty' if it had local changes), or ''."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    import torch

    return {
        "dropbench": package_version("dropbench"),
        "torch": torch.__version__,
        "scikit-learn": package_version("scikit-learn"),
        "numpy": package_version("numpy"),
        "pandas": package_version("pandas"),
        "python": platform.python_version(),
    }


class Machine(TypedDict):
    host: str
    platform: str
    cpu: str
    cpu_count: int | None
    torch_threads: int


def machine() -> Machine:
    import torch

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
