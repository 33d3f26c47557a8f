"""The wheel ships every package of the source tree.

``pyproject.toml`` lists the packages by hand (``backends/`` and ``contrib/`` are mapped into
``msgbus``), so a new package folder missing from that list would work from a checkout and
break in every installed copy — tox installs the wheel, so it fails there first, late.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: source folder -> the package name it is installed as
MAPPED_ROOTS = {"msgbus": "msgbus", "backends": "msgbus.backends", "contrib": "msgbus.contrib"}


def _source_packages() -> set[str]:
    found = set()
    for folder, installed_as in MAPPED_ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((installed_as, *relative)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    assert _source_packages() - listed == set()
