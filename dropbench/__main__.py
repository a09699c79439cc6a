"""`python -m dropbench` is the `dropbench` command."""

from .cli import entry

entry()
