"""`convcli params`: parameters and MACs per layer, with totals from the built model."""

from __future__ import annotations

from convcli.commands.common import (
    FORMAT_OPT,
    INPUT_OPT,
    JSON_OPT,
    SPECS_ARG,
    Format,
    expand_specs,
    output_format,
)


def params(
    specs: list[str] = SPECS_ARG,
    input_shape: str = INPUT_OPT,
    fmt: Format = FORMAT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Parameters and MACs per layer; totals (total, trainable), model size in MB.

    MACs are per sample (batch 1): multiply-accumulates of conv, transposed-conv and linear weights.
    """
    from convcli.commands.common import totals
    from convcli.render import print_json, print_table
    from convcli.sources import load_analysis
    from convcli.views import params_json, params_table

    form = output_format(fmt, as_json)
    results = [(a, totals(a)) for a in (load_analysis(p, input_shape) for p in expand_specs(specs))]
    if form == "json":
        docs = [params_json(a, t) for a, t in results]
        print_json(docs[0] if len(docs) == 1 else docs)
        return
    for a, t in results:
        print_table(params_table(a, t), form)
