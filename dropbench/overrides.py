"""Any suite key from outside the file: `--set KEY=VALUE` (or `set={KEY: value}` in Python) and `--seeds` specs.

An override changes the suite's TOML document before it is validated, so it is checked exactly as the file's own
value would be, and every refusal names it: `--set optimizer.lrr=0.05: unknown key 'lrr' in optimizer (did you mean
'lr'?); allowed: ...`. Keys are TOML dotted keys (`optimizer.lr`, `regularizer.l2.strength`, `model.hidden`); a
task of the `[[task]]` array is named by its name or its index (`task.digits.epochs`, `task.0.epochs`).

Torch-free at import: the command line parses these before anything heavy is loaded (suite.py, which imports the
registries, is imported only inside the functions that need it).
"""

import copy
import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .suite import Overrides, Suite

# A key part as TOML writes one: bare (letters, digits, '_', '-') or quoted ("openml:1590").
_BARE = r"[A-Za-z0-9_-]+"
_PART = rf"(?:{_BARE}|\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*')"
_KEY = rf"{_PART}(?:\s*\.\s*{_PART})*"
_ASSIGNMENT = re.compile(rf"\s*({_KEY})\s*=(.*)", re.DOTALL)
_KEY_ONLY = re.compile(rf"\s*{_KEY}\s*")
# A value that is not TOML but one word is taken as a string, so `--set optimizer.name=adam` needs no shell quoting
# of "adam"; anything else (spaces, brackets, quotes, a leading digit or sign) must be valid TOML.
_WORD = re.compile(r"[A-Za-z_][\w.+:/@-]*")
TASKS = "task"  # the [[task]] array, whose tables are addressed by name or index
EXCLUDE = "exclude"  # the suite's combinations left out of the grid
SET_HELP = "Set any suite key, e.g. optimizer.lr=0.05, model.hidden=[512,512], task.digits.epochs=5."
# The most seeds a list or range may name: a grid has at least as many cells as seeds (suite.MAX_GRID_CELLS).
MAX_SEEDS = 100_000


@dataclass(frozen=True)
class SetOverride:
    """One key set from outside the suite file."""

    path: tuple[str, ...]  # the dotted key's parts: ("optimizer", "lr"), ("task", "digits", "epochs")
    value: object  # a TOML value: number, string, boolean, list, table
    label: str  # how messages name it: "--set optimizer.lr=0.05", "set['optimizer.lr']"

    @property
    def key(self) -> str:
        return ".".join(part if re.fullmatch(_BARE, part) else f'"{part}"' for part in self.path)


# ---------------------------------------------------------------- parsing


def _key_path(text: str, label: str) -> tuple[str, ...]:
    """The parts of a TOML dotted key, quotes removed (tomllib reads it, so quoting follows TOML's rules)."""
    try:
        document = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        raise UserError(f"{label}: {text.strip()!r} is not a key; write one as TOML does: optimizer.lr") from None
    path: list[str] = []
    node: object = document
    while isinstance(node, dict):
        (part, node), *_ = node.items()
        path.append(part)
    return tuple(path)


def _toml_value(text: str, label: str) -> object:
    """A value as TOML reads it; one word that is not TOML (adam, l2+max-norm) as a string."""
    stripped = text.strip()
    if "\n" in text or "\r" in text:
        raise UserError(f"{label}: a value is one line")
    try:
        return tomllib.loads(f"value = {stripped}")["value"]
    except tomllib.TOMLDecodeError:
        if _WORD.fullmatch(stripped):
            return stripped
    raise UserError(
        f'{label}: {stripped!r} is not a value: give a TOML value (0.05, true, [512, 512], {{ kind = "cosine" }}, '
        '"a string"); one word (adam, l2+max-norm) may go unquoted'
    )


def parse_set(text: str) -> SetOverride:
    """`KEY=VALUE` from the command line: a TOML dotted key and a TOML value."""
    label = f"--set {text}"
    match = _ASSIGNMENT.fullmatch(text)
    if match is None:
        raise UserError(f"{label}: expected KEY=VALUE, a dotted suite key and a TOML value: optimizer.lr=0.05")
    return SetOverride(_key_path(match.group(1), label), _toml_value(match.group(2), label), label)


def _plain(value: object, label: str) -> object:
    """A Python value as the TOML reader would give it: tuples as lists, tables as dicts of str."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item, label) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item, label) for key, item in value.items()}
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return _plain(value.item(), label)
    raise UserError(f"{label}: {value!r} is not a suite value (a number, string, boolean, list or table)")


def sets_from(given: Mapping[str, object] | Sequence[SetOverride] | Iterable[str] | None) -> list[SetOverride]:
    """Overrides from Python (`{"optimizer.lr": 0.05}`), `--set` texts, or parsed ones (returned as they are)."""
    if not given:
        return []
    if isinstance(given, str):  # one `--set` text, not its characters
        given = [given]
    if isinstance(given, Mapping):
        found = []
        for key, value in given.items():
            label = f"set[{key!r}]"
            if not isinstance(key, str) or not _KEY_ONLY.fullmatch(key):
                raise UserError(f"{label}: not a key; write one as TOML does: 'optimizer.lr', 'task.digits.epochs'")
            found.append(SetOverride(_key_path(key, label), _plain(value, label), label))
        return found
    return [item if isinstance(item, SetOverride) else parse_set(str(item)) for item in given]


def parse_seeds(text: str) -> int | tuple[int, ...]:
    """`--seeds`: a count (`5`: seeds 0..4), or the seeds themselves, a list (`0,3,7`), an inclusive range
    (`10..19`: ten seeds, 19 among them) or both (`0,10..12`). A single seed is a one-item list: `7,`."""
    spec = text.strip()
    if re.fullmatch(r"\d+", spec):
        count = int(spec)  # its size is checked with the grid's other axes (suite.check_grid_size), never built here
        if count < 1:
            raise ValueError(f"{spec}: a count of seeds is at least 1")
        return count
    items = [item.strip() for item in spec.split(",")]
    items = [item for item in items if item] if spec.endswith(",") else items
    if not items or not all(items):
        raise ValueError(f"{text!r}: give a count (5), a list (0,3,7) or an inclusive range (10..19)")
    spans = []
    for item in items:
        ends = re.fullmatch(r"(\d+)\.\.(\d+)", item)
        if ends is None and not item.isdecimal():
            raise ValueError(
                f"{item!r} is not a seed: seeds are whole numbers ≥ 0, given as a count (5), a list (0,3,7) or an "
                "inclusive range (10..19)"
            )
        first, last = (int(ends.group(1)), int(ends.group(2))) if ends else (int(item), int(item))
        if last < first:
            raise ValueError(f"{item}: the range is empty (its end is included and must not be below its start)")
        spans.append(range(first, last + 1))
    if sum(len(span) for span in spans) > MAX_SEEDS:  # counted before a range is expanded
        raise ValueError(f"{text}: more than {MAX_SEEDS:,} seeds")
    seeds: list[int] = []
    seen: set[int] = set()
    for seed in (seed for span in spans for seed in span):
        if seed in seen:
            raise ValueError(f"seed {seed} is listed twice")
        seen.add(seed)
        seeds.append(seed)
    return tuple(seeds)


# ---------------------------------------------------------------- applying them to a suite's document


def _allowed_keys(shape: tuple[str, ...]) -> tuple[str, ...] | None:
    """The keys the suite format allows in the table at `shape` (a task's name or index as '*'), or None where
    they depend on more than the place (a tuning space, a regularizer's table, whose names and keys come from the
    registry): the parser checks those, and its refusal is named after the override all the same."""
    from .schedules import MOMENTUM_RAMP_KEYS, SCHEDULE_KEYS
    from .suite import HALVING_KEYS, MODEL_KEYS, OPTIMIZER_KEYS, SUITE_KEYS, TASK_KEYS, TUNING_KEYS

    schedule = tuple(dict.fromkeys(key for keys in SCHEDULE_KEYS.values() for key in keys))
    known: dict[tuple[str, ...], tuple[str, ...]] = {
        (): SUITE_KEYS,
        ("tuning",): TUNING_KEYS,
        ("tuning", "halving"): HALVING_KEYS,
        (TASKS, "*"): TASK_KEYS,
    }
    for base in ((), (TASKS, "*")):
        known[(*base, "model")] = MODEL_KEYS
        known[(*base, "optimizer")] = OPTIMIZER_KEYS
        known[(*base, "optimizer", "schedule")] = schedule
        known[(*base, "optimizer", "momentum_ramp")] = MOMENTUM_RAMP_KEYS
    return known.get(shape)


def _check_key(part: str, shape: tuple[str, ...], shown: str, label: str) -> None:
    allowed = _allowed_keys(shape)
    if allowed is None or part in allowed:
        return
    close = difflib.get_close_matches(part, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    place = f"in {shown}" if shown else "at the top of the suite"
    raise UserError(f"{label}: unknown key '{part}' {place}{hint}; allowed: {', '.join(allowed)}")


def _task_index(tasks: list, part: str, label: str) -> int:
    """The index in [[task]] of the task named `part` (or of index `part`)."""
    names = [table.get("name") for table in tasks if isinstance(table, dict)]
    if part.isdecimal():
        if int(part) >= len(tasks):
            raise UserError(f"{label}: the suite has {len(tasks)} tasks, task.0 to task.{len(tasks) - 1}")
        return int(part)
    if part not in names:
        raise UserError(
            f"{label}: the suite has no task '{part}' (its tasks: {', '.join(map(str, names))}); a task added with "
            "--task takes the suite's top-level keys"
        )
    return names.index(part)


def _apply(document: dict, override: SetOverride) -> str:
    """Set one key in `document`, creating the tables on its way; returns the key as the suite's messages spell
    it (`task[2].epochs`), so that a refusal of the value can be traced back to the override."""
    label, path = override.label, override.path
    node: dict | list = document
    shape: tuple[str, ...] = ()  # the path so far, a task's name or index as '*'
    spelled: list[str] = []  # the path so far as the suite's messages write it
    for depth, part in enumerate(path):
        shown = ".".join(path[:depth])  # the path so far as the override writes it
        last = depth == len(path) - 1
        if isinstance(node, list):  # the [[task]] array: this part names one of its tables
            index = _task_index(node, part, label)
            shape, spelled[-1] = (*shape, "*"), f"{TASKS}[{index}]"
            if last:
                node[index] = copy.deepcopy(override.value)
                break
            node = node[index]
            continue
        _check_key(part, shape, shown, label)
        shape, spelled = (*shape, part), [*spelled, part]
        if last:
            node[part] = copy.deepcopy(override.value)
            break
        child = node.setdefault(part, {})
        # [[task]] is an array: the next part names one of its tables
        if isinstance(child, dict) or (shape == (TASKS,) and isinstance(child, list)):
            node = child
        else:
            raise UserError(f"{label}: {'.'.join(path[: depth + 1])} is {child!r} in the suite, not a table")
    return ".".join(spelled)


def _refuse_overlaps(sets: Sequence[SetOverride]) -> None:
    """A key set twice, or a key and a table that holds it: which wins would depend on the order."""
    for i, first in enumerate(sets):
        for second in sets[i + 1 :]:
            if first.path == second.path:
                raise UserError(f"{second.label}: {second.key} is set twice (also by {first.label}); give it once")
            table, inner = sorted((first, second), key=lambda s: len(s.path))
            if inner.path[: len(table.path)] == table.path:
                raise UserError(
                    f"{inner.label}: {inner.key} lies inside {table.key}, which {table.label} sets whole; give one"
                )


def _segments(path: str) -> list[str]:
    return [part for part in path.split(".") if part]


def _same_part(set_part: str, named: str) -> bool:
    """Whether a part of an override's key is the part a message names: itself, or an element of the array it
    sets whole (`--set exclude=[...]` and `exclude[1].keep_rate`)."""
    return named == set_part or re.fullmatch(rf"{re.escape(set_part)}\[\d+\]", named) is not None


def _attributed(message: str, source: str, sets: Sequence[SetOverride], spelled: Sequence[str]) -> str:
    """A refusal of the overridden document, named after the override it concerns: the one whose key shares the
    longest start with the key the message names (`--set optimizer.lr=-1: must be > 0, got -1`); a refusal that
    concerns none of them names the file and all of them."""
    rest = message[len(f"{source}: ") :] if message.startswith(f"{source}: ") else message
    named = re.match(r"[\w\-\[\]\.]+", rest)
    target = _segments(named.group(0)) if named else []
    best, score = None, 0
    for override, key in zip(sets, spelled):
        parts = _segments(key)
        shared = next(
            (i for i, (a, b) in enumerate(zip(parts, target)) if not _same_part(a, b)), min(len(parts), len(target))
        )
        if shared > score:
            best, score = (override, parts), shared
    if best is None:
        return f"{source} with {', '.join(s.label for s in sets)}: {rest}"
    override, parts = best
    if parts == target and named is not None and rest[named.end() :].startswith(": "):
        return f"{override.label}: {rest[named.end() + 2 :]}"  # the key is the override's own: named once
    return f"{override.label}: {rest}"


def parse_suite_with(
    document: dict, source: str, given: Mapping[str, object] | Sequence[SetOverride] | Iterable[str]
) -> "Suite":
    """The suite of `document` (from the file `source`) with `given` keys set, validated as a file is. The file
    alone is validated first, so that what is wrong with it is named as the file's and not an override's."""
    from dataclasses import replace

    from .suite import parse_suite

    sets = sets_from(given)
    parse_suite(copy.deepcopy(document), source)
    _refuse_overlaps(sets)
    changed = copy.deepcopy(document)
    spelled = [_apply(changed, override) for override in sets]
    # An `exclude` the file wrote was checked against the file's grid just now: where an override removed a value it
    # names, it matches nothing. One set here names values of the grid the flags make (checked after them).
    excluding = next((s for s in sets if s.path[0] == EXCLUDE), None)
    try:
        suite = parse_suite(changed, source, exclude_grid="file" if excluding is None else "final")
    except UserError as error:
        raise UserError(_attributed(str(error), source, sets, spelled)) from None
    if excluding is not None:  # its entries' later refusals (Suite.check_grid) name the override
        where = {e.where: f"{excluding.label}: {e.where.removeprefix(f'{source}: ')}" for e in suite.exclude}
        suite = replace(suite, exclude=tuple(replace(e, where=where[e.where]) for e in suite.exclude))
    return replace(suite, set_keys=tuple((s.key, s.value) for s in sets))


# ---------------------------------------------------------------- beside the grid flags

# The grid flags (suite.Overrides' fields) and the suite keys each replaces; '*' is any task of [[task]].
FLAG_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "keep_rates": (("keep_rates",),),
    "input_keep_rates": (("input_keep_rate",),),
    "regularizers": (("regularizers",),),
    "seeds": (("seeds",),),
    "epochs": (("epochs",), (TASKS, "*", "epochs")),
    "dropouts": (("dropout",),),
    "train_sizes": (("train_size",),),
    "mc_samples": (("mc_samples",),),
}
CLI_FLAGS = {
    "keep_rates": "--keep",
    "input_keep_rates": "--input-keep",
    "regularizers": "--reg",
    "seeds": "--seeds",
    "epochs": "--epochs",
    "dropouts": "--dropout",
    "train_sizes": "--train-size",
    "mc_samples": "--mc-samples",
}


def _holds(value: object, pattern: tuple[str, ...]) -> bool:
    """Whether a table value (or an array of tables) holds the key `pattern` ('*': any element or key)."""
    if not pattern:
        return True
    head, *tail = pattern
    if isinstance(value, list):
        return head == "*" and any(_holds(item, tuple(tail)) for item in value)
    if isinstance(value, dict):
        items = value.values() if head == "*" else [value[head]] if head in value else []
        return any(_holds(item, tuple(tail)) for item in items)
    return False


def _touches(override: SetOverride, pattern: tuple[str, ...]) -> bool:
    """Whether the override sets the key `pattern`, itself or inside a table it sets."""
    path = tuple("*" if i == 1 and override.path[0] == TASKS else part for i, part in enumerate(override.path))
    if len(path) > len(pattern):
        return path[: len(pattern)] == pattern
    return path == pattern[: len(path)] and _holds(override.value, pattern[len(path) :])


def refuse_flag_clashes(
    sets: Sequence[SetOverride], overrides: "Overrides", flags: Mapping[str, str] = CLI_FLAGS
) -> None:
    """A grid flag and an override of the key it replaces: one of them would be silently lost, so neither wins.
    `flags` names the flags as the caller takes them (`--epochs` on the command line, `epochs=` in Python)."""
    for field, patterns in FLAG_KEYS.items():
        if getattr(overrides, field) is None:
            continue
        for override in sets:
            if any(_touches(override, pattern) for pattern in patterns):
                raise UserError(f"{override.label} and {flags[field]} both set {override.key}: give one of them")


def resolve_suite(
    name_or_path: "str | None",
    sets: Mapping[str, object] | Sequence[SetOverride] | Iterable[str] | None,
    overrides: "Overrides",
    flags: Mapping[str, str] = CLI_FLAGS,
) -> "Suite":
    """The suite a run trains: the file, its keys set by `sets`, then the grid flags (`overrides`) applied."""
    from .suite import apply_overrides, load_suite

    parsed = sets_from(sets)
    refuse_flag_clashes(parsed, overrides, flags)
    return apply_overrides(load_suite(name_or_path, set=parsed), overrides)
