"""The README's broker-comparison summary is what ``msgbus bench report --readme`` makes of
the committed results, and the rewrite touches only the marked section."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

pytest.importorskip("hdrh")
pytest.importorskip("matplotlib")

from msgbus.bench.cli import main
from msgbus.bench.readme import BEGIN, END, rewrite, section, summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("committed-results")
    with tarfile.open(ROOT / "docs" / "report" / "results.tar.gz") as archive:
        archive.extractall(folder, filter="data")
    return folder


def test_readme_summary_matches_the_committed_results(committed: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert section(readme) == summary(committed), (
        "README.md's bench summary is not what the committed results say: run "
        "`msgbus bench report RESULTS --readme README.md`"
    )


def test_rewrite_replaces_only_the_marked_section(committed: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold text\n{END}\n\nafter\n")
    out = tmp_path / "report"
    assert main(["report", str(committed), "--output", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + BEGIN + "\n")
    assert text.endswith(END + "\n\nafter\n")
    assert "old text" not in text and "| workload | measure |" in text
    assert (out / "report.md").is_file()


def test_rewrite_refuses_a_readme_without_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no <!-- msgbus-bench-summary:begin -->"):
        rewrite(readme, "x\n")
    assert readme.read_text() == "# no markers\n"


def test_summary_gives_the_range_of_repeats_per_workload(committed: Path, tmp_path: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "results"
    shutil.copytree(committed, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["repeats_per_workload"] = {"latency": 5, "fan-out": 3, "max-rate": 5}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "3–5 repeats per workload." in summary(folder)
