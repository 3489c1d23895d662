"""`convcli import`: write a YAML spec for a PyTorch model (traced with torch.fx), with the same analysis."""

from __future__ import annotations

from pathlib import Path

import typer


def import_model(
    model: str = typer.Argument(..., help="FILE.py:NAME or package.module:NAME (an nn.Module class or a "
                                "zero-argument factory).", metavar="MODEL", show_default=False),
    input_shape: str = typer.Option(..., "--input", "-i", help="Input shape C,H,W (or C,L / C,D,H,W).",
                                    show_default=False),
    out: Path = typer.Option(None, "--out", "-o", help="Write the spec to this file instead of stdout."),
) -> None:
    """Write a YAML spec for a PyTorch model: [bold]convcli import model.py:Net --input 3,32,32 > net.yaml[/]

    Loading FILE.py runs its code, as importing it would.
    """
    from convcli.errors import ConvcliError
    from convcli.spec_writer import spec_yaml
    from convcli.torch_graph import trace_ref
    from convcli.torch_load import is_model_ref

    if not is_model_ref(model):
        raise ConvcliError(f"{model}: expected FILE.py:NAME or package.module:NAME")
    text = spec_yaml(trace_ref(model, input_shape))
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
