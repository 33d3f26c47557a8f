"""What a run measures besides latency: the box's busy cores, warm-up curves."""

from __future__ import annotations

import pytest

from msgbus.bench import metrics
from msgbus.bench.warmup import rate_curve, settled_at

STAT = """cpu  100 20 30 1000 50 5 5 0 7 0
cpu0 50 10 15 500 25 2 3 0 0 0
intr 12345
"""


def test_box_busy_seconds_counts_everything_but_idle_and_iowait() -> None:
    busy = metrics.box_busy_seconds(STAT)
    assert busy == pytest.approx((100 + 20 + 30 + 5 + 5 + 0) / metrics._CLK_TCK)
    assert metrics.box_busy_seconds("intr 1\n") is None


def test_box_busy_seconds_reads_proc_stat() -> None:
    first = metrics.box_busy_seconds()
    assert first is not None and first > 0
    sum(i * i for i in range(200_000))  # some work of our own
    second = metrics.box_busy_seconds()
    assert second is not None and second >= first


def _samples(rates: list[float], step: float = 0.1, start: float = -5.0) -> list:
    out = []
    t, received = start, 0.0
    out.append((t, 0, 0))
    for rate in rates:
        for _ in range(round(1 / step)):
            t = round(t + step, 6)
            received += rate * step
            out.append((t, int(received), int(received)))
    return out


def test_rate_curve_per_second() -> None:
    samples = _samples([1000, 2000, 4000, 4000, 4000])
    curve = rate_curve(samples, -5.0, 0.0)
    assert [p[0] for p in curve] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [round(p[1], -1) for p in curve] == [1000, 2000, 4000, 4000, 4000]
    assert rate_curve(samples, 0.0, -1.0) == []
    assert rate_curve([], -5.0, 0.0) == []


def test_settled_at_finds_the_end_of_the_climb() -> None:
    curve = [
        [1.0, 1000.0],
        [2.0, 2000.0],
        [3.0, 3900.0],
        [4.0, 4000.0],
        [5.0, 4100.0],
        [6.0, 4000.0],
    ]
    assert settled_at(curve) == 3.0
    # one slow second (another job on the box) is smoothed away ...
    blip = [*curve, [7.0, 1000.0], *[[t, 4000.0] for t in (8.0, 9.0, 10.0, 11.0)]]
    assert settled_at(blip) == 3.0
    # ... a slump of several seconds below 90 % of the plateau moves the point past it
    slump = [*curve[:4], *[[t, 2000.0] for t in (5.0, 6.0, 7.0, 8.0)]]
    slump += [[t, 4000.0] for t in (9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0)]
    assert settled_at(slump) == 9.0
    assert settled_at(curve[:2]) is None
    assert settled_at([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]) is None


def test_priming_table() -> None:
    from msgbus.bench.warmup import table

    manifest = {
        "targets": {
            "kafka": {"priming": {"curve": [[1.0, 500.0], [5.0, 9000.0]], "settled_at_s": 5.0}},
            "rabbitmq": {"kind": "rabbitmq"},
        }
    }
    text = table(manifest)
    row = text.splitlines()[2]
    assert row.startswith("| kafka | 500 | 9,000 |") and row.endswith("| 5 s |")
    assert "rabbitmq" not in text
    assert table({}) == "no priming curves in this manifest"


def test_cpu_since_never_goes_negative_when_a_process_dies() -> None:
    before = metrics.ProcessSample(12.0, 0, 2, {10: 5.0, 11: 7.0})
    # pid 11 was killed (a broker node), pid 12 started in between
    after = metrics.ProcessSample(7.5, 0, 2, {10: 6.0, 12: 1.5})
    assert after.cpu_since(before) == pytest.approx(1.0 + 1.5)


def test_sample_processes_of_this_process() -> None:
    import os

    sample = metrics.sample_processes([os.getpid(), 2**22 + 7])  # the second does not exist
    assert sample.processes == 1 and set(sample.per_pid) == {os.getpid()}
    assert sample.cpu_seconds == pytest.approx(sample.per_pid[os.getpid()])
