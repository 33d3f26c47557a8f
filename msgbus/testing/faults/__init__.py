"""Fault injection for msgbus: a checker of queue histories and a TCP fault proxy (fault
schedules and a ``msgbus chaos`` command are not written yet).

* :mod:`msgbus.testing.faults.checker` — :class:`History` and :func:`check` (lost, duplicated,
  reordered per key, recovery time per fault; never a success when a check could not run);
* :mod:`msgbus.testing.faults.proxy` — :class:`FaultProxy`, a TCP proxy on 127.0.0.1 that
  delays, partitions, refuses and resets connections.

Only the standard library is used here.
"""

from __future__ import annotations

from msgbus.testing.faults.checker import Fault, History, Report, check

__all__ = ["Fault", "History", "Report", "check"]
