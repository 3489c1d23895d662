"""`convcli inspect`: one table with shapes, params, MACs, RF and jump, then the rule verdicts.

One spec: the layer table and its verdicts. Several specs (graders): one summary row per spec and a
tally, `--format csv` for a gradebook, `--junit FILE` for CI systems.

Exit codes: 0 every spec passes; 1 a rule failed in some spec, or some spec could not be read while
others could; 2 every spec is unreadable, a `--run` is refused, or the usage is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from convcli.commands.common import (
    FORMAT_OPT,
    INPUT_OPT,
    JSON_OPT,
    SPECS_ARG,
    Format,
    expand_specs,
    output_format,
)


@dataclass
class Entry:
    label: str
    analysis: object
    totals: dict | None
    ruleset: object
    checks: object  # list[Check], or the exception of a spec that could not be read
    source: str | None = None  # the path as given, for a spec that could not be read (JSON's "spec")


def complete_profiles(incomplete: str) -> list[str]:
    from convcli.rules import list_profiles

    return [p for p in [*list_profiles(), "none"] if p.startswith(incomplete)]


def inspect(
    specs: list[str] = SPECS_ARG,
    rules: str = typer.Option(None, "--rules", "-r", help="Rule profile (s7, s7-strided), a rules file, or none."
                              " Default: the spec's own `rules:`.", autocompletion=complete_profiles),
    run: Path = typer.Option(None, "--run", help="The training run of this spec (runs/NAME): check the accuracy rule "
                             "on its best test accuracy. A run of a different network is refused."),
    runs: Path = typer.Option(None, "--runs", help="A directory of training runs, one per spec: runs/NAME (NAME = "
                              "the spec's file name), else the newest run trained from the spec file."),
    strict: bool = typer.Option(False, "--strict", help="A rule that cannot be checked (accuracy without a run), "
                                "or a spec with no rules, fails: the pre-submission gate (make check)."),
    allow_subset: bool = typer.Option(False, "--allow-subset", help="Accept a run scored on a test subset "
                                      "(--test-subset); refused by default."),
    junit: Path = typer.Option(None, "--junit", help="Write JUnit XML: a test suite per spec, a test case per rule."),
    details: bool = typer.Option(False, "--details", help="With several specs, print every layer table too."),
    input_shape: str = INPUT_OPT,
    fmt: Format = FORMAT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Everything about a spec in one table, and the verdict of its assignment rules."""
    from convcli.commands.common import batch_labels, spec_label
    from convcli.errors import ConvcliError
    from convcli.render import Lines, Output, console, emit
    from convcli.rules import read_run
    from convcli.rules.report import batch_table, counts, tally
    from convcli.views import inspect_output

    form = output_format(fmt, as_json)
    paths = expand_specs(specs)
    batch = len(paths) > 1
    if run is not None and runs is not None:
        raise ConvcliError("give either --run (one run) or --runs (a directory of runs), not both")
    if run is not None and batch:
        raise ConvcliError(f"--run names one training run, but {len(paths)} specs were given; "
                           "use --runs DIR (one run per spec: DIR/NAME)")
    the_run = read_run(run) if run is not None else None

    folder, labels = batch_labels(paths) if batch else (None, [spec_label(p) for p in paths])
    entries = []
    for path, label in zip(paths, labels):
        try:
            entries.append(grade(path, label, input_shape, rules, the_run, runs, strict, allow_subset))
        except ConvcliError as exc:
            if not batch:
                raise
            entries.append(Entry(label, None, None, None, exc, source=str(path)))

    results = [(e.label, e.checks, e.analysis) for e in entries]
    if junit is not None:
        from convcli.rules import write_junit

        write_junit(junit, results)

    if not batch:
        e = entries[0]
        emit(inspect_output(e.analysis, e.totals, e.ruleset, e.checks, e.label), form)
        if form == "csv" and e.ruleset is not None:  # the CSV is the layer table: the verdict goes beside it
            from convcli.rules.report import verdict_line

            console(stderr=True).print(f"{e.label}: {verdict_line(e.checks)} (each rule: --json, or the table)",
                                       markup=False, highlight=False)
    else:
        outputs = []
        if details and form in ("table", "markdown"):
            outputs += [inspect_output(e.analysis, e.totals, e.ruleset, e.checks, e.label) for e in entries
                        if e.analysis is not None]
        table = batch_table(results, title="Rules: summary" + (f" (specs in {folder}/)" if folder else ""))
        n = counts(results)
        docs = [inspect_document_of(e) for e in entries]
        style = "bold red" if n["FAIL"] or n["ERROR"] else "yellow" if n["NO RULES"] else "bold green"
        outputs.append(Output([table, Lines([tally(results)], style=style)], data=docs, records=table))
        if form == "json":
            outputs = outputs[-1:]
        emit(outputs, form)
        err = console(stderr=True)
        for e in entries:
            if isinstance(e.checks, BaseException):
                err.print(f"error: {e.checks}", markup=False)

    n = counts(results)
    if n["ERROR"] == len(entries):
        raise typer.Exit(2)
    if strict and n["NO RULES"]:  # the gate must not pass a spec whose `rules:` line was deleted
        unruled = [e.label for e in entries if e.ruleset is None and not isinstance(e.checks, BaseException)]
        console(stderr=True).print(
            f"error: --strict: {', '.join(unruled)} {'has' if len(unruled) == 1 else 'have'} no rules to check "
            "(add `rules: s7` to the spec, or give --rules s7)", markup=False)
        raise typer.Exit(1)
    if n["FAIL"] or n["ERROR"]:
        raise typer.Exit(1)


def grade(path, label, input_shape, rules, the_run, runs, strict, allow_subset) -> Entry:
    """Analyse one spec, find the accuracy its `accuracy` rule needs, and run its rules."""
    from convcli.commands.common import totals
    from convcli.errors import ConvcliError
    from convcli.render import console
    from convcli.rules import check_run, find_run, resolve_rules, run_checks
    from convcli.sources import load_analysis

    a = load_analysis(path, input_shape)
    ruleset = resolve_rules(a.spec, rules)
    accuracy, note, warnings, used = None, None, [], the_run
    if the_run is not None:
        problem, warnings = check_run(the_run, a, allow_subset)
        if problem:
            raise ConvcliError(f"--run {the_run.dir}: refused: {problem}")
        accuracy = the_run.accuracy
        note = f"{the_run.dir} has no test accuracy yet" if accuracy is None else None
    elif runs is not None and ruleset is not None and any(r.kind == "accuracy" for r in ruleset.rules):
        found, note, warnings = find_run(runs, path, a, allow_subset)
        accuracy, used = (found.accuracy if found else None), found
        if found is not None and accuracy is None:
            note = f"{found.dir} has no test accuracy yet"
    err = console(stderr=True)
    for w in warnings:
        err.print(f"warning: {w}", markup=False)
    checks = run_checks(a, ruleset, accuracy) if ruleset else []
    checks = [mark(c, note, strict) for c in checks]
    for c in checks:  # say which run the accuracy came from, and on what test set
        if c.kind == "accuracy" and c.ok is not None and used is not None and accuracy is not None:
            c.message += f" (from {used.source()})"
    return Entry(label, a, totals(a), ruleset, checks)


def mark(check, note: str | None, strict: bool):
    """A rule that could not be checked: say why (no run found, ...); with --strict it fails."""
    if check.ok is not None:
        return check
    if note and check.kind == "accuracy":
        check.message = f"not checked: {note}"
    if strict:
        check.ok = False
        check.message = check.message.replace("not checked: ", "not checked (--strict fails it): ", 1)
        if not check.message.startswith("not checked"):
            check.message = f"not checked (--strict fails it): {check.message}"
    return check


def inspect_document_of(e: Entry) -> dict:
    from convcli.views import inspect_document

    if e.analysis is None:
        return {"spec": e.source or e.label, "error": str(e.checks), "ok": False}  # as a.source for the others
    return inspect_document(e.analysis, e.totals, e.ruleset, e.checks)
