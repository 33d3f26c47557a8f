"""Fault injection for msgbus: a checker of queue histories, a TCP fault proxy, and the
``msgbus chaos`` command that runs the bank workload under named fault schedules.

* :mod:`msgbus.testing.faults.checker` — :class:`History` and :func:`check` (lost, duplicated,
  reordered per key, recovery time per fault; never a success when a check could not run);
* :mod:`msgbus.testing.faults.proxy` — :class:`FaultProxy`, a TCP proxy on 127.0.0.1 that
  delays, partitions, refuses and resets connections;
* :mod:`msgbus.testing.faults.schedules` — the named schedules; :mod:`~.targets` — what a
  schedule acts on (a harness cluster or node, or a URL, with proxies);
  :mod:`~.workload` — the producer and consumer processes; :mod:`~.chaos` —
  :func:`~msgbus.testing.faults.chaos.run_chaos`; :mod:`~.cli` — ``msgbus chaos``.

Only the standard library is used here; the worker processes import the bank example
(``msgbus.contrib.bank``, extra ``bank``) lazily.
"""

from __future__ import annotations

from msgbus.testing.faults.checker import Fault, History, Report, check

__all__ = ["Fault", "History", "Report", "check"]
