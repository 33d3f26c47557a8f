"""Loss, duplicate and order accounting on constructed inputs."""

from __future__ import annotations

from msgbus.bench.accounting import SeqTracker, merge_counts, tally


def _tracker(events: list[tuple[int, int, str | None]]) -> SeqTracker:
    t = SeqTracker()
    for producer, seq, key in events:
        t.record(producer, seq, key)
    return t


def test_clean_run() -> None:
    t = _tracker([(0, s, f"k{s % 2}") for s in range(10)])
    result = tally(merge_counts([t.counts]), {0: 10})
    assert (result.expected, result.received, result.lost, result.duplicated) == (10, 10, 0, 0)
    assert t.out_of_order == 0 and t.duplicates == 0


def test_loss_duplicates_and_unexpected() -> None:
    t = _tracker([(0, 0, None), (0, 1, None), (0, 1, None), (0, 3, None), (0, 7, None)])
    assert t.duplicates == 1 and t.deliveries == 5
    result = tally(merge_counts([t.counts]), {0: 5})
    assert result.lost == 2  # seq 2 and 4
    assert result.duplicated == 1
    assert result.unexpected == 1  # seq 7 was never sent
    assert result.received == 3


def test_failed_publishes_are_not_lost() -> None:
    t = _tracker([(0, 0, None), (0, 2, None)])
    result = tally(merge_counts([t.counts]), {0: 3}, {0: [1]})
    assert (result.expected, result.lost) == (2, 0)


def test_group_members_merge_and_cross_member_duplicates() -> None:
    a = _tracker([(0, 0, "a"), (0, 2, "a"), (1, 0, "b")])
    b = _tracker([(0, 1, "b"), (0, 2, "a"), (1, 1, "b")])
    result = tally(merge_counts([a.counts, b.counts]), {0: 3, 1: 2})
    assert (result.expected, result.received, result.lost, result.duplicated) == (5, 5, 0, 1)


def test_missing_producer_counts_all_lost() -> None:
    result = tally({}, {0: 4, 1: 0})
    assert (result.expected, result.lost) == (4, 4)


def test_out_of_order_per_key_and_producer() -> None:
    t = _tracker([(0, 1, "a"), (0, 0, "a"), (0, 2, "b"), (1, 0, "b"), (0, 3, "a")])
    # (0, a): 1 then 0 → one out of order; (1, b) is its own lane; 3 after 1 is fine.
    assert t.out_of_order == 1


def test_redelivery_is_duplicate_not_out_of_order() -> None:
    t = _tracker([(0, 0, "a"), (0, 1, "a"), (0, 0, "a")])
    assert t.duplicates == 1 and t.out_of_order == 0


def test_counts_cap_at_255() -> None:
    t = _tracker([(0, 0, None)] * 300)
    assert t.counts[0][0] == 255
    merged = merge_counts([t.counts, t.counts])
    assert merged[0][0] == 255
