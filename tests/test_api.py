"""The notebook API: `convcli.summary(...)` is the inspect command as an object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import convcli

ROOT = Path(__file__).resolve().parent.parent
S7 = ROOT / "tests" / "specs" / "s7_course.yaml"
STUDENTS = ROOT / "tests" / "models" / "students.py"


def cli_json(*args):
    r = subprocess.run([sys.executable, "-m", "convcli", "inspect", *args, "--json"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_importing_convcli_does_not_import_torch():
    code = "import sys, convcli; r = convcli.summary(sys.argv[1]); print('torch' in sys.modules, r.ok)"
    out = subprocess.run([sys.executable, "-c", code, str(S7)], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_to_dict_is_the_inspect_json_document_for_a_spec():
    report = convcli.summary(S7)
    assert report.to_dict() == cli_json(str(S7))
    assert report.ok and report.params == 179_146 and report.rf == 72


def test_to_dict_is_the_inspect_json_document_for_a_module():
    sys.path.insert(0, str(STUDENTS.parent))
    import students

    report = convcli.summary(students.S7Student(), input_size=(3, 32, 32), rules="s7")
    doc = cli_json(f"{STUDENTS}:S7Student", "--input", "3,32,32", "--rules", "s7")
    mine = report.to_dict()
    assert mine.pop("spec") == "S7Student" and doc.pop("spec").endswith("students.py:S7Student")
    assert mine == doc
    assert report.ok and report.rf == 48


def test_a_failing_rule_makes_ok_false_and_renders():
    report = convcli.summary(S7, rules="s7-strided")  # s7 has max-pools and 179k params: both fail here
    assert not report.ok
    text = str(report)
    assert "FAIL" in text and "Layer" in text
    assert report._repr_html_().lstrip().startswith("<")


def test_errors_name_the_python_argument_and_suggest_only_close_files(tmp_path):
    import pytest

    from convcli.errors import ConvcliError

    with pytest.raises(ConvcliError) as exc:
        convcli.summary(S7, rules="nosuch")  # a ConvcliError (SpecError)
    assert "summary(rules=...)" in str(exc.value) and "--rules" not in str(exc.value)
    for name in ("e.yaml", "t.yaml", "s7.yaml"):
        (tmp_path / name).write_text("input: [3, 8, 8]\nlayers: [relu]\n")
    with pytest.raises(ConvcliError) as exc:
        convcli.summary(tmp_path / "nonexist.yaml")
    assert "did you mean" not in str(exc.value)  # .yaml in common is no likeness
    with pytest.raises(ConvcliError, match="did you mean s7.yaml"):
        convcli.summary(tmp_path / "s77.yaml")


def test_common_slips_raise_convcli_errors_that_speak_python():
    import pytest

    sys.path.insert(0, str(STUDENTS.parent))
    import students

    with pytest.raises(convcli.ConvcliError, match=r"not the class S7Student: pass S7Student\(\)"):
        convcli.summary(students.S7Student, input_size=(3, 32, 32))
    with pytest.raises(convcli.ConvcliError, match="got int 42"):
        convcli.summary(42)
    with pytest.raises(convcli.ConvcliError, match=r"input_size=\(C, H, W\)") as exc:
        convcli.summary(f"{STUDENTS}:S7Student")
    assert "--input" not in str(exc.value)
    # input_size as the CLI writes it works; a bare number or a batch axis is named, in Python's words
    model = students.S7Student()
    assert convcli.summary(model, input_size="3,32,32").params == convcli.summary(model, input_size=(3, 32, 32)).params
    for bad in (32, (3, 32.0, 32), (1, 3, 32, 32, 1)):
        with pytest.raises(convcli.ConvcliError, match="input_size") as exc:
            convcli.summary(model, input_size=bad)
        assert "--input" not in str(exc.value)
    with pytest.raises(convcli.ConvcliError, match="a percentage up to 100, got 185"):
        convcli.summary(S7, accuracy=185)
    with pytest.raises(convcli.ConvcliError, match="must be a number"):
        convcli.summary(S7, accuracy="0.9")


def test_accuracy_is_a_fraction_or_a_percentage_as_on_the_command_line():
    # s7_course's accuracy rule is >= 80%: 85 and 0.85 are the same verdict, 79 fails.
    assert convcli.summary(S7, accuracy=85).to_dict() == convcli.summary(S7, accuracy=0.85).to_dict()
    assert convcli.summary(S7, accuracy=85).ok and not convcli.summary(S7, accuracy=79).ok


def test_a_spec_dict_is_analysed_as_its_yaml():
    # conv 3->4 3x3 p0: 4*3*9 + 4 = 112 params; linear 4->2: 10. On 8x8 the conv gives (8-3)+1 = 6, RF 3.
    net = {"name": "d", "input": [3, 8, 8],
           "layers": [{"conv": {"out": 4, "k": 3, "p": 0}}, "gap", {"linear": {"out": 2}}]}
    report = convcli.summary(net)
    assert report.params == 122 and report.to_dict()["layers"][0]["output_shape"] == [4, 6, 6]
    assert convcli.summary(net, input_size=(3, 16, 16)).to_dict()["layers"][0]["output_shape"] == [4, 14, 14]
