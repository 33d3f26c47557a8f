"""Benchmark workloads: TOML data files, validated into immutable :class:`Workload` objects.

A workload file holds the fields of :class:`Workload` at the top level, plus optional
``[[steps]]`` tables. Each step overrides some fields (a rate sweep overrides
``producer_rate``, a scaling sweep ``partitions`` and ``consumers_per_group``) and may carry a
``label``; a workload without steps has one step. :func:`load_workload` accepts a path or the
name of a shipped workload (``msgbus/bench/workloads/<name>.toml``); :func:`standard_set`
lists the shipped ones in report order, and :func:`quick` shrinks a workload for smoke runs.

Every problem in a file raises :class:`WorkloadError` (a ``ValueError``) naming the file, the
field and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "KINDS",
    "SHIPPED",
    "STANDARD",
    "STANDARD_RUN",
    "Step",
    "Workload",
    "WorkloadError",
    "load_workload",
    "parse_workload",
    "quick",
    "shipped_path",
    "standard_set",
]

SHIPPED = Path(__file__).with_name("workloads")
"""Folder of the shipped workload files."""

KINDS = (
    "latency",
    "sweep",
    "max-rate",
    "scaling",
    "fan-out",
    "size",
    "backlog",
    "durability",
    "replication",
    "availability",
)
"""What a workload's results are charted as in the report (the ``kind`` field)."""

_SIZES = {"account.created": 0}


class WorkloadError(ValueError):
    """A workload file or step is invalid; the message names the file and field."""


@dataclass(frozen=True)
class Workload:
    """One step's worth of settings (all times in seconds, rates in messages/s).

    - ``topics`` / ``partitions``: topics per run (producers spread messages over them in
      turn, every group subscribes to all) and partitions per topic (Kafka only; other
      brokers have one queue per group and topic).
    - ``message_size``: ``"account.created"`` (the bank's event, about 200 bytes of JSON) or a
      body size in bytes (the same event padded to that size).
    - ``producers``, ``producer_rate`` (total over all producers; 0 = as fast as the client
      allows, closed loop with ``max_in_flight`` unconfirmed sends per producer).
    - ``consumer_groups`` × ``consumers_per_group`` consumer processes, each with
      ``consumer_concurrency`` handler threads (msgbus) and ``prefetch``.
    - ``warmup`` then ``duration`` (the measured window); ``drain_timeout``: how long to
      wait, after the producers stop, for every group to receive everything.
    - ``handler_cost_ms``: simulated I/O per message (a sleep, like sending a mail); skipped
      once the window is over so the drain is quick.
    - ``durability``: ``D0`` (no fsync before a publish is confirmed) or ``D1`` (fsync before
      confirm); each broker maps it to its settings (see :mod:`msgbus.bench.targets`).
    - ``key_distribution``: ``round-robin`` over ``keys`` keys, ``random`` over them, or
      ``none`` (no key).
    - ``backlog_pause``: consumers hold their first message this long once the window opens
      (a backlog builds), then drain it.
    - ``clients``: ``msgbus`` and/or ``raw`` (the broker's plain Python client doing the same
      work, see :mod:`msgbus.bench.raw`).
    - ``stop_when_behind``: in a stepped workload, skip the remaining steps for a target and
      client once a step could not keep up.
    - ``repeats``: runs per step when the command line does not say (None: the command's
      default); the workloads a verdict rests on ask for 5.
    - ``kinds``: the broker kinds (``kafka``, ``rabbitmq``, ``activemq``, ``memory``,
      ``kombu``) this workload runs on; empty means every kind.
    - ``profiles``: the target profiles (``single``, ``replicated``, ``failover``) it runs
      on; empty means every profile.
    - ``kill_at``: seconds into the window at which the runner kills the node serving the
      clients (a cluster target's master); 0: no fault. The node is started again after
      the run.
    """

    name: str
    kind: str = "latency"
    description: str = ""
    label: str = ""
    topics: int = 1
    partitions: int = 3
    message_size: str | int = "account.created"
    producers: int = 1
    producer_rate: float = 1000.0
    max_in_flight: int = 1000
    consumer_groups: int = 1
    consumers_per_group: int = 1
    consumer_concurrency: int = 1
    prefetch: int = 256
    warmup: float = 2.0
    duration: float = 10.0
    drain_timeout: float = 60.0
    handler_cost_ms: float = 0.0
    durability: Literal["D0", "D1"] = "D0"
    key_distribution: Literal["round-robin", "random", "none"] = "round-robin"
    keys: int = 100
    backlog_pause: float = 0.0
    clients: tuple[str, ...] = ("msgbus",)
    stop_when_behind: bool = False
    repeats: int | None = None
    kinds: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    kill_at: float = 0.0

    @property
    def body_bytes(self) -> int:
        """Target body size in bytes (0 for the natural ``account.created`` event)."""
        return 0 if isinstance(self.message_size, str) else self.message_size

    @property
    def consumers(self) -> int:
        """Consumer processes in all (groups × consumers per group)."""
        return self.consumer_groups * self.consumers_per_group

    @property
    def size_label(self) -> str:
        """``account.created`` or a size such as ``1 KiB``."""
        if isinstance(self.message_size, str):
            return self.message_size
        size = self.message_size
        return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready; tuples become lists)."""
        data = dataclasses.asdict(self)
        data["clients"] = list(self.clients)
        data["kinds"] = list(self.kinds)
        data["profiles"] = list(self.profiles)
        return data


@dataclass(frozen=True)
class Step:
    """One step of a workload: its position, a short label and the resolved settings."""

    index: int
    label: str
    workload: Workload


_FIELDS = {f.name: f for f in dataclasses.fields(Workload)}
_POSITIVE_INT = (
    "topics",
    "partitions",
    "producers",
    "max_in_flight",
    "consumer_groups",
    "consumers_per_group",
    "consumer_concurrency",
    "prefetch",
    "keys",
)
_NON_NEGATIVE = ("producer_rate", "warmup", "handler_cost_ms", "backlog_pause", "kill_at")
_CLIENTS = ("msgbus", "raw")
BROKER_KINDS = ("kafka", "rabbitmq", "activemq", "memory", "kombu")
"""What the ``kinds`` field may name."""
PROFILES = ("single", "replicated", "failover")
"""What the ``profiles`` field may name."""
MAX_BODY = 16 * 1024 * 1024


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise WorkloadError(
                f"{where}: unknown field {key!r}{hint}; known fields: {', '.join(sorted(allowed))}"
            )


def _validate(where: str, values: dict[str, Any]) -> Workload:
    """Type-check and range-check ``values`` and build a :class:`Workload`."""
    data = dict(values)
    if "name" not in data or not isinstance(data["name"], str) or not data["name"].strip():
        raise WorkloadError(f"{where}: 'name' is required (a non-empty string)")
    for name in _POSITIVE_INT:
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WorkloadError(f"{where}: {name!r} must be an integer >= 1, not {value!r}")
    for name in (*_NON_NEGATIVE, "duration", "drain_timeout"):
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise WorkloadError(f"{where}: {name!r} must be a number >= 0, not {value!r}")
            data[name] = float(value)
    for name in ("duration", "drain_timeout"):
        if name in data and data[name] <= 0:
            raise WorkloadError(f"{where}: {name!r} must be > 0, not {data[name]!r}")
    for name in ("name", "description", "label"):
        if name in data and not isinstance(data[name], str):
            raise WorkloadError(f"{where}: {name!r} must be a string")
    if "kind" in data and data["kind"] not in KINDS:
        raise WorkloadError(
            f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {data['kind']!r}"
        )
    size = data.get("message_size", "account.created")
    if isinstance(size, str):
        if size not in _SIZES:
            raise WorkloadError(
                f"{where}: 'message_size' must be 'account.created' or a byte count, not {size!r}"
            )
    elif isinstance(size, bool) or not isinstance(size, int) or not 64 <= size <= MAX_BODY:
        raise WorkloadError(
            f"{where}: 'message_size' must be between 64 and {MAX_BODY} bytes, not {size!r}"
        )
    if data.get("durability", "D0") not in ("D0", "D1"):
        raise WorkloadError(
            f"{where}: 'durability' must be 'D0' or 'D1', not {data['durability']!r}"
        )
    keydist = data.get("key_distribution", "round-robin")
    if keydist not in ("round-robin", "random", "none"):
        raise WorkloadError(
            f"{where}: 'key_distribution' must be 'round-robin', 'random' or 'none', "
            f"not {keydist!r}"
        )
    if "clients" in data:
        clients = data["clients"]
        if (
            not isinstance(clients, list | tuple)
            or not clients
            or any(c not in _CLIENTS for c in clients)
        ):
            raise WorkloadError(
                f"{where}: 'clients' must be a non-empty list of 'msgbus' and/or 'raw', "
                f"not {clients!r}"
            )
        data["clients"] = tuple(dict.fromkeys(clients))
    if "stop_when_behind" in data and not isinstance(data["stop_when_behind"], bool):
        raise WorkloadError(f"{where}: 'stop_when_behind' must be true or false")
    if "repeats" in data:
        value = data["repeats"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorkloadError(f"{where}: 'repeats' must be an integer >= 1, not {value!r}")
    if "kinds" in data:
        kinds = data["kinds"]
        if not isinstance(kinds, list | tuple) or any(k not in BROKER_KINDS for k in kinds):
            raise WorkloadError(
                f"{where}: 'kinds' must be a list of broker kinds from "
                f"{', '.join(BROKER_KINDS)}, not {kinds!r}"
            )
        data["kinds"] = tuple(dict.fromkeys(kinds))
    if "profiles" in data:
        profiles = data["profiles"]
        if not isinstance(profiles, list | tuple) or any(p not in PROFILES for p in profiles):
            raise WorkloadError(
                f"{where}: 'profiles' must be a list from {', '.join(PROFILES)}, not {profiles!r}"
            )
        data["profiles"] = tuple(dict.fromkeys(profiles))
    return Workload(**data)


def parse_workload(text: str, where: str = "<workload>") -> list[Step]:
    """Parse TOML ``text`` into its steps (at least one). Raises :class:`WorkloadError`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"{where}: not valid TOML: {exc}") from None
    steps_raw = raw.pop("steps", None)
    _check_keys(where, raw, set(_FIELDS))
    base = _validate(where, raw)
    if steps_raw is None:
        return [Step(0, base.label or base.name, base)]
    if not isinstance(steps_raw, list) or not steps_raw:
        raise WorkloadError(f"{where}: 'steps' must be a non-empty array of tables ([[steps]])")
    steps = []
    for index, overrides in enumerate(steps_raw):
        step_where = f"{where} step {index + 1}"
        if not isinstance(overrides, dict):
            raise WorkloadError(f"{step_where}: each step must be a table")
        _check_keys(step_where, overrides, set(_FIELDS) - {"name", "kind"})
        merged = {**raw, **overrides}
        workload = _validate(step_where, merged)
        label = workload.label or ", ".join(f"{k}={v}" for k, v in overrides.items())
        steps.append(Step(index, label or str(index + 1), workload))
    return steps


def shipped_path(name: str) -> Path:
    """Path of the shipped workload ``name`` (raises :class:`WorkloadError` if none)."""
    path = SHIPPED / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(SHIPPED.glob("*.toml")))
        raise WorkloadError(f"no workload file {name!r}; shipped workloads: {known}")
    return path


def load_workload(spec: str | Path) -> list[Step]:
    """Load a workload from a file path, or by the name of a shipped workload.

    Raises :class:`WorkloadError` for a missing file or invalid content.
    """
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = shipped_path(str(spec))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{spec}: cannot read workload file: {exc.strerror}") from None
    return parse_workload(text, where=str(path.name))


STANDARD = (
    "latency",
    "rate-sweep",
    "max-rate",
    "scaling",
    "io-bound",
    "fan-out",
    "message-size",
    "backlog",
    "durability",
    "replication",
    "availability",
)
"""Every shipped workload, in report order (the report lists a results folder's workloads
in this order)."""

STANDARD_RUN = (
    "latency",
    "rate-sweep",
    "max-rate",
    "scaling",
    "fan-out",
    "replication",
    "availability",
)
"""The standard set: what ``msgbus bench run`` runs without named workloads, the workloads
that answer the article's claim ("performs": latency at low and high load, throughput;
"scales": partitions and consumers, fan-out, replication; ActiveMQ's failover as
availability). ``io-bound``, ``message-size``, ``backlog`` and ``durability`` stay shipped
for runs that name them."""

QUICK = ("latency", "scaling")
"""The workloads of ``--quick`` (each shrunk by :func:`quick`): the raw clients and the
multi-process scaling path, one run each."""


def standard_set(quick_run: bool = False) -> list[str]:
    """Names of the shipped workloads a full (or ``--quick``) run uses, in report order."""
    return list(QUICK if quick_run else STANDARD_RUN)


def quick(steps: list[Step]) -> list[Step]:
    """Shrink ``steps`` for a smoke run: at most the first and last step, 0.5 s warm-up,
    2 s window, 15 s drain timeout, backlog pause at most 1 s, a fault at most 0.5 s into
    the window."""
    chosen = steps if len(steps) <= 2 else [steps[0], steps[-1]]
    out = []
    for i, step in enumerate(chosen):
        w = step.workload
        w = dataclasses.replace(
            w,
            warmup=min(w.warmup, 0.5),
            duration=min(w.duration, 2.0),
            drain_timeout=min(w.drain_timeout, 15.0),
            backlog_pause=min(w.backlog_pause, 1.0),
            kill_at=min(w.kill_at, 0.5),
        )
        out.append(Step(i, step.label, w))
    return out
