"""`convcli rf`: the course's receptive-field table, layer by layer (no torch needed), and its pictures."""

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

PICTURES = "Pictures and checks"


def rf(
    specs: list[str] = SPECS_ARG,
    explain: bool = typer.Option(False, "--explain", help="Print each step's arithmetic (table and markdown)."),
    plot: Path = typer.Option(None, "--plot", help="Draw RF and jump per layer into this PNG.",
                              rich_help_panel=PICTURES),
    show: str = typer.Option(None, "--show", help="Draw one unit's RF box on this image (a file, or "
                             "cifar10:INDEX from the test split); needs --layer.", rich_help_panel=PICTURES),
    layer: str = typer.Option(None, "--layer", help="The layer (path or label) whose unit --show draws.",
                              rich_help_panel=PICTURES),
    unit: str = typer.Option(None, "--unit", help="The unit Y,X (default: the centre unit).",
                             rich_help_panel=PICTURES),
    out: Path = typer.Option(Path("rf_box.png"), "--out", "-o", help="Where --show writes its PNG.",
                             rich_help_panel=PICTURES),
    data: str = typer.Option(None, "--data", help="Dataset for cifar10:INDEX (default: torchvision's CIFAR-10 "
                             "cache; or an ImageFolder directory / .tar.gz).", rich_help_panel=PICTURES),
    empirical: bool = typer.Option(False, "--empirical", help="Measure each layer's RF by gradient support "
                                   "beside the analytic one; exit 1 on a mismatch.", rich_help_panel=PICTURES),
    input_shape: str = INPUT_OPT,
    fmt: Format = FORMAT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Receptive field per layer: n_in, r_in, j_in, k, s, p, d → n_out, r_out, j_out.

    Per-axis values are shown as HxW when the axes differ. Example: [bold]convcli rf architectures/s7.yaml[/]
    """
    from convcli.commands.common import analyse_each, batch_title, report_unreadable
    from convcli.errors import ConvcliError
    from convcli.render import console, emit
    from convcli.views import add_empirical, rf_output

    paths = expand_specs(specs)
    if (plot or show or empirical) and len(paths) != 1:
        raise ConvcliError("--plot, --show and --empirical take one spec")
    if show and not layer:
        raise ConvcliError("--show needs --layer NAME (a layer path or a block label from the table)")
    analyses, failed = analyse_each(paths, input_shape)
    outputs = [rf_output(a, explain, label) for label, a in analyses]
    if len(analyses) + len(failed) > 1:
        outputs = [batch_title(o, label, a.name) for o, (label, a) in zip(outputs, analyses)]
    mismatch = False
    if empirical:
        from convcli.visual import empirical_rf

        a = analyses[0][1]
        results = empirical_rf(a)
        add_empirical(outputs[0], a, results)
        mismatch = any(e.mismatch for e in results)
    # Pictures first: a bad --show/--unit/--plot is an error before any table is printed.
    wrote = []
    if plot:
        from convcli.visual import plot_rf

        plot_rf(analyses[0][1], plot)
        wrote.append(f"wrote {plot}")
    if show:
        from convcli.visual import parse_unit, show_rf

        box = show_rf(analyses[0][1], show, layer, parse_unit(unit), out, data=data)
        span = " × ".join(f"[{float(lo):g}, {float(hi):g})" for lo, hi in box)
        wrote.append(f"wrote {out}: the RF of {layer} unit {unit or '(centre)'} spans {span} input px")
    if analyses:
        emit(outputs, output_format(fmt, as_json))
    note = console(stderr=True)
    for line in wrote:
        note.print(line, markup=False, highlight=False)
    report_unreadable(failed, len(analyses) + len(failed))
    if mismatch:
        raise typer.Exit(1)
