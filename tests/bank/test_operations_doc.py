"""docs/operations.md's bank DLQ workflow, replayed with doctest on memory://: a bad SMTP
config dead-letters every mail, ``msgbus dlq`` shows why, the redrive after the fix delivers
each mail exactly once."""

from __future__ import annotations

import doctest
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_operations_transcript_replays() -> None:
    result = doctest.testfile(
        str(DOC),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.attempted > 20
    assert result.failed == 0, f"{result.failed} example(s) of {DOC.name} failed (see above)"
