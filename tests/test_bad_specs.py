"""A corpus of bad specs (tests/bad_specs/*.yaml): each must be refused with exit 2 and a message that
says what is wrong (its first line, `# expect: ...`, holds a fragment of that message)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from convcli.errors import ConvcliError
from convcli.sources import load_analysis

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted((ROOT / "tests" / "bad_specs").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first[len("# expect: "):]


def test_the_corpus_is_large():
    assert len(BAD) >= 40


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_spec_is_refused_with_a_message(path):
    t = time.perf_counter()
    with pytest.raises(ConvcliError) as exc:
        load_analysis(path)
    assert expected(path) in str(exc.value)
    assert str(path) in str(exc.value)  # the message names the file
    assert time.perf_counter() - t < 5  # hostile files end quickly, not in a hang


@pytest.mark.parametrize("name", ["billion_laughs", "deep_nesting", "huge_padding", "dropout_two", "yaml_syntax"])
def test_bad_spec_on_the_command_line_is_exit_2_without_traceback(name):
    path = ROOT / "tests" / "bad_specs" / f"{name}.yaml"
    r = subprocess.run([sys.executable, "-m", "convcli", "inspect", str(path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert expected(path) in r.stderr


def test_an_oversized_spec_file_is_refused_before_parsing(tmp_path):
    from convcli.spec import MAX_SPEC_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("input: [3, 8, 8]\nlayers:\n" + "  - relu\n" * (MAX_SPEC_BYTES // 8 + 1))
    t = time.perf_counter()
    with pytest.raises(ConvcliError, match="at most"):
        load_analysis(big)
    assert time.perf_counter() - t < 1


NESTED = """\
input: [3, 8, 8]
layers:
  - seq:
      name: C1
      layers:
        - conv: {out: 4, k: 3}
        - seq:
            layers:
              - relu
              - conv:
                  out: 4
                  kernal: 3
  - repeat:
      times: 2
      layers:
        - relu
        - gap
        - conv: {out: 4}
"""


@pytest.mark.parametrize("cut, line, path", [
    (None, 10, "layers[0].seq[1].seq[1].conv"),  # block style, two levels down: the entry's own line
    (13, 17, "layers[1].repeat[2].conv"),  # inside a repeat, once the first error is gone (a line less)
])
def test_an_error_inside_nested_blocks_names_the_entrys_own_line(tmp_path, cut, line, path):
    text = NESTED if cut is None else NESTED.replace("                  kernal: 3\n", "")
    spec = tmp_path / "nested.yaml"
    spec.write_text(text)
    with pytest.raises(ConvcliError) as exc:
        load_analysis(spec)
    assert f"nested.yaml:{line}: {path}:" in str(exc.value)
