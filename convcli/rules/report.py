"""Verdicts as neutral tables (rendered by `convcli.render`), the grader's batch summary and JUnit XML.

- `verdict_table(checks)`: rule, measured, limit, pass/FAIL/not checked, details.
- `batch_table(results)`: one row per spec: status (PASS / FAIL / ERROR), each rule's measured value
  (a failed one marked ✗), and the reason for a FAIL or ERROR; `tally(results)`: `31 pass, 6 fail, 2 error`.
  As CSV it is the gradebook: raw measured values, one row per spec.
- `junit_tree(results)`: one `<testsuite>` per spec, one `<testcase>` per rule; valid against the strict
  Jenkins JUnit schema (no `skipped` on `<testsuites>`, a bare `<skipped>` text, classnames from the
  spec names).

A batch result is `(spec, checks)` or `(spec, checks, analysis)`; `checks` may be an exception (a spec
that could not be read): an ERROR row, and a JUnit `<error>`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path, PurePath

from convcli.render import Cell, Column, TableData
from convcli.rules.model import Check, all_ok, failed, fmt_number, plain

STATUS_STYLES = {"pass": "green", "FAIL": "bold red", "not checked": "yellow", "PASS": "bold green",
                 "ERROR": "bold red", "NO RULES": "yellow"}
CELL = {True: "pass", False: "FAIL", None: "--"}
FAIL_MARK = " ✗"

VERDICT_HEADER = ["Rule", "Measured", "Limit", "Result", "Details"]


# --------------------------------------------------------------------------- one spec


def verdict_rows(checks: list[Check]) -> list[list[str]]:
    return [[c.rule, c.measured, c.limit, c.status, c.message] for c in checks]


def verdict_table(checks: list[Check], title: str | None = "Rules") -> TableData:
    """Rule, measured, limit, pass/FAIL/not checked, and what was found (layer paths, labels)."""
    t = TableData(
        title=title or "",
        columns=[Column("rule", "Rule", numeric=False), Column("measured", "Measured"),
                 Column("limit", "Limit", numeric=False, wrap=True),
                 Column("result", "Result", numeric=False, styles=STATUS_STYLES),
                 Column("details", "Details", numeric=False, wrap=True)],
    )
    for c in checks:
        t.add({"rule": c.rule, "measured": Cell(c.measured, raw_value(c)), "limit": c.limit, "result": c.status,
               "details": c.message})
    return t


render_checks = verdict_table  # the old name: a TableData is a rich renderable


def summary_line(checks: list[Check]) -> str:
    """`all 8 rules pass`, or `2 of 8 rules failed: rf>44, count(maxpool)==3` (+ not-checked count)."""
    bad = failed(checks)
    skipped = sum(c.ok is None for c in checks)
    tail = f" ({skipped} not checked)" if skipped else ""
    if not bad:
        return f"all {len(checks) - skipped} checked rules pass{tail}"
    return f"{len(bad)} of {len(checks)} rules failed: " + ", ".join(c.rule for c in bad) + tail


def verdict_line(checks: list[Check]) -> str:
    return ("PASS: " if all_ok(checks) else "FAIL: ") + summary_line(checks)


# --------------------------------------------------------------------------- batch


def _unpack(result):
    if len(result) == 3:
        return result
    name, checks = result
    return name, checks, None


def _rf_before_gap(analysis):
    row = analysis.last_spatial_row()
    if row is None:
        return None
    sizes = [plain(a.r) for a in row.rf_out]
    return sizes[0] if len(set(map(str, sizes))) == 1 else sizes


def raw_value(c: Check):
    """A gradebook cell: the number itself (179146, 0.8123), else the value as shown (C1 C2 C3 C4 O)."""
    v = plain(c.value)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v  # an accuracy shown as 81.23% is written as 0.8123
    return c.measured


def status_of(checks) -> str:
    if isinstance(checks, BaseException):
        return "ERROR"
    if not checks:  # nothing was graded: not a pass (a grader who forgot --rules must not see green)
        return "NO RULES"
    return "PASS" if all_ok(checks) else "FAIL"


def error_text(exc: BaseException) -> str:
    """The error's first line, with its did-you-mean (the fix) when it has one; not the YAML excerpt."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = text.splitlines()
    hint = [line.strip() for line in lines[1:] if line.strip().startswith("did you mean")]
    return "; ".join(lines[:1] + hint)


def reason(checks, name: str | None = None) -> str:
    """Why a spec failed (each failed rule and what was found), or why it could not be read (the error's
    file path shortened to the spec's file name)."""
    if isinstance(checks, BaseException):
        text = error_text(checks)
        head = text.split(":", 1)[0]
        if name and head != name and (head.endswith("/" + name) or head.endswith("\\" + name)):
            return name + text[len(head):]
        return text
    bad = failed(checks)
    parts = [f"{c.rule}: {c.message}" for c in bad]
    skipped = [c.rule for c in checks if c.ok is None]
    if skipped:
        parts.append("not checked: " + ", ".join(skipped))
    return "; ".join(parts) if checks else "no rules to check"


def rule_ids(results) -> list[str]:
    ids: list[str] = []
    for _, checks, _ in map(_unpack, results):
        if not isinstance(checks, BaseException):
            ids += [c.rule for c in checks if c.rule not in ids]
    return ids


def batch_table(results, title: str | None = "Rules: summary") -> TableData:
    """One row per spec: status, each rule's measured value (✗ = failed, -- = not checked, blank = not in
    that spec's rule set), the reason. Without any rules: params, MACs and RF instead."""
    results = [_unpack(r) for r in results]
    ids = rule_ids(results)
    cols = [Column("spec", "Spec", numeric=False), Column("status", "Status", numeric=False, styles=STATUS_STYLES)]
    if ids:
        cols += [Column(f"rule:{i}", i) for i in ids]
    else:
        cols += [Column("params", "Params"), Column("macs", "MACs"), Column("rf", "RF")]
    cols.append(Column("reason", "Reason", numeric=False, wrap=True))
    t = TableData(title=title or "", columns=cols)
    for name, checks, analysis in results:
        status = status_of(checks)
        row = {"spec": str(name), "status": status, "reason": reason(checks, str(name))}
        if not ids and analysis is not None:
            row.update(params=analysis.params, macs=analysis.macs, rf=_rf_before_gap(analysis))
        if isinstance(checks, BaseException):
            row.update({f"rule:{i}": Cell("", None) for i in ids})
        else:
            by_id = {c.rule: c for c in checks}
            for i in ids:
                c = by_id.get(i)
                if c is None:
                    row[f"rule:{i}"] = Cell("", None)
                elif c.ok is None:
                    row[f"rule:{i}"] = Cell("--", None, "yellow")
                else:
                    text = c.measured + ("" if c.ok else FAIL_MARK)
                    row[f"rule:{i}"] = Cell(text, raw_value(c), None if c.ok else "bold red")
        t.add(row)
    return t


def batch_rows(results) -> tuple[list[str], list[list[str]]]:
    """The batch table as header + text rows."""
    from convcli.render import cell

    t = batch_table(results)
    return [c.header for c in t.columns], [[cell(r.get(c.key)) for c in t.columns] for r in t.rows]


render_batch = batch_table


def counts(results) -> dict[str, int]:
    out = {"PASS": 0, "FAIL": 0, "ERROR": 0, "NO RULES": 0}
    for _, checks, _ in map(_unpack, results):
        out[status_of(checks)] += 1
    return out


def tally(results) -> str:
    """`31 pass, 6 fail, 2 error` (`, 3 without rules (--rules NAME grades them)` when some had none)."""
    n = counts(results)
    text = f"{n['PASS']} pass, {n['FAIL']} fail, {n['ERROR']} error"
    if n["NO RULES"]:
        text += f", {n['NO RULES']} without rules (--rules NAME grades them, e.g. --rules s7)"
    return text


# --------------------------------------------------------------------------- JUnit


def junit_names(names: list[str]) -> list[str]:
    """JUnit classnames from the spec names: the path relative to the specs' common folder, without the
    extension, folders as dots (`alice.s7` for alice/s7.yaml, `alice.net.Net` for alice/net.py:Net); never
    an absolute path. A model in an importable module (`pkg.models:Net`) keeps its dotted name."""
    split = [n.rpartition(":")[::2] if ":" in n else (n, None) for n in names]
    dotted = [obj is not None and not file.endswith(".py") for file, obj in split]
    paths = [PurePath(file) for file, _ in split]
    files = [p for p, d in zip(paths, dotted) if not d]
    common = None
    if len(files) > 1:
        parts = [p.parent.parts for p in files]
        prefix = []
        for level in zip(*parts):
            if len(set(level)) != 1:
                break
            prefix.append(level[0])
        common = PurePath(*prefix) if prefix else None
    out = []
    for p, (file, obj), is_dotted in zip(paths, split, dotted):
        if is_dotted:
            text = f"{file}.{obj}"
        else:
            if len(files) < 2:
                rel = PurePath(p.name)
            elif common is not None:
                rel = p.relative_to(common)
            else:
                rel = p.relative_to(p.anchor) if p.is_absolute() else p
            text = ".".join((*rel.parent.parts, rel.stem)) if rel.parent.parts else rel.stem
            text = text.lstrip("./") or p.stem
            if obj is not None:
                text = f"{text}.{obj}"
        out.append(re.sub(r"[^A-Za-z0-9_.\-]", "_", text))
    return out


def junit_tree(results, suite_name: str = "convcli rules") -> ET.ElementTree:
    """<testsuites> with one <testsuite> per spec and one <testcase> per rule: <failure> for a failed rule,
    <skipped> (text only) for a rule not checked, <error> for a spec that could not be read. Only the
    attributes the strict Jenkins schema allows (see tests/data/junit/jenkins-junit-strict.xsd)."""
    results = [_unpack(r) for r in results]
    root = ET.Element("testsuites", name=suite_name)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for (name, checks, _), classname in zip(results, junit_names([str(r[0]) for r in results])):
        suite = ET.SubElement(root, "testsuite", name=classname)
        counts_ = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if isinstance(checks, BaseException):
            case = ET.SubElement(suite, "testcase", name="load", classname=classname)
            err = ET.SubElement(case, "error", message=error_text(checks), type=type(checks).__name__)
            err.text = str(checks)
            counts_["tests"] += 1
            counts_["errors"] += 1
        else:
            for c in checks:
                case = ET.SubElement(suite, "testcase", name=c.rule, classname=classname)
                counts_["tests"] += 1
                if c.ok is False:
                    counts_["failures"] += 1
                    fail = ET.SubElement(case, "failure", message=c.message, type="rule")
                    fail.text = f"rule: {c.rule}\nmeasured: {c.measured}\nlimit: {c.limit}\n{c.message}"
                elif c.ok is None:
                    counts_["skipped"] += 1
                    ET.SubElement(case, "skipped").text = c.message
                else:
                    out = ET.SubElement(case, "system-out")
                    out.text = f"measured: {c.measured}; limit: {c.limit}; {c.message}"
        for k in ("tests", "failures", "errors", "skipped"):
            suite.set(k, str(counts_[k]))
        for k in totals:
            totals[k] += counts_[k]
        ET.SubElement(suite, "system-out").text = f"spec: {name}"
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


__all__ = ["verdict_table", "render_checks", "batch_table", "render_batch", "verdict_rows", "batch_rows",
           "summary_line", "verdict_line", "tally", "counts", "status_of", "reason", "junit_tree", "junit_names",
           "write_junit", "VERDICT_HEADER", "fmt_number"]
