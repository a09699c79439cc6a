"""Registries that built-ins and plugins fill alike: tasks, models and regularizers.

A registry holds the package's own entries (registered in code, where each is defined), the entries that
installed distributions declare as Python entry points (`[project.entry-points."dropbench.tasks"]`, `...models`,
`...regularizers`), and resolves a `module:object` reference written in a suite. The built-ins come first: a
plugin entry named like a built-in is ignored (and listed as such). Entry points are found through
`importlib.metadata`, so a distribution's dist-info anywhere on sys.path counts; each is imported only when its
name is used or listed. Workers (a pool's spawned processes, Ray tasks) resolve names the same way, so a plugin
must be installed (or importable) wherever cells run. docs/plugins.md has the protocol of each registry.

This module imports nothing heavy: `dropbench --help` may list what it finds.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")
BUILTIN = "dropbench"  # the source of the package's own entries
REFERENCE_SEPARATOR = ":"  # "module:object", as entry points write a reference


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered name: its object (None where it could not be loaded), where it comes from, and why not."""

    name: str
    value: T | None
    source: str  # "dropbench", "<distribution> <version>", or the module:object reference itself
    problem: str = ""  # why the entry is not usable: it failed to load, or a built-in has its name

    @property
    def builtin(self) -> bool:
        return self.source == BUILTIN


def is_reference(name: str) -> bool:
    """Whether a name is a `module:object` reference rather than a registered name."""
    return REFERENCE_SEPARATOR in name


@cache
def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """The group's entry points by name, the first of each name on sys.path (as importlib.metadata orders them).
    Cached: found once per process (`refresh` forgets them, for tests that install a plugin meanwhile)."""
    found: dict[str, metadata.EntryPoint] = {}
    for point in metadata.entry_points(group=group):
        found.setdefault(point.name, point)
    return found


def declared(group: str) -> list[str]:
    """The names installed plugins declare in an entry-point group, sorted, without loading (or importing) any."""
    return sorted(_entry_points(group))


def refresh() -> None:
    """Forget the entry points found and the objects loaded, so that the next lookup looks again."""
    _entry_points.cache_clear()
    for registry in _REGISTRIES:
        registry.forget()


def import_reference(reference: str, what: str) -> object:
    """The object a `module:object` reference names (`object` may be dotted: `module:Class.attribute`)."""
    module_name, _, attribute = reference.partition(REFERENCE_SEPARATOR)
    if not module_name or not attribute:
        raise UserError(f"{what} '{reference}': a reference is module:object, e.g. mypackage.models:Wide")
    try:
        value: object = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any failure of the user's module is one line, not a traceback
        raise UserError(f"{what} '{reference}': cannot import {module_name}: {_one_line(error)}") from None
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise UserError(f"{what} '{reference}': module {module_name} has no attribute '{attribute}'")
        value = getattr(value, part)
    return value


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _source(point: metadata.EntryPoint) -> str:
    dist = point.dist
    return f"{dist.name} {dist.version}" if dist is not None else point.value


class Registry(Generic[T]):
    """Entries of one kind by name. `check(value, name)` turns what a plugin registered into the registry's type
    (or raises UserError saying what the protocol asks), so a bad plugin fails with one line where it is used."""

    def __init__(self, group: str, what: str, check: Callable[[object, str], T]) -> None:
        self.group, self.what, self.check = group, what, check
        self.builtins: dict[str, T] = {}
        self._plugins: dict[str, Entry[T]] = {}  # loaded plugin entries and references, by name

    def register(self, name: str, value: T) -> T:
        """A built-in entry (the package's own, registered where it is defined)."""
        self.builtins[name] = value
        return value

    def forget(self) -> None:
        self._plugins.clear()

    def plugin_names(self) -> list[str]:
        """Names that installed plugins declare, built-in names left out (those plugins are ignored)."""
        return sorted(name for name in _entry_points(self.group) if name not in self.builtins)

    def names(self) -> list[str]:
        """Every usable name without loading anything: the built-ins in their order, then the plugins' sorted."""
        return [*self.builtins, *self.plugin_names()]

    def known(self, name: str) -> bool:
        """Whether `name` is a built-in or a plugin's name, or a reference (checked when it is resolved)."""
        return name in self.builtins or name in _entry_points(self.group) or is_reference(name)

    def get(self, name: str) -> T | None:
        """The entry of `name`, loading a plugin or importing a reference as needed; None for a name that is
        neither. A plugin or reference that fails to load raises UserError naming it."""
        if name in self.builtins:
            return self.builtins[name]
        entry = self._load(name)
        if entry is None:
            return None
        if entry.value is None:
            raise UserError(f"{self.what} '{name}' ({entry.source}): {entry.problem}")
        return entry.value

    def source(self, name: str) -> str:
        """Where `name` comes from: 'dropbench', a distribution and its version, or the reference itself."""
        if name in self.builtins:
            return BUILTIN
        entry = self._load(name)
        return entry.source if entry is not None else ""

    def _load(self, name: str) -> Entry[T] | None:
        if name in self._plugins:
            return self._plugins[name]
        point = _entry_points(self.group).get(name)
        if point is not None:
            try:
                raw = point.load()
            except Exception as error:  # noqa: BLE001 - a broken plugin is reported, never a traceback
                entry: Entry[T] = Entry(name, None, _source(point), f"cannot load {point.value}: {_one_line(error)}")
            else:
                entry = self._checked(name, raw, _source(point))
        elif is_reference(name):
            entry = self._checked(name, import_reference(name, self.what), name)
        else:
            return None
        self._plugins[name] = entry
        return entry

    def _checked(self, name: str, raw: object, source: str) -> Entry[T]:
        try:
            return Entry(name, self.check(raw, name), source)
        except UserError as error:
            return Entry(name, None, source, str(error))

    def entries(self) -> list[Entry[T]]:
        """Every built-in and installed plugin entry, plugins loaded (for listing); an unusable one says why."""
        listed: list[Entry[T]] = [Entry(name, value, BUILTIN) for name, value in self.builtins.items()]
        for name, point in sorted(_entry_points(self.group).items()):
            if name in self.builtins:
                listed.append(Entry(name, None, _source(point), f"ignored: a built-in {self.what} has this name"))
            else:
                loaded = self._load(name)
                if loaded is not None:
                    listed.append(loaded)
        return listed

    def unknown(self, name: str) -> UserError:
        """The error for a name that is none of the registry's: the close ones and every known name."""
        import difflib

        names = self.names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return UserError(f"unknown {self.what} '{name}'{hint}; known: {', '.join(names)}, or module:object")


_REGISTRIES: list[Registry] = []


def registry(group: str, what: str, check: Callable[[object, str], T]) -> Registry[T]:
    """A new registry for entry-point group `group` (refreshed with the others by `refresh`)."""
    made: Registry[T] = Registry(group, what, check)
    _REGISTRIES.append(made)
    return made
