"""`convcli rf`: the course's receptive-field table, layer by layer (no torch needed)."""

from __future__ import annotations

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


def rf(
    specs: list[str] = SPECS_ARG,
    explain: bool = typer.Option(False, "--explain", help="Print each step's arithmetic (table and markdown)."),
    input_shape: str = INPUT_OPT,
    fmt: Format = FORMAT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Receptive field per layer: n_in, r_in, j_in, k, s, p, d → n_out, r_out, j_out.

    Per-axis values are shown as HxW when the axes differ. Example: [bold]convcli rf architectures/s7.yaml[/]
    """
    from convcli.commands.common import spec_label
    from convcli.render import emit
    from convcli.sources import load_analysis
    from convcli.views import rf_output

    outputs = [rf_output(load_analysis(p, input_shape), explain, spec_label(p)) for p in expand_specs(specs)]
    emit(outputs, output_format(fmt, as_json))
