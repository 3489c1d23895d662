"""`convcli rf SPEC --plot rf.png`: receptive field and jump per layer, the numbers of the RF table.

One point per leaf row (layers and joins, in table order): the RF above, the jump below (log2 scale,
input pixels between adjacent units); horizontal lines mark the input size and the rule's threshold (the spec's `min_rf`
rule, e.g. RF > 44, unless `threshold` is given); shaded columns mark the layers that downsample (the
jump grows). Rows after the first global op (GAP, flatten) see the whole input: a grey band, no points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from convcli.visual._figure import new_figure, save, short_name

AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
OP_SYMBOLS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "eq": "="}


@dataclass
class RFSeries:
    """What the plot shows, per leaf row (for tests and other front-ends)."""

    names: list[str]
    rf: list[list[float]]  # per row, per axis
    jump: list[list[float]]
    downsampling: list[int] = field(default_factory=list)  # row indexes where the jump grows
    upsampling: list[int] = field(default_factory=list)  # where it shrinks (transposed conv, upsample)
    first_global: int | None = None  # index of the first global row (GAP/flatten), if any
    final_rf: list[float] = field(default_factory=list)  # the RF the rules check (before the first global op)
    input_size: list[int] = field(default_factory=list)


def rf_series(analysis) -> RFSeries:
    rows = analysis.layers
    series = RFSeries(names=[short_name(analysis, r) for r in rows],
                      rf=[[float(a.r) for a in r.rf_out] for r in rows],
                      jump=[[float(a.j) for a in r.rf_out] for r in rows],
                      final_rf=[float(a.r) for a in analysis.rf_before_global()],
                      input_size=list(analysis.input_shape[1:]))
    first = analysis.first_global_row()
    for i, r in enumerate(rows):
        if r is first:
            series.first_global = i
        if series.first_global is not None or r.is_global:
            continue
        j_in, j_out = [a.j for a in r.rf_in], [a.j for a in r.rf_out]
        if any(b > a for a, b in zip(j_in, j_out)):
            series.downsampling.append(i)
        elif any(b < a for a, b in zip(j_in, j_out)):
            series.upsampling.append(i)
    if series.first_global is None:
        series.first_global = next((i for i, r in enumerate(rows) if r.is_global), None)
    return series


def rf_threshold(analysis) -> tuple[float, str] | None:
    """(limit, 'rule: RF > 44') from the spec's `min_rf` rule, or None."""
    spec = getattr(analysis, "spec", None)
    if spec is None:
        return None
    try:
        from convcli.rules.load import resolve_rules

        rules = resolve_rules(spec)
    except Exception:  # a broken rules reference is reported by the commands that check rules
        return None
    for rule in getattr(rules, "rules", None) or []:
        if rule.kind == "min_rf" and rule.args.get("bounds"):
            b = rule.args["bounds"][0]
            return float(b.limit), f"rule: RF {OP_SYMBOLS.get(b.op, b.op)} {b.limit:g}"
    return None


def figure_size(n_rows: int) -> tuple[int, int]:
    """The PNG's (width, height) in pixels: 30 px per layer plus margins, at least 1000, at most 6000."""
    return max(1000, min(6000, 30 * n_rows + 300)), 750


def plot_rf(analysis, path, threshold: float | None = None, title: str | None = None):
    """Write the RF/jump-per-layer picture of `analysis` to `path` (PNG); returns its RFSeries.
    `threshold`: the RF the rules ask for (default: the spec's `min_rf` rule, if any)."""
    from matplotlib.patches import Patch

    s = rf_series(analysis)
    n = len(s.names)
    nd = len(s.input_size)
    width, height = figure_size(n)
    fig = new_figure(width, height)
    ax, axj = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    xs = list(range(n))
    spatial = s.first_global if s.first_global is not None else n
    same_axes = all(len(set(v)) == 1 for v in s.rf + s.jump)
    axis_names = AXIS_NAMES.get(nd, tuple(str(i) for i in range(nd)))
    handles = []

    # Downsampling columns and the global band, behind everything, in both panels.
    for panel in (ax, axj):
        for i in s.downsampling:
            panel.axvspan(i - 0.5, i + 0.5, color="tab:orange", alpha=0.15, lw=0)
        for i in s.upsampling:
            panel.axvspan(i - 0.5, i + 0.5, color="tab:cyan", alpha=0.15, lw=0)
        if spatial < n:
            panel.axvspan(spatial - 0.5, n - 0.5, color="0.6", alpha=0.2, lw=0)
    if s.downsampling:
        handles.append(Patch(color="tab:orange", alpha=0.3, label="downsampling layer (jump grows)"))
    if s.upsampling:
        handles.append(Patch(color="tab:cyan", alpha=0.3, label="upsampling layer (jump shrinks)"))
    if spatial < n:
        handles.append(Patch(color="0.6", alpha=0.4, label="after GAP/flatten: every unit sees the whole input"))

    # RF per axis (one line when the axes agree), up to the last spatial layer.
    colors = ["tab:blue", "tab:green", "tab:purple"]
    for k in range(1 if same_axes else nd):
        label = "receptive field (px)" if same_axes else f"receptive field, axis {axis_names[k]} (px)"
        (line,) = ax.plot(xs[:spatial], [v[k] for v in s.rf[:spatial]], "o-", color=colors[k % 3], lw=2, ms=4,
                          label=label)
        handles.append(line)
        (jl,) = axj.plot(xs[:spatial], [v[k] for v in s.jump[:spatial]], "s-", color=colors[k % 3], lw=1.5, ms=3,
                         drawstyle="steps-mid", label="jump" if same_axes else f"jump, axis {axis_names[k]}")
    if spatial < n:
        ax.text((spatial + n - 1) / 2, 0.5, "whole input", transform=ax.get_xaxis_transform(), ha="center",
                va="center", rotation=90 if n - spatial < 3 else 0, fontsize=9, color="0.3")
    # Input size and threshold.
    sizes = sorted(set(s.input_size))
    for size in sizes:
        where = "/".join(a for a, v in zip(axis_names, s.input_size) if v == size)
        handles.append(ax.axhline(size, color="black", lw=1.2, ls=":",
                                  label=f"input size {size} px" + (f" ({where})" if len(sizes) > 1 else "")))
    rule = (float(threshold), f"threshold: RF > {threshold:g}") if threshold is not None else rf_threshold(analysis)
    if rule is not None:
        handles.append(ax.axhline(rule[0], color="tab:red", lw=1.5, ls="--", label=rule[1]))
    if spatial:
        final = max(s.final_rf)
        ax.annotate(f"final RF {final:g} px", (spatial - 1, final), xytext=(-8, 8), textcoords="offset points",
                    ha="right", va="bottom", fontsize=9, color=colors[0], fontweight="bold")

    ymax = max([v for row in (s.rf[:spatial] or s.rf) for v in row] + s.input_size + [rule[0] if rule else 0])
    ax.set_ylim(0, ymax * 1.15)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylabel("receptive field (input px)")
    ax.grid(axis="y", alpha=0.3)
    shape = "×".join(str(v) for v in analysis.input_shape)
    ax.set_title(title or f"{analysis.name}: receptive field and jump per layer (input {shape})", fontsize=12)
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.9)

    from matplotlib.ticker import FixedLocator, FuncFormatter

    jumps = [v for row in (s.jump[:spatial] or s.jump) for v in row]
    axj.set_yscale("log", base=2)
    lo, hi = min(jumps + [1.0]), max(jumps + [1.0])
    axj.set_ylim(lo / 1.6, hi * 1.6)
    ticks = [2.0 ** e for e in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)]
    axj.yaxis.set_major_locator(FixedLocator(ticks))
    axj.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axj.yaxis.set_minor_locator(FixedLocator([]))
    axj.set_ylabel("jump (px)")
    axj.grid(axis="y", alpha=0.3)
    axj.set_xlabel("layer (table order)")
    step = max(1, math.ceil(n / 150))
    axj.set_xticks(xs[::step], [_clip(t) for t in s.names[::step]], rotation=90, fontsize=9 if n <= 40 else 7)
    save(fig, path)
    return s


def _clip(text: str, width: int = 34) -> str:
    """Long names keep their start (the block) and end (the layer): `layer1[0].basic…body[0].conv`."""
    if len(text) <= width:
        return text
    head = (width - 1) * 2 // 5
    return text[:head] + "…" + text[-(width - 1 - head):]


__all__ = ["RFSeries", "rf_series", "rf_threshold", "figure_size", "plot_rf"]
