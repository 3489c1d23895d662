"""Output for every command: one neutral table model, rendered as a rich table (terminal), plain
text (piped), CSV, Markdown, or JSON. Numbers are exact; `-` marks a value that does not apply."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

FORMATS = ("table", "json", "csv", "markdown")


@dataclass
class Column:
    key: str
    header: str
    numeric: bool = True


@dataclass
class TableData:
    title: str
    columns: list[Column]
    rows: list[dict] = field(default_factory=list)
    styles: list[str | None] = field(default_factory=list)  # per row: None, "dim", "bold"
    footer: list[str] = field(default_factory=list)


def cell(v: Any) -> str:
    """Exact integers with thousands separators, fractions as a/b, '-' where nothing applies."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, Fraction):
        return f"{v.numerator:,}" if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, (list, tuple)):
        return "×".join(cell(x) for x in v)
    return str(v)


def jsonable(v: Any) -> Any:
    if isinstance(v, Fraction):
        return v.numerator if v.denominator == 1 else float(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


def per_axis_value(values: list) -> Any:
    """A number when every axis agrees, else the per-axis list (the JSON and table convention)."""
    values = [jsonable(v) if not isinstance(v, Fraction) else v for v in values]
    if not values:
        return None
    return values[0] if all(v == values[0] for v in values) else list(values)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    # Piped output: no colour, and wide enough that no column is folded or cut.
    return Console(file=stream, highlight=False, width=None if tty else 400, soft_wrap=not tty, no_color=not tty)


def to_rich(t: TableData):
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=escape(t.title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
        header_style="bold",
    )
    for c in t.columns:
        table.add_column(c.header, justify="right" if c.numeric else "left", no_wrap=True)
    for row, style in zip(t.rows, t.styles or [None] * len(t.rows)):
        table.add_row(*(escape(cell(row.get(c.key))) for c in t.columns), style=style)
    return table


def print_table(t: TableData, fmt: str = "table", out=None) -> None:
    if fmt == "csv":
        w = csv.writer(out or sys.stdout, lineterminator="\n")
        w.writerow([c.header for c in t.columns])
        for row in t.rows:
            w.writerow([jsonable_cell(row.get(c.key)) for c in t.columns])
        return
    if fmt == "markdown":
        lines = [
            f"**{t.title}**",
            "",
            "| " + " | ".join(c.header for c in t.columns) + " |",
            "|" + "|".join("---:" if c.numeric else ":---" for c in t.columns) + "|",
        ]
        for row in t.rows:
            lines.append("| " + " | ".join(cell(row.get(c.key)).replace("|", "\\|") for c in t.columns) + " |")
        lines += [""] + [f"{line}  " for line in t.footer]
        print("\n".join(lines), file=out or sys.stdout)
        return
    con = console()
    con.print(to_rich(t))
    for line in t.footer:
        con.print(line, markup=False, highlight=False)
    con.print()


def jsonable_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return "x".join(str(jsonable(x)) for x in v)
    return jsonable(v)


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(doc), indent=2) + "\n")


def csv_text(t: TableData) -> str:
    buf = io.StringIO()
    print_table(t, "csv", buf)
    return buf.getvalue()
