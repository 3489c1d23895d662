"""The README's sample outputs are what the commands print today, piped (a reader compares them line by line).

Each `### \`convcli ...\`` heading of the tour is followed by a code block of that command's piped output,
shortened with `...` lines. Every other line of the block must be a line of the real output, in order. The
numbers themselves are checked against hand-worked references elsewhere (tests/test_course_rf.py,
tests/test_output.py); this test only keeps the documentation from drifting away from the tool.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
HEADING = re.compile(r"^### `convcli ((?:inspect|rf|params) [^`]+)`\n(?:.*\n)*?```\n((?:.*\n)*?)```", re.M)
SAMPLES = HEADING.findall(README)


def test_the_tour_has_its_three_analysis_samples():
    assert [cmd.split()[0] for cmd, _ in SAMPLES] == ["inspect", "rf", "params"]


def _matches(sample: str, line: str) -> bool:
    # A sample shortens a long line with a trailing `...` and a wide table's rule to the page's width.
    if set(sample) == {"-"}:
        return bool(line) and set(line) == {"-"}
    if sample.endswith("..."):
        return line.startswith(sample[:-3])
    return sample == line


def _in_order(sample: list[str], output: list[str]) -> str | None:
    """The first sample line not found (in order) in the output, or None."""
    at = 0
    for want in sample:
        if want.strip() in ("", "..."):
            continue
        found = next((i for i in range(at, len(output)) if _matches(want, output[i])), None)
        if found is None:
            return want
        at = found + 1
    return None


@pytest.mark.parametrize(("command", "block"), SAMPLES, ids=[c for c, _ in SAMPLES])
def test_each_sample_line_is_printed_in_order(command, block, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, shlex.split(command))
    assert result.exit_code == 0, result.output
    output = [line.rstrip() for line in result.output.splitlines()]
    missing = _in_order(block.splitlines(), output)
    assert missing is None, f"README sample line not printed by `convcli {command}`:\n{missing}\n\n{result.output}"


def test_piped_tables_are_ruled_with_ascii_hyphens_as_the_samples_show():
    for _, block in SAMPLES:
        assert "─" not in block
