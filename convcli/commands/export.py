"""`convcli export SPEC > net.py`: the spec's model as a standalone PyTorch file (torch only, no convcli)."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    spec: str = typer.Argument(..., metavar="SPEC", help="Spec YAML.", show_default=False),
    out: Path = typer.Option(None, "--out", "-o", help="Write the file here instead of to stdout."),
) -> None:
    """Write SPEC's model as a standalone PyTorch file (it imports torch, never convcli).

    Its state_dict keys are those of convcli's model, so a best.pt from `convcli train` loads with strict=True.
    Example: [bold]convcli export architectures/s7.yaml > net.py[/]
    """
    import sys

    from convcli.analysis import analyze_file
    from convcli.errors import ConvcliError
    from convcli.export import export_source
    from convcli.sources import require_spec

    require_spec(spec, "`convcli export` (a PyTorch model is its own Python code)")
    source = export_source(analyze_file(spec))
    if out is None:
        sys.stdout.write(source)
        return
    try:
        out.write_text(source, encoding="utf-8")
    except OSError as exc:
        raise ConvcliError(f"{out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {out}", file=sys.stderr)
