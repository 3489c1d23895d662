"""The input region one unit sees: its receptive-field box, in input pixel coordinates.

Per spatial axis (README, "What the numbers mean"): unit u of a layer has its RF centred at
`start + u*j` and `r` pixels wide, where input pixel i spans [i, i+1). So the box is

    [start + u*j - r/2,  start + u*j + r/2)

It is not clipped: a part below 0 or beyond n is padding (border units of deep layers see mostly
padding). `pixel_range` turns a box into the input pixels it covers (those whose centre lies inside),
clipped to the input or not. Exact arithmetic (Fraction), so a half-pixel is never lost.
"""

from __future__ import annotations

import math
from fractions import Fraction

from convcli.errors import ConvcliError, did_you_mean


def find_row(analysis, name):
    """A row named by its path (`layers[2].seq[1].conv`, `layer1.0.conv1`) or its label (`C3`); a Row
    passes through. Unknown names are a ConvcliError with the closest names."""
    if not isinstance(name, str):
        return name
    text = name.strip()
    for match in (lambda r: r.path == text, lambda r: r.label == text,
                  lambda r: r.label is not None and r.label.lower() == text.lower()):
        found = [r for r in analysis.rows if match(r)]
        if found:
            return found[0]
    choices = [r.path for r in analysis.rows] + [r.label for r in analysis.rows if r.label]
    hint = did_you_mean(text, choices)
    labels = [r.label for r in analysis.rows if r.label]
    known = f"; the labelled layers are {', '.join(labels[:12])}{', ...' if len(labels) > 12 else ''}" if labels \
        else ""
    raise ConvcliError(f"{analysis.source}: no layer '{text}'" + (f"; did you mean {hint}?" if hint else
                                                                    f" (name a layer by its path or label{known})"))


def centre_unit(row) -> tuple[int, ...]:
    """The centre unit of a row's output map: n//2 on every axis (0 on a global axis)."""
    return tuple(a.n // 2 for a in row.rf_out)


def parse_unit(text: str | None) -> tuple[int, ...] | None:
    """`--unit Y,X` (or `L`, `D,H,W`) as a tuple of ints; None stays None."""
    if text is None:
        return None
    try:
        unit = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        unit = ()
    if not unit:
        raise ConvcliError(f"--unit must be integers such as 3,5 (Y,X), got '{text}'")
    return unit


def check_unit(analysis, row, unit) -> tuple[int, ...]:
    axes = row.rf_out
    if not axes:
        raise ConvcliError(f"{analysis.source}: {row.path} has no spatial receptive field")
    if unit is None:
        return centre_unit(row)
    unit = tuple(int(u) for u in unit)
    if len(unit) != len(axes):
        names = "Y,X" if len(axes) == 2 else ",".join("DHW"[-len(axes):]) if len(axes) <= 3 else "..."
        raise ConvcliError(f"{row.path}: a unit has {len(axes)} coordinate(s) ({names}), got {len(unit)}")
    for u, a in zip(unit, axes):
        if not 0 <= u < a.n:
            sizes = "×".join(str(a.n) for a in axes)
            raise ConvcliError(f"{row.path}: unit {tuple(unit)} is outside its {sizes} output map "
                               f"(coordinates run from 0 to n-1)")
    return unit


def rf_box(analysis, row_or_name, unit=None) -> list[tuple[Fraction, Fraction]]:
    """Per spatial axis, (lo, hi): the RF of `unit` (default: the centre unit) of the named layer, as the
    half-open interval [lo, hi) of input pixel coordinates (pixel i spans [i, i+1)). Not clipped:
    lo < 0 or hi > n means the unit also sees padding."""
    row = find_row(analysis, row_or_name)
    unit = check_unit(analysis, row, unit)
    box = []
    for a, u in zip(row.rf_out, unit):
        lo, hi = a.span(u)  # start + u*j ± r/2 on a regular axis; the unit's own span on an irregular one
        box.append((Fraction(lo), Fraction(hi)))
    return box


def pixel_range(box, input_shape=None, clip: bool = True) -> list[tuple[int, int]]:
    """Per axis, the first and last input pixel (inclusive) whose centre i + 1/2 lies in [lo, hi);
    clipped to the input (`input_shape` is (C, *spatial)) unless clip=False. An empty range after
    clipping (a box wholly in the padding) is (first, first - 1)."""
    out = []
    spatial = list(input_shape[1:]) if input_shape is not None else [None] * len(box)
    for (lo, hi), n in zip(box, spatial):
        first = math.ceil(Fraction(lo) - Fraction(1, 2))
        last = math.ceil(Fraction(hi) - Fraction(1, 2)) - 1
        if clip and n is not None:
            first, last = max(first, 0), min(last, n - 1)
            if last < first:
                last = first - 1
        out.append((first, last))
    return out


def clipped_size(box, input_shape) -> list[int]:
    """Per axis, how many input pixels the box covers inside the input."""
    return [last - first + 1 for first, last in pixel_range(box, input_shape)]


__all__ = ["find_row", "centre_unit", "parse_unit", "check_unit", "rf_box", "pixel_range", "clipped_size"]
