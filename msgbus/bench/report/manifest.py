"""The report's framing blocks: the environment and every command that wrote the results
(with commit, dirty tree, load and host speed), the staleness and host-speed warnings, and the
correctness tally.

Provenance is read from ``manifest.json`` (see :mod:`msgbus.bench.provenance`); a manifest
that lacks a field renders it as unknown, never as a crash.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from msgbus.bench import charts
from msgbus.bench.provenance import HOST_SPEED_UNIT
from msgbus.bench.render import Block, Bullets, Chart, Heading, Para, Table
from msgbus.bench.report.data import NA, ReportData
from msgbus.bench.report.tables import TANSU_NOTE

__all__ = ["SLOW_HOST_FACTOR", "correctness", "host_speed_warning", "manifest_blocks", "staleness"]

SLOW_HOST_FACTOR = 1.5
"""A run whose host-speed score is this many times below the median of the results ran on a
slowed host (the score's own noise on a busy host is about ±30 %)."""


def manifest_blocks(data: ReportData) -> list[Block]:
    """The Environment section: machine, Python, packages, one row per command with its
    commit and load, repeats, times; then the brokers with what ran and their durability
    profiles."""
    m = data.manifest
    out: list[Block] = [Heading(2, "Environment")]
    machine = m.get("machine", {})
    py = m.get("python", {})
    mem = machine.get("memory_bytes")
    rows = [
        [
            "machine",
            f"{machine.get('cpus')} CPUs ({machine.get('cpu_model', '?')}), "
            f"{(mem or 0) / 2**30:.1f} GiB RAM, {machine.get('platform', '?')}",
        ],
        [
            "Python",
            f"{py.get('implementation', '')} {py.get('version', '?')}",
        ],
        ["packages", ", ".join(f"{k} {v or 'absent'}" for k, v in m.get("packages", {}).items())],
        *_invocation_rows(m),
        *_host_speed_rows(data),
        ["repeats", str(m.get("repeats", "?"))],
        ["started / finished", f"{m.get('started_at', '?')} / {m.get('finished_at', '?')}"],
        *([["Kafka note", m["kafka_note"]]] if m.get("kafka_note") else []),
    ]
    out.append(Table(["", ""], rows))
    trows = []
    for name, info in m.get("targets", {}).items():
        trows.append(
            [
                name + (" (tansu, not Apache Kafka)" if info.get("on_tansu") else ""),
                info.get("description", "")
                + (f"; driver {info['driver']}" if info.get("driver") else "")
                + (
                    f"; {info.get('profile') or 'replicated'}, {info['nodes']} nodes"
                    if (info.get("nodes") or 1) > 1
                    else ""
                )
                + (
                    f" — **no msgbus runs** ({info['msgbus_missing']}): raw client only"
                    if info.get("msgbus_missing")
                    else ""
                ),
                f"`{info.get('url', '')}`",
                info.get("durability", {}).get("D0", ""),
                info.get("durability", {}).get("D1", ""),
            ]
        )
    out.append(Heading(3, "Brokers and durability profiles"))
    out.append(
        Table(
            [
                "target",
                "what ran",
                "URL (password hidden)",
                "D0 (no fsync per message)",
                "D1 (fsync before confirm)",
            ],
            trows,
            TANSU_NOTE if any(i.get("on_tansu") for i in m.get("targets", {}).values()) else "",
        )
    )
    out += _priming(m)
    return out


def _priming(m: dict[str, Any]) -> list[Block]:
    """The warm-up load each broker got once after it started (``targets[*].priming``):
    when its throughput stopped improving, and the curves."""
    primed = {
        name: info["priming"]
        for name, info in m.get("targets", {}).items()
        if isinstance(info.get("priming"), dict)
    }
    if not primed:
        return []
    rows = [
        [
            name,
            f"{p.get('seconds', '?')}",
            NA if p.get("settled_at_s") is None else f"{p['settled_at_s']:g}",
        ]
        for name, p in primed.items()
    ]
    out: list[Block] = [
        Heading(3, "Warm-up before measuring"),
        Para(
            "Each broker got a warm-up load once after it started (the JVM compiles its hot "
            "paths); settled = when its msg/s stopped improving. Every run then has its own "
            "warm-up before its window."
        ),
        Table(["target", "warm-up load s", "settled at s"], rows),
    ]
    curves = {
        name: [(float(x), float(y)) for x, y in p.get("curve") or []] for name, p in primed.items()
    }
    if any(curves.values()):
        out.append(
            Chart(
                "charts/warmup.png",
                charts.line_chart(
                    curves,
                    title="Warm-up: msg/s while each broker warms up",
                    xlabel="seconds since the warm-up load started",
                    ylabel="msg/s",
                ),
                "Warm-up load per broker: throughput over time (flat = warmed up)",
            )
        )
    return out


def _invocation_rows(m: dict[str, Any]) -> list[list[str]]:
    """One row per command that wrote into the results: the command, the source commit (and
    whether its tree was dirty) and the load average before and after."""
    invocations = m.get("invocations") or [{"command": c} for c in m.get("commands", [])]
    if not invocations:
        invocations = [{"command": m.get("command", "?")}]
    rows = []
    for number, inv in enumerate(invocations, 1):
        source = inv.get("source") or {}
        commit = source.get("commit")
        where = "source unknown"
        if commit:
            where = f"at {commit[:10]}" + (" **(dirty tree)**" if source.get("dirty") else "")
        before, after = inv.get("load_before"), inv.get("load_after")
        load = ""
        if before or after:
            load = f"; load average {_load(before)} before, {_load(after)} after"
        speed_before, speed_after = inv.get("host_speed_before"), inv.get("host_speed_after")
        if speed_before or speed_after:
            load += (
                f"; host speed {speed_before or '?'} before, {speed_after or '?'} after "
                f"({HOST_SPEED_UNIT})"
            )
        label = "command" if len(invocations) == 1 else f"command {number}"
        rows.append([label, f"`{inv.get('command') or '?'}` {where}{load}"])
    return rows


def _run_speeds(data: ReportData) -> list[tuple[float, dict[str, Any]]]:
    """(host speed, run) for every run that recorded one."""
    return [
        (float(r["host_speed"]), r)
        for c in data.cells.values()
        for r in c.runs
        if isinstance(r.get("host_speed"), (int, float)) and r["host_speed"] > 0
    ]


def _host_speed_rows(data: ReportData) -> list[list[str]]:
    speeds = sorted(v for v, _ in _run_speeds(data))
    if not speeds:
        return [["host speed", "not recorded (results older than the host-speed check)"]]
    return [
        [
            "host speed",
            f"median {statistics.median(speeds):.2f} (range {speeds[0]:.2f}–{speeds[-1]:.2f}) "
            f"{HOST_SPEED_UNIT}, timed before each of {len(speeds)} runs; compare it with "
            "other results from this machine, not across machines",
        ]
    ]


def host_speed_warning(data: ReportData) -> list[Block]:
    """A warning when some runs started on a host more than :data:`SLOW_HOST_FACTOR` times
    slower than the median run (or a command ended that much slower than it started): their
    figures measure a slowed machine, not the brokers. Empty when no run recorded its speed."""
    timed = _run_speeds(data)
    if len(timed) < 2:
        return []
    median = statistics.median(v for v, _ in timed)
    slow = [r for v, r in timed if v * SLOW_HOST_FACTOR < median]
    drifts = [
        inv
        for inv in data.manifest.get("invocations", [])
        if (b := inv.get("host_speed_before")) and (a := inv.get("host_speed_after"))
        and max(a, b) > SLOW_HOST_FACTOR * min(a, b)
    ]  # fmt: skip
    if not slow and not drifts:
        return []
    notes = []
    if slow:
        workloads = ", ".join(sorted({str(r.get("workload")) for r in slow}))
        notes.append(
            f"{len(slow)} of {len(timed)} runs started with the host over "
            f"{SLOW_HOST_FACTOR:g}× slower than the median run ({median:.2f} {HOST_SPEED_UNIT}; "
            f"workloads: {workloads})"
        )
    for inv in drifts:
        notes.append(
            f"`{inv.get('command') or '?'}` started at {inv['host_speed_before']} and ended at "
            f"{inv['host_speed_after']} {HOST_SPEED_UNIT}"
        )
    return [
        Para(
            "**The host's speed changed during these runs.** A fixed Python loop timed before "
            "every run (see Environment) shows it: "
            + "; ".join(notes)
            + ". Figures from a slowed host measure the host: compare brokers within a repeat "
            "(they are interleaved) and re-run on a quiet host before quoting absolute figures."
        )
    ]


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def staleness(data: ReportData, checkout: Path | None = None) -> list[Block]:
    """Warnings when the code measured is not the code of this checkout: results without a
    recorded commit, measured on a dirty tree, mixing commits, or older than the code."""
    from msgbus.bench.provenance import stale_paths

    m = data.manifest
    sources = [inv.get("source") or {} for inv in m.get("invocations", [])] or [
        m.get("source") or {}
    ]
    commits = list(dict.fromkeys(s.get("commit") for s in sources))
    if None in commits or not commits:
        return [
            Para(
                "**Provenance unknown.** These results do not record the commit they were "
                "measured at (or not for every command that wrote them); they may not describe "
                "the code of this checkout."
            )
        ]
    notes = []
    if len(commits) > 1:
        notes.append(
            "they mix runs made at different commits ("
            + ", ".join(str(c)[:10] for c in commits)
            + ")"
        )
    dirty = sum(len(s.get("dirty_paths", [])) for s in sources if s.get("dirty"))
    if dirty:
        notes.append(
            f"they were measured on a tree with uncommitted changes to {dirty} file(s) under "
            "`msgbus/` or `backends/`"
        )
    changed = sorted({p for c in commits for p in (stale_paths(str(c), checkout) or [])})
    if changed:
        shown = ", ".join(f"`{p}`" for p in changed[:6]) + (" …" if len(changed) > 6 else "")
        notes.append(
            f"{len(changed)} file(s) under `msgbus/` or `backends/` changed since the "
            f"results' commit: {shown}"
        )
    if not notes:
        return []
    return [Para("**Stale results.** " + "; ".join(notes) + ". Re-run before quoting them.")]


def correctness(data: ReportData) -> list[Block]:
    """The correctness tally per broker/client over every run, then failed and skipped runs."""
    rows = []
    order = {t: i for i, t in enumerate(data.targets())}
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in sorted(data.cells.values(), key=lambda c: (order.get(c.target, 99), c.name)):
        groups.setdefault(c.name, []).extend(c.runs)
    for name, runs in groups.items():
        rows.append(
            [
                name,
                str(len(runs)),
                f"{sum(r.get('sent', 0) for r in runs):,}",
                *(
                    str(sum(r.get(k, 0) for r in runs))
                    for k in ("lost", "duplicated", "out_of_order", "failed")
                ),
            ]
        )
    summary = data.manifest.get("summary", {})
    out: list[Block] = [
        Heading(2, "Correctness in every run"),
        Para(
            "From the benchmark's own sequence numbers (never from broker offsets): lost = "
            "confirmed but never received by a group; duplicated = extra deliveries "
            "(at-least-once redelivery); out of order = a key's message arriving after a later "
            "one of the same producer, within one consumer."
        ),
        Table(
            [
                "broker/client",
                "runs",
                "messages sent",
                "lost",
                "duplicated",
                "out of order",
                "publish failures",
            ],
            rows,
        ),
    ]
    failed = summary.get("failed_runs") or []
    skipped = summary.get("skipped") or []
    if failed:
        out.append(Para("Runs that failed (no result):"))
        out.append(Bullets([f"`{f}`" for f in failed]))
    if skipped:
        out.append(
            Para(f"{len(skipped)} runs skipped because an earlier step of the sweep fell behind.")
        )
    return out
