"""Subcommands of the ``msgbus`` command, found through the entry-point group ``msgbus.commands``.

An entry point's name is the subcommand (``msgbus NAME ...``) and its value
``"module:function"`` names a ``main(argv: list[str]) -> int`` that gets the arguments after
the name and returns the exit status. msgbus declares its own (``broker``, ``bench``) in
pyproject.toml the same way; a package adds one by declaring an entry point. A module is
imported only when its subcommand runs.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

__all__ = ["GROUP", "available_commands", "load_command"]

GROUP = "msgbus.commands"
"""The entry-point group of ``msgbus`` subcommands."""


def available_commands() -> dict[str, EntryPoint]:
    """Every installed subcommand by name (the later of two same-named entry points wins)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_command(entry_point: EntryPoint) -> Callable[[list[str]], int]:
    """The ``main`` function an entry point names (imports its module).

    Raises ``ModuleNotFoundError`` when the module needs a package that is not installed
    (the CLI turns it into a ``pip install`` hint) and ``TypeError`` when it is not callable.
    """
    main = entry_point.load()
    if not callable(main):
        raise TypeError(
            f"the msgbus command {entry_point.name!r} ({entry_point.value}) is not callable"
        )
    return main  # type: ignore[no-any-return]
