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
    from convcli.commands.common import analyse_each, batch_title, report_unreadable, totals
    from convcli.render import emit
    from convcli.views import params_output

    done, failed = analyse_each(expand_specs(specs), input_shape)
    outputs = [params_output(a, totals(a), label) for label, a in done]
    if len(done) + len(failed) > 1:
        outputs = [batch_title(o, label, a.name) for o, (label, a) in zip(outputs, done)]
    if done:
        emit(outputs, output_format(fmt, as_json))
    report_unreadable(failed, len(done) + len(failed))
