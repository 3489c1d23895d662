"""`convcli inspect`: one table with shapes, params, MACs, RF and jump, then the rule verdicts."""

from __future__ import annotations

from convcli.commands.common import FORMAT_OPT, JSON_OPT, SPECS_ARG, Format, expand_specs, output_format


def inspect(specs: list[str] = SPECS_ARG, fmt: Format = FORMAT_OPT, as_json: bool = JSON_OPT) -> None:
    """Everything about a spec in one table: output shape, params, MACs, RF and jump per layer."""
    from convcli.analysis import analyze_file
    from convcli.commands.common import torch_totals
    from convcli.render import print_json, print_table
    from convcli.views import inspect_json, inspect_table

    form = output_format(fmt, as_json)
    results = [(a, torch_totals(a)) for a in map(analyze_file, expand_specs(specs))]
    if form == "json":
        docs = [inspect_json(a, t) for a, t in results]
        print_json(docs[0] if len(docs) == 1 else docs)
        return
    for a, t in results:
        print_table(inspect_table(a, t), form)
