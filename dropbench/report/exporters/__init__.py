"""One exporter per output format, one module per exporter: `table` (rich tables on the terminal), `markdown`,
`csv`, `json` and `html` (one self-contained page). The module's name is the format's name on the command line
(`--format NAME`), so the CLI lists the formats from the file names without importing any of them (nor pandas).

To add a format, add one module here, NAME.py, holding one class:

    @register
    class LatexExporter(Exporter):
        name = "latex"     # the module's name
        suffix = ".tex"    # for a file of this format

        def export(self, report: Report) -> str: ...
        def export_comparison(self, result: CompareResult) -> str: ...
        def export_history(self, history: History) -> str: ...

`report`, `compare` and `history` offer it at once; tests/test_exporters.py runs every registered exporter.
"""

import pkgutil
from importlib import import_module
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ..compare import CompareResult
    from ..data import Report
    from ..history import History

DEFAULT = "table"
_REGISTRY: dict[str, type["Exporter"]] = {}


class Exporter:
    """A format: a `Report` (dropbench report), a `CompareResult` (dropbench compare) and a `History` (dropbench
    history) laid out as text, or as a rich renderable that the console prints. Exporters never compute a
    statistic."""

    name: ClassVar[str]
    suffix: ClassVar[str]

    def export(self, report: "Report") -> "str | RenderableType":
        raise NotImplementedError

    def export_comparison(self, result: "CompareResult") -> "str | RenderableType":
        raise NotImplementedError

    def export_history(self, history: "History") -> "str | RenderableType":
        raise NotImplementedError


def register(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: file `cls` under its name, which must be its module's (that is how the CLI finds it)."""
    module = cls.__module__.rsplit(".", 1)[-1]
    if cls.name != module:
        raise TypeError(f"exporter {cls.__qualname__} is named {cls.name!r} but lives in {module}.py")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    """The formats, the default first: this package's module names, found without importing them."""
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return tuple(sorted(found, key=lambda name: name != DEFAULT))


def get(name: str) -> Exporter:
    """The exporter of format `name` (its module is imported on first use)."""
    if name not in names():
        raise ValueError(f"unknown format {name!r}; known: {', '.join(names())}")
    import_module(f".{name}", __name__)
    return _REGISTRY[name]()
