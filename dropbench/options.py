"""What `dropbench run` was asked to do, gathered in one object from the command line (as hyperfine's
`Options::from_cli_arguments`): the command hands it to the library, and checks that flags do not clash.

Torch-free and click-free, so the CLI can build it before anything heavy is imported.
"""

from dataclasses import dataclass, field
from pathlib import Path

from .threads import Threads

# The flags that change the grid (suite.Overrides' fields); every other flag of `run` is an option below.
GRID_FLAGS = frozenset(
    {"tasks", "keep_rates", "input_keep_rates", "regularizers", "seeds", "epochs", "dropouts", "train_sizes"}
    | {"mc_samples", "precision"}
)


@dataclass(frozen=True)
class Invocation:
    """The command line as typed: recorded in the results' provenance, and the base of the resume command."""

    args: tuple[str, ...]

    @property
    def command(self) -> str:
        import shlex

        return shlex.join(["dropbench", *self.args])


@dataclass(frozen=True)
class RunOptions:
    suite: str | None = None  # a bundled name or a TOML path; None: the default suite
    grid: dict[str, object] = field(default_factory=dict)  # suite.Overrides' fields that were given
    sets: tuple[str, ...] = ()  # `--set KEY=VALUE`s, as typed (dropbench.overrides parses them)
    out: Path | None = None  # None: results/SUITE-<UTC time>.csv
    executor: str = "local"  # local | ray
    jobs: int | None = None  # local: worker processes; None: one per usable core (one per GPU)
    threads: Threads | None = None  # local: torch threads per process, or "auto"; None: auto (CUDA: every core)
    device: str = "cpu"
    stack: bool = True
    address: str | None = None  # ray: the cluster
    cpus_per_cell: int = 1  # ray
    gpus_per_cell: float = 0.0  # ray
    shard: str | None = None  # "I/N"
    rerun_failed: bool = False
    fresh: bool = False
    dry_run: bool = False
    quiet: bool = False
    log_format: str = "text"
    given: frozenset[str] = field(default=frozenset(), repr=False)  # the flags typed, not left at their default

    @classmethod
    def from_cli(cls, params: dict[str, object], given: set[str]) -> "RunOptions":
        """From click's parameters; `given` names those set on the command line (not left at their default)."""
        grid = {name: params[name] for name in GRID_FLAGS if params.get(name) is not None}
        rest = {name: value for name, value in params.items() if name not in GRID_FLAGS}
        rest["stack"] = not rest.pop("no_stack", False)
        rest["executor"] = rest.pop("executor_kind", "local")
        return cls(grid=grid, given=frozenset(given), **rest)  # type: ignore[arg-type]  # click's params by name

    def clash(self) -> str | None:
        """Why these flags cannot go together, or None. Flags left at their defaults never clash."""
        if self.executor == "ray":
            local_only = [f"--{name}" for name in ("jobs", "threads") if name in self.given]
            if local_only:
                verb = "is" if len(local_only) == 1 else "are"
                return f"{' and '.join(local_only)} {verb} for the local executor; with Ray use --cpus-per-cell"
        else:
            ray_flags = ("address", "cpus_per_cell", "gpus_per_cell")
            ray_only = [f"--{name.replace('_', '-')}" for name in ray_flags if name in self.given]
            if ray_only:
                return f"{', '.join(ray_only)} {'needs' if len(ray_only) == 1 else 'need'} --executor ray"
        if self.fresh and self.rerun_failed:
            return "--fresh starts the file over, so --rerun-failed has nothing to rerun: give one of them"
        return None
