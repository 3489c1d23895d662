"""Helpers shared by the analysis commands: spec arguments, output format, torch-side totals."""

from __future__ import annotations

import glob
from enum import Enum
from pathlib import Path

import typer

from convcli.errors import ConvcliError


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


SPECS_ARG = typer.Argument(..., help="Spec files, directories of specs, or globs (quoted).", show_default=False)
FORMAT_OPT = typer.Option(Format.table, "--format", "-f", help="Output format.", case_sensitive=False)
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document (a list for several specs).")


def expand_specs(args: list[str]) -> list[Path]:
    """Files as given; directories → their *.yaml/*.yml (not recursive); quoted globs expanded."""
    out: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise ConvcliError(f"{arg}: no *.yaml specs in this directory")
            out += found
        elif any(ch in arg for ch in "*?[") and not p.exists():
            found = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            if not found:
                raise ConvcliError(f"{arg}: no file matches this pattern")
            out += found
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def output_format(fmt: Format, as_json: bool) -> str:
    return "json" if as_json else fmt.value


def torch_totals(analysis) -> dict:
    """Totals from the built model (torch's de-duplicated parameters), cross-checked with the analysis."""
    import torch

    from convcli.build import build_model, count_params

    with torch.device("meta"):  # shapes only: no memory, no weight initialisation (VGG16 in ~0.1 s)
        model = build_model(analysis)
    total, trainable = count_params(model)
    if total != analysis.params:
        raise ConvcliError(
            f"{analysis.source}: internal check failed: torch counts {total:,} parameters, "
            f"the analysis {analysis.params:,}; please report this spec"
        )
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"total": total, "trainable": trainable, "macs": analysis.macs, "size_mb": size / 1e6}
