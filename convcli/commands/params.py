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
    from convcli.commands.common import spec_label, totals
    from convcli.render import emit
    from convcli.sources import load_analysis
    from convcli.views import params_output

    outputs = []
    for p in expand_specs(specs):
        a = load_analysis(p, input_shape)
        outputs.append(params_output(a, totals(a), spec_label(p)))
    emit(outputs, output_format(fmt, as_json))
