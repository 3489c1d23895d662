"""`convcli inspect`: one table with shapes, params, MACs, RF and jump, then the rule verdicts.

One spec: the layer table and its verdicts. Several specs (graders): one summary row per spec,
plus `--junit FILE` for CI systems. Exit 1 when a rule fails, 2 when a spec cannot be read.
"""

from __future__ import annotations

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


def inspect(
    specs: list[str] = SPECS_ARG,
    rules: str = typer.Option(None, "--rules", "-r", help="Rule profile (s7, s7-strided), a rules file, or none."
                              " Default: the spec's own `rules:`."),
    run: Path = typer.Option(None, "--run", help="A training run dir: check the accuracy rule on its best accuracy."),
    junit: Path = typer.Option(None, "--junit", help="Write JUnit XML: a test suite per spec, a test case per rule."),
    details: bool = typer.Option(False, "--details", help="With several specs, print every layer table too."),
    input_shape: str = INPUT_OPT,
    fmt: Format = FORMAT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Everything about a spec in one table, and the verdict of its assignment rules."""
    from convcli.commands.common import totals
    from convcli.errors import ConvcliError
    from convcli.render import console, print_json, print_table
    from convcli.rules import (
        accuracy_from_run,
        all_ok,
        render_batch,
        render_checks,
        resolve_rules,
        run_checks,
        summary_line,
        write_junit,
    )
    from convcli.sources import load_analysis
    from convcli.views import inspect_document, inspect_table

    form = output_format(fmt, as_json)
    paths = expand_specs(specs)
    accuracy = accuracy_from_run(run) if run is not None else None
    batch = len(paths) > 1
    results, errors = [], []
    for path in paths:
        try:
            a = load_analysis(path, input_shape)
            ruleset = resolve_rules(a.spec, rules)
            checks = run_checks(a, ruleset, accuracy) if ruleset else []
            results.append((path, a, totals(a), ruleset, checks))
        except ConvcliError as exc:
            if not batch:
                raise
            errors.append(exc)
            results.append((path, None, None, None, exc))

    if junit is not None:
        write_junit(junit, [(str(p), checks, a) if a else (str(p), checks) for p, a, _, _, checks in results])

    if form == "json":
        docs = []
        for path, a, tot, ruleset, checks in results:
            if a is None:
                docs.append({"spec": str(path), "error": str(checks), "ok": False})
                continue
            docs.append(inspect_document(a, tot, ruleset, checks))
        print_json(docs[0] if len(docs) == 1 else docs)
    else:
        con = console()
        for path, a, tot, ruleset, checks in results:
            if a is not None and (details or not batch):
                print_table(inspect_table(a, tot), form)
                if ruleset and not batch:
                    con.print(render_checks(checks, title=f"Rules: {ruleset.name}"))
                    con.print(("PASS: " if all_ok(checks) else "FAIL: ") + summary_line(checks), markup=False)
        if batch:
            con.print(render_batch([(str(p), checks, a) if a else (str(p), checks)
                                    for p, a, _, _, checks in results]))
        for exc in errors:
            console(stderr=True).print(f"error: {exc}", markup=False)

    if errors:
        raise typer.Exit(2)
    if not all(all_ok(checks) for *_, checks in results):
        raise typer.Exit(1)
