"""The one output path (issue 9): tables that never lose data at 80 and 200 columns, plain text without
trailing spaces, valid CSV and Markdown for every command and for batches, the grader's summary and exit
codes, JUnit valid against the strict Jenkins schema, YAML syntax errors at the right line, and the
accuracy gate (--run / --runs / --strict, network fingerprints, test subsets).

Expected numbers are worked by hand in comments (s7_course: see also tests/test_cli.py and
tests/test_rules.py), never copied from convcli's output.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convcli.analysis import analyze, analyze_file
from convcli.commands.common import totals
from convcli.errors import SpecError
from convcli.fingerprint import fingerprint, first_difference, layer_records, run_record
from convcli.render import Column, Output, TableData, render_to_string
from convcli.rules import resolve_rules, run_checks
from convcli.rules.report import batch_table, junit_tree, tally
from convcli.spec import parse_spec
from convcli.views import inspect_output, params_output, rf_output
from convcli.yamlio import load_yaml

ROOT = Path(__file__).resolve().parent.parent
S7 = ROOT / "tests" / "specs" / "s7_course.yaml"
S7_TEXT = S7.read_text()
XSD = ROOT / "tests" / "data" / "junit" / "jenkins-junit-strict.xsd"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
WIDTHS = (80, 200)

# s7_course, worked by hand (3x3 convs at p=1 keep the size; 2x2 max-pools halve it and double the jump):
#   C2's dilated conv `[1].conv`: in 16x16 (after C1's pool), r_in 10 (6 after the pool, +2*2 for the 3x3
#   depthwise at jump 2), j_in 2, k 3, s 1, p 2, d 2 -> k_eff 5, n_out = (16 + 4 - 5) + 1 = 16,
#   r_out = 10 + (5-1)*2 = 18, j_out 2. Params: 64*64*9 weights + 2*64 BN = 36,992 (no bias with BN).
#   MACs: 16*16 positions * 64 out * 64 in * 9 = 9,437,184.
DILATED_RF_ROW = ["[1].conv", "16", "10", "2", "3", "1", "2", "2", "16", "18", "2"]


def run(*args, env=None, cwd=ROOT):
    import os

    e = dict(os.environ)
    e.pop("COLUMNS", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "convcli", *args], capture_output=True, text=True, cwd=cwd, env=e)


def s7_outputs():
    a = analyze_file(S7)
    rs = resolve_rules(a.spec, None)
    return a, {"rf": rf_output(a), "params": params_output(a, totals(a)),
               "inspect": inspect_output(a, totals(a), rs, run_checks(a, rs))}


def visible(text: str) -> list[str]:
    return ANSI.sub("", text).split("\n")


def check_lines(lines: list[str], width: int | None):
    for line in lines:
        assert line == line.rstrip(), f"trailing spaces: {line!r}"
        assert "…" not in line, line
        if width is not None:
            assert len(line) <= width, (len(line), line)


def cell_texts(t: TableData) -> list[tuple[Column, str]]:
    from convcli.render import cell

    return [(c, cell(row.get(c.key))) for row in t.rows for c in t.columns]


def assert_no_data_lost(t: TableData, text: str):
    """Every number and every unbreakable cell appears whole; long text cells keep all their words."""
    flat = " ".join(visible(text))
    squeezed = re.sub(r"\s+", "", flat)
    for col, value in cell_texts(t):
        if not value:
            continue
        if col.wrap:  # wrapped at spaces, a too-long word after / _ , = - . : ; )
            pieces = [p for w in value.split() for p in re.split(r"(?<=[/_,=\-.:;)])", w) if p]
            assert re.sub(r"\s+", "", value) in squeezed or all(p in squeezed for p in pieces), value
        else:
            assert value in flat, (col.header, value)


# --------------------------------------------------------------------------- widths


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("color", [False, True], ids=["plain", "terminal"])
def test_s7_tables_keep_every_value_at_80_and_200_columns(width, color):
    _, outputs = s7_outputs()
    for name, out in outputs.items():
        text = render_to_string(out, width=width, color=color)
        check_lines(visible(text), width)
        for block in out.blocks:
            if isinstance(block, TableData):
                assert_no_data_lost(block, text)
    rf_lines = visible(render_to_string(outputs["rf"], width=width, color=color))
    assert DILATED_RF_ROW in [line.split() for line in rf_lines]  # every column of the row, in order
    inspect_lines = visible(render_to_string(outputs["inspect"], width=width, color=color))
    row = next(line for line in inspect_lines if line.strip().startswith("[1].conv") and "36,992" in line)
    assert row.split()[-7:] == ["[64,", "16,", "16]", "36,992", "9,437,184", "18", "2"]
    assert "conv 64→64 3×3 d2 +bn+relu" in " ".join(inspect_lines)  # the Type, shown or folded under the row


@pytest.mark.parametrize("width", [80, 119, 200])
def test_every_architecture_fits_without_losing_data(width):
    for spec in sorted((ROOT / "architectures").glob("*.yaml")):
        a = analyze_file(spec)
        rs = resolve_rules(a.spec, "s7")  # every rule kind has something to say, pass or FAIL
        for out in (rf_output(a), params_output(a, totals(a)), inspect_output(a, totals(a), rs, run_checks(a, rs))):
            text = render_to_string(out, width=width)
            check_lines(visible(text), width)
            for block in out.blocks:
                if isinstance(block, TableData):
                    assert_no_data_lost(block, text)


def test_layers_table_keeps_the_type_column_at_80_100_120():
    for width in (80, 100, 120):
        r = run("layers", env={"COLUMNS": str(width)})
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        check_lines(lines, width)
        assert lines[1].split()[:2] == ["Type", "Aliases"]
        starts = {line.split(" ")[0] for line in lines}
        assert {"residual", "dwsconv", "conv"} <= starts


def test_layers_lists_every_key_a_type_accepts():
    r = run("layers", "residual")
    assert "act/activation" in r.stdout  # residual's own `act` (after the add) is listed
    conv = run("layers", "conv").stdout
    assert "+tail" in conv and "bias, bn, act, dropout" in conv
    assert "+tail" not in run("layers", "avgpool").stdout  # the footnote only where a row uses it
    assert "log of the softmax" in run("layers", "log_softmax").stdout


@pytest.mark.parametrize("macs, text", [(999, "999 MACs"), (1_500, "1.50 kMACs"), (8_413_184, "8.41 MMACs"),
                                        (9 * 10**12, "9.00 TMACs"), (900_027 * 10**12, "900.03 PMACs")])
def test_mac_counts_in_the_largest_fitting_unit(macs, text):
    from convcli.views import human

    assert human(macs, "MACs") == text


def test_help_usage_names_arguments_in_capitals():
    for command, usage in (("rf", "{SPECS}..."), ("train", "[SPEC]"), ("import", "{MODEL}")):
        assert usage in run(command, "--help", env={"COLUMNS": "100"}).stdout
    listing = run("--help", env={"COLUMNS": "100"}).stdout
    for command in ("train", "eval"):  # one line each in the command list, not a broken sentence
        [line] = [x for x in listing.splitlines() if x.startswith(f"│ {command} ")]
        assert line.rstrip(" │").endswith("."), line


def test_help_paragraphs_are_not_broken_by_the_docstring_layout():
    # rich keeps a docstring's line breaks: a sentence written over two source lines prints as two lines
    import typer.main

    from convcli.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for paragraph in (command.help or "").split("\n\n"):
            for line in paragraph.strip().splitlines()[:-1]:  # a line may end a sentence, never break one
                assert line.rstrip().endswith((".", ":")), (name, line)
    assert len(group.commands) >= 5


def test_stacked_layout_when_even_the_first_column_is_too_wide():
    t = TableData("t", [Column("a", "Name", False), Column("n", "Count")])
    t.add({"a": "x" * 90, "n": 1_234_567})
    lines = visible(render_to_string(Output([t]), width=80))
    check_lines(lines, 80)
    assert "    Count: 1,234,567" in lines  # the number whole, on its own line


def test_piped_output_is_as_wide_as_the_content():
    r = run("rf", str(S7))
    lines = r.stdout.splitlines()
    check_lines(lines, None)
    rule = next(line for line in lines if line and set(line) == {"-"})  # plain text: an ASCII rule
    end = next(i for i, line in enumerate(lines) if line.startswith("Final RF"))
    table = lines[lines.index(rule) - 1: end]
    assert max(len(line) for line in table) == len(rule)  # the widest row is the table's width, no padding
    assert DILATED_RF_ROW in [line.split() for line in lines]


def test_columns_env_sets_the_piped_width():
    r = run("inspect", str(S7), env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    check_lines(r.stdout.splitlines(), 80)
    assert "accuracy>=0.8" in r.stdout and "179,146" in r.stdout


# --------------------------------------------------------------------------- csv and markdown


def parse_csv(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows and len({len(r) for r in rows}) == 1, {len(r) for r in rows}  # one constant field count
    return rows


def test_csv_one_row_per_layer_for_every_command():
    layers = json.loads(run("rf", str(S7), "--json").stdout)["layers"]
    for cmd in ("rf", "params", "inspect"):
        r = run(cmd, str(S7), "--format", "csv")
        assert r.returncode == 0, r.stderr
        rows = parse_csv(r.stdout)
        assert rows[0][0] == "Layer" and rows[0].count(rows[0][0]) == 1
        assert [row[0] for row in rows[1:]] == [layer["name"] for layer in layers]
    rows = parse_csv(run("params", str(S7), "--format", "csv").stdout)
    dilated = next(r for r in rows if r[0] == "layers[1].seq[1].conv")
    assert dilated[3:5] == ["36992", "9437184"]  # hand-worked above; raw numbers, no separators
    types = parse_csv(run("layers", "--format", "csv").stdout)
    assert types[0][:2] == ["Type", "Aliases"] and len(types) > 40


def test_csv_of_several_specs_has_one_header_and_a_spec_column():
    lenet = ROOT / "architectures" / "lenet5.yaml"
    for cmd in ("rf", "params"):
        rows = parse_csv(run(cmd, str(S7), str(lenet), "--format", "csv").stdout)
        assert rows[0][0] == "Spec" and sum(r == rows[0] for r in rows) == 1
        specs = {r[0] for r in rows[1:]}
        assert specs == {"tests/specs/s7_course.yaml", "architectures/lenet5.yaml"}


def markdown_tables(text: str) -> list[list[str]]:
    tables, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


def md_cells(line: str) -> int:
    return len(re.split(r"(?<!\\)\|", line)) - 2


@pytest.mark.parametrize("argv", [["rf"], ["params"], ["inspect"], ["rf", "--explain"]])
def test_markdown_tables_are_valid(argv):
    r = run(*argv, str(S7), "--format", "markdown")
    assert r.returncode == 0, r.stderr
    tables = markdown_tables(r.stdout)
    if "--explain" in argv:
        assert "```" in r.stdout and "k_eff = d*(k-1)+1 = 2*(3-1)+1 = 5" in r.stdout
        return
    assert tables
    for t in tables:
        assert re.fullmatch(r"\|(:?-{3}:?\|)+", t[1]), t[1]
        assert len({md_cells(line) for line in t}) == 1
    check_lines(r.stdout.splitlines(), None)


# --------------------------------------------------------------------------- the grader's batch


@pytest.fixture()
def grading(tmp_path):
    """alice: s7 as is (passes); bob: C3's max-pool swapped for an avgpool (2 max-pools, fails
    count(maxpool)==3); carol: unreadable (unknown key); dave: a YAML syntax error."""
    third_pool = "- maxpool: {k: 2}                         # 4x4, RF 40, jump 8"
    assert S7_TEXT.count(third_pool) == 1
    (tmp_path / "alice.yaml").write_text(S7_TEXT)
    (tmp_path / "bob.yaml").write_text(S7_TEXT.replace(third_pool, "- avgpool: {k: 2}"))
    (tmp_path / "carol.yaml").write_text("input: [3, 32, 32]\nlayers:\n  - conv: {out: 8, kk: 3}\n")
    (tmp_path / "dave.yaml").write_text("input: [3, 32, 32]\nlayers:\n  - conv: {out: 8\n  - gap\n")
    return tmp_path


@pytest.mark.parametrize("width", WIDTHS)
def test_batch_summary_at_80_and_200(grading, width):
    r = run("inspect", str(grading), env={"COLUMNS": str(width)})
    assert r.returncode == 1, r.stderr  # some fail or error, not all unreadable
    lines = r.stdout.splitlines()
    check_lines(lines, width)
    text = re.sub(r"\s+", " ", " ".join(lines))
    assert "1 pass, 1 fail, 2 error" in lines
    assert "2 ✗" in text  # bob's measured max-pool count, marked failed
    assert re.search(r"count\(maxpool\)==3: 2 maxpool", text)  # the reason names the rule and what was found
    assert "179,146" in text  # s7's total (hand-worked in test_rules.test_s7_hand_params)
    assert "dave.yaml:3" in text and "carol.yaml:3" in text  # ERROR rows say where


@pytest.mark.parametrize("cmd", ["rf", "params"])
def test_rf_and_params_of_a_batch_go_on_past_an_unreadable_spec(grading, cmd):
    # As inspect grades the rest: alice and bob are printed, carol's and dave's errors follow; exit 1.
    rows = None
    for fmt in ("csv", "json", "table"):
        r = run(cmd, str(grading), "--format", fmt)
        assert r.returncode == 1, r.stderr
        assert "carol.yaml:3" in r.stderr and "dave.yaml:3" in r.stderr
        if fmt == "csv":
            rows = parse_csv(r.stdout)
            assert {row[0] for row in rows[1:]} == {"alice.yaml", "bob.yaml"}  # labels below the common folder
        elif fmt == "json":
            assert len(json.loads(r.stdout)) == 2
        else:  # each table is titled with its file: both say `name: s7`
            titles = [line for line in r.stdout.splitlines() if line.startswith(("alice.yaml", "bob.yaml"))]
            assert [t.split(" (")[0] for t in titles] == ["alice.yaml", "bob.yaml"]
            assert all("(s7): " in t for t in titles)
    assert rows
    (grading / "alice.yaml").unlink()
    (grading / "bob.yaml").unlink()
    r = run(cmd, str(grading))
    assert r.returncode == 2 and r.stdout == ""  # nothing readable


def test_batch_gradebook_csv(grading):
    r = run("inspect", str(grading), "--format", "csv")
    assert r.returncode == 1
    rows = parse_csv(r.stdout)
    head = rows[0]
    assert head[:2] == ["Spec", "Status"] and head[-1] == "Reason" and len(rows) == 5  # one row per spec
    by_spec = {Path(row[0]).stem: dict(zip(head, row)) for row in rows[1:]}
    assert {k: v["Status"] for k, v in by_spec.items()} == {"alice": "PASS", "bob": "FAIL", "carol": "ERROR",
                                                              "dave": "ERROR"}
    assert by_spec["bob"]["count(maxpool)==3"] == "2" and by_spec["alice"]["count(maxpool)==3"] == "3"
    assert by_spec["alice"]["params<1000000"] == "179146" and by_spec["alice"]["rf>44"] == "72"
    assert "count(maxpool)==3" in by_spec["bob"]["Reason"]
    assert "unknown key 'kk'" in by_spec["carol"]["Reason"] and "did you mean 'k'" in by_spec["carol"]["Reason"]


def test_batch_json_names_every_spec_the_same_way(grading):
    r = run("inspect", str(grading), "--json")
    docs = json.loads(r.stdout)
    assert sorted(d["spec"] for d in docs) == [str(grading / f"{n}.yaml") for n in ("alice", "bob", "carol", "dave")]
    assert [d["ok"] for d in docs if "error" in d] == [False, False]


def test_a_folder_of_student_folders_is_graded_one_level_down(grading, tmp_path):
    subs = tmp_path / "subs"
    for name in ("alice", "bob"):
        (subs / name).mkdir(parents=True)
        (subs / name / "s7.yaml").write_text((grading / f"{name}.yaml").read_text())
    (subs / "run").mkdir()  # a training run's copy of its spec is not a submission
    (subs / "run" / "args.yaml").write_text("epochs: 1\n")
    (subs / "run" / "s7.yaml").write_text(S7_TEXT)
    r = run("inspect", str(subs), "--json")
    assert sorted(d["spec"] for d in json.loads(r.stdout)) == [str(subs / n / "s7.yaml") for n in ("alice", "bob")]


def test_specs_in_subfolders_beside_top_level_ones_are_named_not_dropped_silently(grading):
    (grading / "late").mkdir()
    (grading / "late" / "erin.yaml").write_text(S7_TEXT)
    (grading / "rules").mkdir()
    (grading / "rules" / "s7.yaml").write_text("name: s7\nrules:\n  - params: {max: 10}\n")  # not a spec
    r = run("inspect", str(grading), "--json")
    assert len(json.loads(r.stdout)) == 4
    assert "1 more spec(s) in its subfolders are not included" in " ".join(r.stderr.split())


def test_pytorch_files_in_a_graded_folder_are_named_not_dropped_silently(grading, tmp_path):
    net = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    pass\n"
    (grading / "frank.py").write_text(net)
    (grading / "__init__.py").write_text("")  # package plumbing is not a submission
    r = run("inspect", str(grading), "--json")
    assert not any(d["spec"].endswith(".py") for d in json.loads(r.stdout))
    stderr = " ".join(r.stderr.split())
    assert "not included: 1 PyTorch file" in stderr and f"'{grading / 'frank.py'}:NAME' --input C,H,W" in stderr
    assert "__init__" not in stderr
    # One folder per student, one of them with only a net.py: named in the error, with the pattern to pass.
    subs = tmp_path / "subs"
    for name in ("carol", "dan"):
        (subs / name).mkdir(parents=True)
        (subs / name / "net.py").write_text(net)
    r = run("inspect", str(subs / "carol"))
    assert r.returncode == 2 and f"'{subs / 'carol' / 'net.py'}:NAME'" in " ".join(r.stderr.split())
    r = run("inspect", str(subs))
    assert r.returncode == 2 and f"'{subs / '*' / 'net.py'}:NAME'" in " ".join(r.stderr.split())


def test_batch_markdown_is_one_table(grading):
    r = run("inspect", str(grading), "--format", "markdown")
    tables = markdown_tables(r.stdout)
    assert len(tables) == 1 and len(tables[0]) == 2 + 4
    assert len({md_cells(line) for line in tables[0]}) == 1


def test_exit_2_only_when_every_spec_is_unreadable(grading, tmp_path):
    r = run("inspect", str(grading / "carol.yaml"), str(grading / "dave.yaml"))
    assert r.returncode == 2 and "0 pass, 0 fail, 2 error" in r.stdout
    assert run("inspect", str(grading / "alice.yaml"), str(grading / "carol.yaml")).returncode == 1
    assert run("inspect", str(grading / "alice.yaml"), str(S7)).returncode == 0
    usage = run("inspect", str(grading / "alice.yaml"), str(S7), "--run", str(tmp_path))
    assert usage.returncode == 2 and "--runs" in usage.stderr


def test_tally_counts():
    a = analyze_file(S7)
    rs = resolve_rules(a.spec, None)
    results = [("a", run_checks(a, rs), a)] * 31 + [("b", [_failed()], None)] * 6 + [("c", SpecError("x"))] * 2
    assert tally(results) == "31 pass, 6 fail, 2 error"
    assert batch_table(results).row_count == 39


def _failed():
    from convcli.rules.model import Check

    return Check("params<10", False, 20, "< 10", "20 parameters")


# --------------------------------------------------------------------------- JUnit: the strict Jenkins schema


def test_junit_validates_against_the_strict_jenkins_schema(grading, tmp_path):
    etree = pytest.importorskip("lxml.etree")
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    report = tmp_path / "report.xml"
    r = run("inspect", str(grading), "--junit", str(report))
    assert r.returncode == 1
    doc = etree.parse(str(report))
    assert schema.validate(doc), schema.error_log
    root = doc.getroot()
    assert "skipped" not in root.attrib
    assert [s.get("name") for s in root.findall("testsuite")] == ["alice", "bob", "carol", "dave"]
    classnames = {c.get("classname") for c in root.iter("testcase")}
    assert classnames == {"alice", "bob", "carol", "dave"} and not any("/" in c for c in classnames)
    assert all(not s.attrib for s in root.iter("skipped"))  # the reason is the element's text
    # 2 specs x 9 rules + 2 load errors; bob fails one rule
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("20", "1", "2")


def test_the_schema_rejects_what_jenkins_rejects():
    etree = pytest.importorskip("lxml.etree")
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    case = '<testcase name="r" classname="s">{}</testcase>'
    suite = '<testsuite name="s" tests="1" failures="0" errors="0" skipped="1">{}</testsuite>'
    ok = f"<testsuites tests='1'>{suite.format(case.format('<skipped>why</skipped>'))}</testsuites>"
    assert schema.validate(etree.fromstring(ok))
    with_reason = suite.format(case.format("<skipped>why</skipped>"))
    with_message = suite.format(case.format('<skipped message="why"/>'))
    skipped_attr = f"<testsuites skipped='1'>{with_reason}</testsuites>"
    message_attr = f"<testsuites>{with_message}</testsuites>"
    assert not schema.validate(etree.fromstring(skipped_attr))
    assert not schema.validate(etree.fromstring(message_attr))


def test_junit_with_strict_fails_the_unchecked_accuracy(tmp_path):
    a = analyze_file(S7)
    rs = resolve_rules(a.spec, None)
    from convcli.commands.inspect import mark

    checks = [mark(c, "no run", strict=True) for c in run_checks(a, rs)]
    root = junit_tree([("s7.yaml", checks, a)]).getroot()
    assert root.find("testsuite").get("failures") == "1" and root.find(".//skipped") is None


# --------------------------------------------------------------------------- YAML syntax errors


def yaml_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as exc:
        load_yaml(text, "s.yaml")
    return exc.value


def test_missing_brace_is_reported_on_its_own_line():
    lines = ["name: x", "input: [3, 32, 32]", "layers:"] + [f"  - conv: {{out: {8 + i}}}" for i in range(11)]
    lines += ["  - conv: {out: 64, k: 3", "  - gap", "  - linear: {out: 10}"]
    assert lines[14] == "  - conv: {out: 64, k: 3"  # line 15
    err = yaml_error("\n".join(lines) + "\n")
    assert err.line == 15
    text = err.render()
    assert text.startswith("s.yaml:15: YAML syntax error:") and "'{'" in text and "'}'" in text
    assert "  15 |   - conv: {out: 64, k: 3" in text
    caret = text.splitlines()[-1]
    assert caret.index("^") == text.splitlines()[-2].index("3") + 1  # right after the last value
    assert "expected ','" not in text.splitlines()[0]  # not PyYAML's raw wording


@pytest.mark.parametrize("text, line, words", [
    ("layers:\n  - conv: {out: 8}\n   - gap\n  - linear: {out: 10}\n", 3, "bad indentation"),
    ("name: x\ninput: [3, 32, 32]\n  classes: 10\nlayers: []\n", 3, "bad indentation"),
    ("layers:\n  - seq:\n      name: C1\n        layers:\n        - gap\n", 4, "indented deeper"),
    ("name: x\ninput [3, 32, 32]\nlayers: []\n", 2, "':' is missing"),
    ("name: 'x\nlayers: []\n", 1, "never closed"),
    ("input: [3, 32, 32\nlayers:\n  - gap\n", 1, "'[' opened on this line is not closed"),
    ("a: {x: 1,\n    y: 2\nb: 3\n", 2, "'{' opened on line 1 is not closed"),
    ("name: x\n\tinput: [1]\n", 2, "tab"),
])
def test_yaml_mistakes_point_at_their_line(text, line, words):
    err = yaml_error(text)
    assert err.line == line, err.render()
    assert words in err.render()


def test_yaml_error_on_the_command_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("input: [3, 32, 32]\nlayers:\n  - conv: {out: 8, k: 3\n  - gap\n")
    r = run("rf", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{f}:3: YAML syntax error" in r.stderr and "^" in r.stderr


# --------------------------------------------------------------------------- fingerprints and the accuracy gate

NET = ("name: n\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 4, k: 3}\n  - maxpool: {k: 2}\n  - gap\n"
       "  - linear: {out: 2}\n")


def fp(text: str) -> str:
    return fingerprint(analyze(parse_spec(text, "n.yaml")))


def test_fingerprint_ignores_layout_and_names_but_not_the_network():
    same = "# a comment\nname: other\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 4, k: 3, name: stem}\n" \
           "  - maxpool: {k: 2}\n  - gap: {}\n  - linear: {out: 2}\ntrain: {epochs: 3}\n"
    assert fp(NET) == fp(same) and fp(NET).startswith("v1:")
    wider = NET.replace("{out: 4, k: 3}", "{out: 6, k: 3}")
    assert fp(wider) != fp(NET)
    ours = layer_records(analyze(parse_spec(NET, "n.yaml")))
    theirs = layer_records(analyze(parse_spec(wider, "n.yaml")))
    # the first layer's output channels differ (4 vs 6): named with the layer's path
    assert first_difference(ours, theirs).startswith("layers[0].conv: out channels 4 in the spec, 6 in the run")
    deeper = NET.replace("  - gap\n", "  - conv: {out: 4, k: 3}\n  - gap\n")
    assert "layers[2]" in first_difference(ours, layer_records(analyze(parse_spec(deeper, "n.yaml"))))
    assert first_difference(ours, ours) is None
    assert fp(NET.replace("[3, 8, 8]", "[3, 16, 16]")) != fp(NET)


def make_run(path: Path, spec_file: Path | None, acc: float, text: str | None = NET, **extra) -> Path:
    path.mkdir(parents=True)
    summary = {"best_acc": acc, "best_epoch": 3, **extra}
    if text is not None:
        summary.update(run_record(analyze(parse_spec(text, "n.yaml"))))
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "args.yaml").write_text(f"spec: {spec_file}\ntest_subset: {extra.get('test_subset', 'null')}\n")
    return path


RULES = "name: gate\nrules:\n  - max_params: {lt: 1000}\n  - accuracy: {min: 0.8}\n"


@pytest.fixture()
def gate(tmp_path):
    (tmp_path / "gate.yaml").write_text(RULES)
    spec = tmp_path / "n.yaml"
    spec.write_text(NET + "rules: gate.yaml\n")
    return tmp_path, spec


def test_run_of_this_network_checks_accuracy(gate):
    tmp, spec = gate
    good = make_run(tmp / "runs" / "n", spec, 0.85)
    r = run("inspect", str(spec), "--run", str(good), "--json")
    assert r.returncode == 0, r.stderr
    acc = json.loads(r.stdout)["checks"][-1]
    assert acc["ok"] is True and acc["value"] == 0.85
    low = make_run(tmp / "runs" / "low", spec, 0.75)
    assert run("inspect", str(spec), "--run", str(low)).returncode == 1


def test_run_of_another_network_is_refused(gate):
    tmp, spec = gate
    other = make_run(tmp / "other", spec, 0.99, text=NET.replace("{out: 4, k: 3}", "{out: 8, k: 3}"))
    r = run("inspect", str(spec), "--run", str(other))
    assert r.returncode == 2 and "trained a different network" in r.stderr
    assert "layers[0].conv: out channels 4 in the spec, 8 in the run" in r.stderr


def test_run_without_fingerprint_warns_and_continues(gate):
    tmp, spec = gate
    old = make_run(tmp / "old", spec, 0.9, text=None)
    r = run("inspect", str(spec), "--run", str(old))
    assert r.returncode == 0, r.stderr
    assert "the run has no fingerprint (trained by an older convcli)" in r.stderr


def test_run_on_a_test_subset_is_refused_unless_allowed(gate):
    tmp, spec = gate
    sub = make_run(tmp / "sub", spec, 0.9, test_subset=200)
    r = run("inspect", str(spec), "--run", str(sub))
    assert r.returncode == 2 and "200-image test subset" in r.stderr and "--allow-subset" in r.stderr
    ok = run("inspect", str(spec), "--run", str(sub), "--allow-subset")
    assert ok.returncode == 0 and "test subset" in ok.stderr


def test_strict_gate_with_runs_dir(gate):
    tmp, spec = gate
    runs = tmp / "runs"
    runs.mkdir()
    r = run("inspect", str(spec), "--strict", "--runs", str(runs))
    assert r.returncode == 1 and "no finished training run of this spec" in r.stdout
    assert run("inspect", str(spec), "--runs", str(runs)).returncode == 0  # without --strict: not checked
    # A run found by the spec file named in its args.yaml (any run name), newest first
    make_run(runs / "n-try1", spec, 0.9)
    r = run("inspect", str(spec), "--strict", "--runs", str(runs), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    # runs/NAME wins over the others; here it is a different network, passed over with the reason
    make_run(runs / "n", spec, 0.99, text=NET.replace("{out: 4, k: 3}", "{out: 8, k: 3}"))
    r = run("inspect", str(spec), "--strict", "--runs", str(runs), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["checks"][-1]["value"] == 0.9


def test_an_unfinished_run_does_not_pass_the_gate(gate):
    # Ctrl-C after epoch 1 of 15: its epoch-1 accuracy is not the network's.
    tmp, spec = gate
    stopped = make_run(tmp / "stopped", spec, 0.9, finished=False, epochs_done=1, epochs=15, stop_reason="interrupted")
    r = run("inspect", str(spec), "--strict", "--run", str(stopped))
    assert r.returncode == 2 and "did not finish (epoch 1 of 15; interrupted)" in r.stderr
    assert f"convcli train --resume {stopped}" in r.stderr


def test_a_test_subset_as_large_as_the_test_split_is_the_whole_set(gate):
    tmp, spec = gate
    whole = make_run(tmp / "whole", spec, 0.9, test_subset=10000, n_test=10000, data_n_test=10000)
    r = run("inspect", str(spec), "--strict", "--run", str(whole))
    assert r.returncode == 0 and "subset" not in r.stderr
    part = make_run(tmp / "part", spec, 0.9, test_subset=5000, n_test=5000, data_n_test=10000)
    assert run("inspect", str(spec), "--strict", "--run", str(part)).returncode == 2


def test_each_student_is_graded_with_the_run_of_their_own_file(tmp_path):
    # alice/n.yaml and bob/n.yaml: the same name; runs/n is alice's, runs/bob-try1 names bob's file.
    (tmp_path / "gate.yaml").write_text(RULES)
    runs = tmp_path / "runs"
    accs = {"alice": 0.81, "bob": 0.93}
    for student in accs:
        (tmp_path / student).mkdir()
        (tmp_path / student / "n.yaml").write_text(NET + "rules: ../gate.yaml\n")
    make_run(runs / "n", tmp_path / "alice" / "n.yaml", accs["alice"], n_test=10000, data="cifar10")
    make_run(runs / "bob-try1", tmp_path / "bob" / "n.yaml", accs["bob"])
    r = run("inspect", str(tmp_path / "alice"), str(tmp_path / "bob"), "--strict", "--runs", str(runs), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    docs = {Path(d["spec"]).parent.name: d for d in json.loads(r.stdout)}
    for student, acc in accs.items():
        [check] = [c for c in docs[student]["checks"] if c["rule"].startswith("accuracy")]
        assert check["value"] == acc
    [alice] = [c for c in docs["alice"]["checks"] if c["rule"].startswith("accuracy")]
    assert f"(from {runs / 'n'}: 10,000 test images of cifar10)" in alice["message"]


def test_a_copy_without_its_own_run_does_not_borrow_another_files_run_of_the_same_name(tmp_path):
    # zed/n.yaml is a copy of alice/n.yaml (the same `name:` and network); runs/n was trained from alice's file.
    (tmp_path / "gate.yaml").write_text(RULES)
    for student in ("alice", "zed"):
        (tmp_path / student).mkdir()
        (tmp_path / student / "n.yaml").write_text(NET + "rules: ../gate.yaml\n")
    runs = tmp_path / "runs"
    make_run(runs / "n", tmp_path / "alice" / "n.yaml", 0.9)
    zed = tmp_path / "zed" / "n.yaml"
    r = run("inspect", str(zed), "--strict", "--runs", str(runs))
    assert r.returncode == 1
    assert f"{runs / 'n'} was trained from {tmp_path / 'alice' / 'n.yaml'}, not from {zed}" in r.stdout
    assert run("inspect", str(tmp_path / "alice" / "n.yaml"), "--strict", "--runs", str(runs)).returncode == 0
    # A run whose spec file is not on this machine (trained elsewhere) is still found by name.
    make_run(tmp_path / "elsewhere" / "n", Path("/nonexistent/home/zed/n.yaml"), 0.9)
    assert run("inspect", str(zed), "--strict", "--runs", str(tmp_path / "elsewhere")).returncode == 0


def test_the_strict_gate_fails_a_spec_without_rules(tmp_path):
    # A student who deletes the `rules:` line must not pass `make check`.
    spec = tmp_path / "n.yaml"
    spec.write_text(NET)
    assert run("inspect", str(spec)).returncode == 0
    r = run("inspect", str(spec), "--strict")
    assert r.returncode == 1 and "n.yaml has no rules to check" in r.stderr
    ruled = tmp_path / "m.yaml"
    ruled.write_text(NET + "rules:\n  - max_params: {lt: 1000}\n")
    r = run("inspect", str(spec), str(ruled), "--strict")
    assert r.returncode == 1 and "1 pass, 0 fail, 0 error, 1 without rules" in r.stdout


def test_a_run_with_a_relative_spec_path_is_found_from_anywhere(tmp_path):
    # Trained in tmp_path as `convcli train n.yaml --out runs/n-try`: args.yaml records both paths relative.
    (tmp_path / "gate.yaml").write_text(RULES)
    spec = tmp_path / "n.yaml"
    spec.write_text(NET + "rules: gate.yaml\n")
    d = make_run(tmp_path / "runs" / "n-try", Path("n.yaml"), 0.9)
    (d / "args.yaml").write_text("spec: n.yaml\nrun_dir: runs/n-try\ntest_subset: null\n")
    r = run("inspect", str(spec), "--strict", "--runs", str(tmp_path / "runs"), cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_makefile_check_uses_the_strict_gate():
    text = (ROOT / "Makefile").read_text()
    check = text[text.index("\ncheck:"):].split("\n\n")[0]
    assert "inspect --strict --runs $(RUNS) $(SPECS)" in check


def test_shapes_have_no_thousands_separators():
    # flatten: 2*64*64 = 8192 values; "[8,192]" would read as two axes, "[1,000]" as a 2-D shape.
    a = analyze(parse_spec("input: [3, 64, 64]\nlayers:\n  - conv: {out: 2, k: 3}\n  - flatten\n"
                           "  - linear: {out: 1000}\n", "flat.yaml"))
    text = render_to_string(params_output(a, totals(a)), "table", width=120)
    assert "[8192]" in text and "[1000]" in text and "8,193,000" in text  # counts keep theirs


def test_an_image_shape_written_channels_last_gets_a_note():
    a = analyze(parse_spec("input: [32, 32, 3]\nlayers:\n  - conv: {out: 8}\n", "hwc.yaml"))
    assert any("write [3, 32, 32] (channels first" in n for n in a.notes)
    assert not analyze(parse_spec("input: [3, 32, 32]\nlayers:\n  - conv: {out: 8}\n", "chw.yaml")).input_notes()
    text = render_to_string(params_output(a, totals(a)), "table", width=200)
    assert "channels first" in text


@pytest.mark.parametrize("width", [40, 50, 60])
def test_narrow_footers_keep_each_label_with_its_value(width):
    from convcli.render import wrap_lines

    lines = wrap_lines(["Total params: 745,770   Trainable: 745,770   Non-trainable: 0",
                        "MACs per sample: 101,771,776 (101.77 MMACs)   Params size: 2.98 MB (float32)"], width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), text
    for field in ("Non-trainable: 0", "Params size: 2.98 MB", "Trainable: 745,770", "(101.77 MMACs)"):
        assert field in text, text


def test_a_header_never_breaks_inside_a_list_value():
    from convcli.render import _header_pieces

    assert _header_pieces("input==[3,32,32]") == ["input", "==[3,32,32]"]


def test_a_narrow_title_keeps_the_input_shape_whole():
    # 40 columns: "s7: parameters and MACs (input [3, 32, 32], per sample)" broke as "[3, 32," / "32]".
    from convcli.render import wrap_lines

    lines = wrap_lines(["s7: parameters and MACs (input [3, 32, 32], per sample)"], 40)
    assert all(len(line) <= 40 for line in lines) and any("[3, 32, 32]" in line for line in lines), lines


def test_a_header_never_breaks_inside_a_course_symbol():
    # n_in, r_out, j_in: a one-letter symbol and its subscript are one name (the course's); at 50 columns
    # the rf table used to print "n_" above "in". A longer snake_case name may still break at its "_".
    from convcli.render import _header_pieces, wrap_header

    for symbol in ("n_in", "r_in", "j_in", "n_out", "r_out", "j_out"):
        assert _header_pieces(symbol) == [symbol]
        assert wrap_header(symbol, 2) == [symbol]
    assert _header_pieces("out_shape") == ["out_", "shape"]


def test_a_narrow_stacked_row_keeps_each_rule_with_its_value():
    # 40 columns: `gap_before_classifier: gap -> linear` (36 characters) breaks once, between the rule and its
    # value, never inside the value; a failed value keeps its ✗.
    from convcli.render import wrap_lines

    lines = wrap_lines(["gap_before_classifier: gap -> linear   params<1000000: 1,643,562 ✗   accuracy>=0.8: --"], 34)
    fields = [f.strip() for line in lines for f in line.split("   ")]
    assert fields == ["gap_before_classifier:", "gap -> linear", "params<1000000: 1,643,562 ✗", "accuracy>=0.8: --"]
    assert all(len(line) <= 34 for line in lines)


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_a_stream_that_cannot_encode_the_arrows_gets_aligned_ascii_not_a_crash(encoding):
    # A Windows user redirecting to a cp1252 file: `→` is not in cp1252, and a crash would exit 1 ("a rule failed").
    import os

    env = {**os.environ, "PYTHONIOENCODING": encoding}
    r = subprocess.run([sys.executable, "-m", "convcli", "inspect", str(S7)], capture_output=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode(encoding).splitlines()
    assert lines[0].endswith(": [3, 32, 32] -> [10]")
    header = next(line for line in lines if line.startswith("Layer"))
    shape_at = header.index("Output shape")
    rows = [line for line in lines if re.match(r"\s*\[\d+\]\.(conv|maxpool|gap)\b", line)]
    assert rows and all(line[shape_at] == "[" for line in rows)  # "->" for "→" keeps the columns aligned
    csv_out = subprocess.run([sys.executable, "-m", "convcli", "params", str(S7), "--format", "csv"],
                             capture_output=True, env=env, cwd=ROOT)
    assert csv_out.returncode == 0 and b"3->" in csv_out.stdout


def test_no_color_is_honoured_on_a_terminal(monkeypatch):
    from convcli.render import console

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert console().no_color
    monkeypatch.delenv("NO_COLOR")
    assert not console().no_color


def test_single_spec_csv_says_its_verdict_beside_the_layer_rows():
    r = run("inspect", str(S7), "--rules", "s7-strided", "--format", "csv")
    assert r.returncode == 1 and parse_csv(r.stdout)[0][0] == "Layer"
    assert "FAIL" in r.stderr and "forbid(maxpool)" in r.stderr  # s7_course has max-pools (179,146 params pass)


def test_two_formats_at_once_are_refused():
    r = run("inspect", str(S7), "--json", "--format", "csv")
    assert r.returncode == 2 and "--json and --format csv" in r.stderr and r.stdout == ""


def test_layers_shows_the_computed_padding_default():
    r = run("layers", "conv")
    assert "p/padding=d*(k-1)//2" in " ".join(r.stdout.split())


def test_junit_names_a_model_file_by_its_folder_as_a_spec_is():
    # five students' net.py:Net were all "net.Net" in the report: a TA could not tell them apart
    from convcli.rules.report import junit_names

    assert junit_names(["subs/alice/net.py:Net", "subs/bob/net.py:Net"]) == ["alice.net.Net", "bob.net.Net"]
    assert junit_names(["subs/alice/s7.yaml", "subs/bob/net.py:Net"]) == ["alice.s7", "bob.net.Net"]
    assert junit_names(["/abs/net.py:Net"]) == ["net.Net"]  # one file: its name, never the absolute path
    assert junit_names(["pkg.models:Net"]) == ["pkg.models.Net"]
