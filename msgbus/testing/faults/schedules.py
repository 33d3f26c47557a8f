"""Named fault schedules for ``msgbus chaos``: which faults, in which order, how long each.

A schedule is a sequence of fault kinds. The runner injects them one at a time: the fault
(held ``hold`` seconds where it lasts: a node down, a pause, a partition, a delay), then a wait
until the pipeline works end to end again (an account created after the fault's start has been
delivered), then ``gap`` seconds of normal running. A normal run cycles through the sequence
until ``--duration`` has passed; ``--quick`` runs it once with short holds and gaps (the form
CI runs). Fault kinds a target cannot inject (see
:meth:`~msgbus.testing.faults.targets.ChaosTarget.supports`) are left out and reported.

Fault kinds:

``kill-consumer``  SIGKILL one email-service process (round robin), start a new one at once;
``kill-producer``  the account service commits an account, then SIGKILLs itself before its
                   outbox relay could publish it; restarted, the relay must publish the row;
``kill-node``      SIGKILL one broker node (round robin; ActiveMQ: the master), restart it
                   after ``hold``;
``pause-node``     SIGSTOP one broker node for ``hold``, then SIGCONT;
``restart-all``    stop every node gracefully and start the whole broker again (its recovery
                   counts from the start, up to the first account created after the
                   restart to be delivered: the nodes stop one by one, and the first
                   moments of the fault may still deliver);
``partition``      the fault proxies stop forwarding for ``hold`` (connections stay open);
``delay``          the fault proxies hold every chunk 0.2 s for ``hold``;
``reset``          the fault proxies abort every connection with a TCP RST.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCHEDULES", "Schedule", "describe_schedules", "get_schedule"]


@dataclass(frozen=True)
class Schedule:
    """A named schedule: ``faults`` in order, ``hold``/``gap`` seconds for a normal run and
    ``quick_hold``/``quick_gap`` for ``--quick``."""

    name: str
    description: str
    faults: tuple[str, ...]
    hold: float = 5.0
    gap: float = 5.0
    quick_hold: float = 2.0
    quick_gap: float = 1.0


SCHEDULES: dict[str, Schedule] = {
    s.name: s
    for s in (
        Schedule(
            "mixed",
            "every fault kind in turn: processes, nodes, network (the default)",
            (
                "kill-consumer",
                "kill-node",
                "partition",
                "kill-producer",
                "pause-node",
                "reset",
                "delay",
                "restart-all",
            ),
        ),
        Schedule(
            "smoke",
            "the cheap kinds, no node restart: consumer and producer SIGKILL, a node paused, "
            "connections reset (what CI runs with --quick)",
            ("kill-consumer", "kill-producer", "pause-node", "reset"),
        ),
        Schedule(
            "processes",
            "SIGKILL of consumers and of the producer",
            ("kill-consumer", "kill-producer"),
        ),
        Schedule(
            "nodes",
            "broker node SIGKILL, SIGSTOP pause, full restart",
            ("kill-node", "pause-node", "restart-all"),
        ),
        Schedule("network", "proxy partition, delay and reset", ("partition", "delay", "reset")),
    )
}
"""Every schedule by name."""


def get_schedule(name: str) -> Schedule:
    """The schedule called ``name``; ValueError listing the known names otherwise."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}"
        ) from None


def describe_schedules() -> str:
    """One line per schedule (name, faults, description), for ``--help``."""
    return "\n".join(
        f"  {s.name:<10} {', '.join(s.faults)}\n  {'':<10} {s.description}"
        for s in SCHEDULES.values()
    )
