"""Shared figure plumbing: a matplotlib Figure on the Agg canvas (no pyplot, no global backend switch),
a fixed size in pixels, and the short layer names every picture uses."""

from __future__ import annotations

import re
from pathlib import Path

DPI = 100


def new_figure(width_px: int, height_px: int, **kw):
    """A Figure of exactly width_px x height_px when saved with `save` (constrained layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=kw.pop("layout", "constrained"), **kw)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path) -> Path:
    """Write the figure as PNG at its own size (no tight bbox: the pixel size is the figure's)."""
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file, read from its IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def block_of(analysis, row):
    """The labelled group a row belongs to (the innermost one with a label), or None."""
    if row.node is None:
        return None
    best = None
    for g in analysis.graph.groups:
        if g.label and row.node in g.nodes and (best is None or g.depth > best.depth):
            best = g
    return best


def short_name(analysis, row) -> str:
    """A row's path with its labelled block's path replaced by the label: `C3[1].dwsconv[0].depthwise`
    for `layers[2].seq[1].dwsconv[0].depthwise`; a row that is its own label keeps it."""
    if row.kind == "block":
        return row.label or row.path
    g = block_of(analysis, row)
    name = row.path
    if g is not None and g.path != g.label and name.startswith(g.path):
        name = g.label + name[len(g.path):]
    if row.module is not None and not name.endswith(row.type):
        name = f"{name} ({row.type})"
    return name


def describe_row(analysis, row) -> str:
    """`path (label)` as the tables write it."""
    return row.path + (f" ({row.label})" if row.label and row.label != row.path else "")


def safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "block"


def accuracy_text(accuracy) -> str:
    """' (test accuracy 84.55%)' for a fraction or a percentage; '' for None."""
    if accuracy is None:
        return ""
    value = float(accuracy)
    return f", test accuracy {100 * value if value <= 1 else value:.2f}%"
