"""``msgbus bench report``: turn a results folder into ``report.md`` and ``report.html``.

The report opens with the question, any staleness or host-speed warning, how to read it and the
environment; then one section per workload (:mod:`.sections`, :mod:`.scaling`): its table
(each row one representative repeat, min–max of the repeats beside), the broker-vs-client
table with a generated bottleneck sentence (:mod:`.bottleneck`), and its charts; then
replication, CPU and memory, correctness, and the point-by-point verdict (:mod:`.verdict`).
Results of older schemas render with ``n/a`` for the fields they lack.
"""

from __future__ import annotations

from pathlib import Path

from msgbus.bench.render import (
    Block,
    Bullets,
    Chart,
    Heading,
    Para,
    slug,
    to_html,
    to_markdown,
)
from msgbus.bench.report.bottleneck import RULES
from msgbus.bench.report.data import MIN_P999_SAMPLES, Cell, ReportData, load_results
from msgbus.bench.report.manifest import (
    correctness,
    host_speed_warning,
    manifest_blocks,
    staleness,
)
from msgbus.bench.report.replication import availability_cells, replication_blocks
from msgbus.bench.report.sections import SECTIONS, section_latency, section_resources
from msgbus.bench.report.tables import TANSU_NOTE
from msgbus.bench.report.verdict import CLAIM, verdict_blocks

__all__ = [
    "Cell",
    "ReportData",
    "build_report",
    "load_results",
    "staleness",
    "verdict_blocks",
    "write_report",
]

TITLE = "msgbus broker comparison"

HOW_TO_READ = (
    "**One repeat per row.** Each table row is one repeat — the median one, by p99 at a "
    "fixed rate and by consumed msg/s at max rate — so the figures of a row belong together; "
    "brackets give the min–max over all repeats.",
    "**Percentiles** go to p99.9 with the sample count beside them; a p99.9 resting on fewer "
    f"than {MIN_P999_SAMPLES:,} samples reads “too few samples”.",
    "**Backlog, not latency.** Latency columns headed “… in backlog‡” (or values "
    "marked ‡) come from rows that ran as fast as possible or fell behind: that is queueing "
    "time, not broker latency.",
    "**Broker vs client.** Each broker's raw Python client runs the same work beside msgbus "
    "where the workload asks for it; CPU per message of client and broker and the whole "
    "box's busy cores show which side limited a run. " + RULES,
    "**n/a**: a figure these results do not hold (older results lack some).",
)
"""The How-to-read bullets."""


def build_report(data: ReportData) -> list[Block]:
    """The report as blocks (see :mod:`msgbus.bench.render`)."""
    blocks: list[Block] = [Heading(1, TITLE)]
    quick = data.manifest.get("quick")
    blocks.append(
        Para(
            f"Does the claim \u201c{CLAIM}\u201d hold? The same bank workload, through the "
            "same msgbus code, on every broker, next to each broker's raw Python client, on "
            "one machine: read the figures as what these brokers do for a Python service on "
            "a small box, not as their ceilings. Method: `docs/benchmark.md`."
            + (" **This is a --quick smoke run: too short to compare brokers.**" if quick else "")
        )
    )
    blocks += staleness(data)
    blocks += host_speed_warning(data)
    if data.any_tansu():
        blocks.append(Para("**tansu.** " + TANSU_NOTE))
    blocks += [Heading(2, "How to read it"), Bullets(list(HOW_TO_READ))]
    blocks += manifest_blocks(data)
    failover = availability_cells(data)
    kinds = {c.kind for c in data.cells.values()}
    for workload in data.workloads():
        cells = data.of(workload)
        if cells[0].kind != "availability" and all(c in failover for c in cells):
            continue
        s = cells[0].settings
        blocks.append(Heading(2, f"Workload: {workload}"))
        desc = (s.get("description") or workload).rstrip(".")
        blocks.append(
            Para(
                f"{desc}. Warm-up {s.get('warmup', 0):g} s, window {s.get('duration', 0):g} s, "
                f"{s.get('producers', 1)} producer(s), message {s.get('message_size', '?')}, "
                f"keys {s.get('key_distribution', '?')} over {s.get('keys', '?')}, durability "
                f"{s.get('durability', '?')} unless the step says otherwise; "
                f"{max(len(c.runs) for c in cells)} repeat(s)."
            )
        )
        SECTIONS.get(cells[0].kind, section_latency)(data, workload, blocks)
    replication = [] if "replication" in kinds else replication_blocks(data)
    if replication:
        blocks += [Heading(2, "Replication"), *replication]
    section_resources(data, blocks)
    blocks += correctness(data)
    blocks += verdict_blocks(data)
    return _with_contents(blocks)


def _with_contents(blocks: list[Block]) -> list[Block]:
    """``blocks`` with a list of links to every section (level 2 headings) after the
    opening paragraphs, the verdict first."""
    sections = [b.text for b in blocks if isinstance(b, Heading) and b.level == 2]
    if not sections:
        return blocks
    verdict = [t for t in sections if t.startswith("Verdict")]
    links = [f"[{t}](#{slug(t)})" for t in verdict + [t for t in sections if t not in verdict]]
    first = next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.level == 2)
    return [*blocks[:first], Para("**Contents**"), Bullets(links), *blocks[first:]]


def write_report(results: Path, output: Path) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``charts/*.png`` into ``output``; return
    their paths. Raises FileNotFoundError when ``results`` holds no runs."""
    data = load_results(Path(results))
    blocks = build_report(data)
    output = Path(output)
    (output / "charts").mkdir(parents=True, exist_ok=True)
    paths = []
    for block in blocks:
        if isinstance(block, Chart):
            path = output / block.filename
            path.write_bytes(block.png)
            paths.append(path)
    md = output / "report.md"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    html_path = output / "report.html"
    html_path.write_text(to_html(blocks, TITLE), encoding="utf-8")
    return [md, html_path, *paths]
