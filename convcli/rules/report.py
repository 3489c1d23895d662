"""Rendering verdicts: the verdict table, the batch summary (one row per spec) and JUnit XML.

Plain-data twins (`verdict_rows`, `batch_rows`) give header + string rows for csv/markdown output.
A batch result is `(spec, checks)` or `(spec, checks, analysis)`; with an analysis the summary adds
params and RF columns. `checks` may be an exception (a spec that failed to load): an error row, and a
JUnit `<error>`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from convcli.rules.model import Check, all_ok, failed, fmt_number, plain

STYLE = {True: "green", False: "bold red", None: "yellow"}
CELL = {True: "pass", False: "FAIL", None: "--"}

VERDICT_HEADER = ["Rule", "Measured", "Limit", "Result", "Details"]


def verdict_rows(checks: list[Check]) -> list[list[str]]:
    return [[c.rule, c.measured, c.limit, c.status, c.message] for c in checks]


def render_checks(checks: list[Check], title: str | None = "Rules") -> Table:
    """Rule, measured, limit, pass/FAIL/not checked, and what was found (layer paths, labels)."""
    table = Table(title=title, title_justify="left", show_lines=False, box=box.SIMPLE_HEAD, header_style="bold")
    table.add_column("Rule", no_wrap=True)
    table.add_column("Measured", justify="right")
    table.add_column("Limit")
    table.add_column("Result")
    table.add_column("Details", overflow="fold")
    for c in checks:
        table.add_row(Text(c.rule), Text(c.measured), Text(c.limit), Text(c.status, style=STYLE[c.ok]),
                      Text(c.message))
    return table


def summary_line(checks: list[Check]) -> str:
    """`all 8 rules pass`, or `2 of 8 rules failed: rf>44, count(maxpool)==3` (+ not-checked count)."""
    bad = failed(checks)
    skipped = sum(c.ok is None for c in checks)
    tail = f" ({skipped} not checked)" if skipped else ""
    if not bad:
        return f"all {len(checks) - skipped} checked rules pass{tail}"
    return f"{len(bad)} of {len(checks)} rules failed: " + ", ".join(c.rule for c in bad) + tail


# --------------------------------------------------------------------------- batch


def _unpack(result):
    if len(result) == 3:
        return result
    name, checks = result
    return name, checks, None


def _rf_before_gap(analysis) -> str:
    row = analysis.last_spatial_row()
    if row is None:
        return "--"
    sizes = [plain(a.r) for a in row.rf_out]
    return fmt_number(sizes[0]) if len(set(sizes)) == 1 else "x".join(fmt_number(s) for s in sizes)


def batch_rows(results) -> tuple[list[str], list[list[str]]]:
    """Header and rows: spec, [params, RF before GAP,] one column per rule id (union, first-seen order),
    overall (PASS / FAIL / ERROR). A rule a spec's set lacks is blank."""
    results = [_unpack(r) for r in results]
    ids: list[str] = []
    for _, checks, _ in results:
        if not isinstance(checks, BaseException):
            ids += [c.rule for c in checks if c.rule not in ids]
    with_analysis = any(a is not None for _, _, a in results)
    header = ["Spec"] + (["Params", "RF"] if with_analysis else []) + ids + ["Overall"]
    rows = []
    for name, checks, analysis in results:
        row = [str(name)]
        if with_analysis:
            row += [f"{analysis.params:,}", _rf_before_gap(analysis)] if analysis is not None else ["--", "--"]
        if isinstance(checks, BaseException):
            first = str(checks).splitlines()[0] if str(checks) else type(checks).__name__
            rows.append(row + [""] * len(ids) + [f"ERROR: {first}"])
            continue
        by_id = {c.rule: c for c in checks}
        row += [CELL[by_id[i].ok] if i in by_id else "" for i in ids]
        row.append("PASS" if all_ok(checks) else "FAIL")
        rows.append(row)
    return header, rows


def render_batch(results, title: str | None = "Rules: summary") -> Table:
    header, rows = batch_rows(results)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
    for i, h in enumerate(header):
        right = h in ("Params", "RF")
        table.add_column(h, justify="right" if right else "left", no_wrap=(i == 0))
    for row in rows:
        cells = []
        for h, v in zip(header, row):
            style = None
            if v in ("pass", "PASS"):
                style = "green"
            elif v in ("FAIL",) or v.startswith("ERROR"):
                style = "bold red"
            elif v == "--" and h not in ("Params", "RF"):
                style = "yellow"
            cells.append(Text(v, style=style or ""))
        table.add_row(*cells)
    return table


# --------------------------------------------------------------------------- JUnit


def junit_tree(results, suite_name: str = "convcli rules") -> ET.ElementTree:
    """<testsuites> with one <testsuite> per spec and one <testcase> per rule: <failure> for a failed
    rule, <skipped> for a rule not checked (accuracy before training), <error> for a spec that failed
    to load."""
    root = ET.Element("testsuites", name=suite_name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in results:
        name, checks, _ = _unpack(result)
        classname = str(name).replace(".", "_")
        suite = ET.SubElement(root, "testsuite", name=str(name))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if isinstance(checks, BaseException):
            case = ET.SubElement(suite, "testcase", classname=classname, name="load")
            err = ET.SubElement(case, "error", message=str(checks).splitlines()[0] if str(checks) else "error",
                                type=type(checks).__name__)
            err.text = str(checks)
            counts["tests"] += 1
            counts["errors"] += 1
        else:
            for c in checks:
                case = ET.SubElement(suite, "testcase", classname=classname, name=c.rule)
                counts["tests"] += 1
                if c.ok is False:
                    counts["failures"] += 1
                    fail = ET.SubElement(case, "failure", message=c.message, type="rule")
                    fail.text = f"rule: {c.rule}\nmeasured: {c.measured}\nlimit: {c.limit}\n{c.message}"
                elif c.ok is None:
                    counts["skipped"] += 1
                    ET.SubElement(case, "skipped", message=c.message)
                else:
                    out = ET.SubElement(case, "system-out")
                    out.text = f"measured: {c.measured}; limit: {c.limit}; {c.message}"
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str | Path, results, suite_name: str = "convcli rules") -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(results, suite_name).write(path, encoding="utf-8", xml_declaration=True)
    return path


__all__ = ["render_checks", "render_batch", "verdict_rows", "batch_rows", "summary_line", "junit_tree",
           "write_junit", "VERDICT_HEADER"]
