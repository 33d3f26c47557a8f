"""Where a benchmark's figures come from: the source tree, the machine's load and speed,
staleness.

A result is only as good as the code it measured. :func:`source_state` records the git
commit of the msgbus checkout that ran (and whether its tree was dirty, and in which files);
:func:`load_average` the machine's load before and after; :func:`host_speed` how fast the
machine ran Python at that moment (a virtual machine's host can slow it several-fold for hours
while its own load average stays low); :func:`stale_paths` tells, at report time, which files
under ``msgbus/`` and ``backends/`` changed since the results' commit, so the report can say
so in its first lines. Every function answers "unknown" (None) instead of guessing when there
is no git checkout or no ``git``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = [
    "CODE_PATHS",
    "HOST_SPEED_UNIT",
    "find_checkout",
    "host_speed",
    "load_average",
    "source_state",
    "stale_paths",
]

CODE_PATHS = ("msgbus", "backends")
"""The folders whose changes make earlier results stale (the library and its backends)."""


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def find_checkout(candidates: list[Path] | None = None) -> Path | None:
    """The top folder of the msgbus git checkout: the one msgbus is imported from (an
    editable install, or a tox env inside a clone), else the one of the current folder; None
    when neither is in a git checkout holding ``msgbus/``."""
    if candidates is None:
        import msgbus

        candidates = [Path(msgbus.__file__).resolve().parents[1], Path.cwd()]
    for folder in candidates:
        top = _git(folder, "rev-parse", "--show-toplevel") if folder.is_dir() else None
        if top is not None and (Path(top.strip()) / "msgbus").is_dir():
            return Path(top.strip())
    return None


def source_state(root: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "dirty_paths", "checkout"}`` of the checkout (all None when
    unknown). ``dirty`` counts only changes under :data:`CODE_PATHS` and ``pyproject.toml``
    (results folders and notes written beside a run do not make it dirty)."""
    root = root or find_checkout()
    unknown: dict[str, Any] = {"commit": None, "dirty": None, "dirty_paths": [], "checkout": None}
    if root is None:
        return unknown
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", *CODE_PATHS, "pyproject.toml")
    if commit is None or status is None:
        return unknown
    paths = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "commit": commit.strip(),
        "dirty": bool(paths),
        "dirty_paths": paths[:50],
        "checkout": str(root),
    }


def stale_paths(commit: str, root: Path | None = None) -> list[str] | None:
    """Files under :data:`CODE_PATHS` that differ between ``commit`` and the checkout's
    working tree (committed since, or uncommitted); None when that cannot be told (no
    checkout, or ``commit`` unknown to it)."""
    root = root or find_checkout()
    if root is None or not commit:
        return None
    changed = _git(root, "diff", "--name-only", commit, "--", *CODE_PATHS)
    if changed is None:
        return None
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS)
    names = set(changed.split()) | set((untracked or "").split())
    return sorted(names)


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


HOST_SPEED_UNIT = "M loop steps/s"
"""The unit of :func:`host_speed`: millions of steps of its fixed Python loop per second."""

_SPEED_ROUND_STEPS = 200_000


def host_speed(rounds: int = 5) -> float:
    """How fast this machine runs single-threaded Python now, in :data:`HOST_SPEED_UNIT`.

    Times a fixed pure-Python loop ``rounds`` times (about 40 ms each on a 5-unit host) and
    returns the median rate, so one preempted round does not set the figure. The score compares
    moments of one machine (before and after a run, run against run); it is no cross-machine
    rating. Measured in the benchmark's own process, between runs, when no workload is running.
    """
    times = []
    for _ in range(max(1, rounds)):
        started = time.perf_counter()
        total = 0
        for step in range(_SPEED_ROUND_STEPS):
            total += step
        times.append(time.perf_counter() - started)
    return round(_SPEED_ROUND_STEPS / statistics.median(times) / 1e6, 2)
