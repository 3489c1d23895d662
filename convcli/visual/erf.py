"""The effective receptive field (Luo, Li, Urtasun, Zemel, NIPS 2016): how much each input pixel actually
moves one output unit, against the theoretical RF that bounds it.

For a batch of images, back-propagate 1 from the centre unit of a layer (every channel of it) and
average |d unit / d pixel| over the images, summing the input channels: a heatmap over the input.
Its 95% region is the smallest rectangle centred on the unit's RF centre that holds 95% of the
heatmap's mass, grown one pixel per side at a time on every axis (a square unless the input border
stops it). The paper finds the ERF roughly Gaussian and much smaller than the theoretical RF, growing
with training.
"""

from __future__ import annotations

import copy
from fractions import Fraction

from convcli.visual._figure import accuracy_text, describe_row, new_figure, save
from convcli.visual.rf_box import check_unit, find_row, rf_box


def default_layer(analysis):
    """The layer whose RF the rules check: the input of the first global op (or the last layer)."""
    return analysis.last_spatial_row() or analysis.layers[-1]


def mass_region(heatmap, centre, fraction: float = 0.95) -> list[tuple[int, int]]:
    """Per axis, the half-open pixel range [lo, hi) of the smallest box centred on `centre` (continuous
    input coordinates, pixel i spans [i, i+1)) holding `fraction` of the heatmap's total mass.

    The box starts as the pixel containing the centre (a centre on a pixel boundary: the two pixels
    beside it), then grows by one pixel on each side of every axis per step, clipped to the map, until
    it holds the mass. So its sides are odd for a centre in a pixel, even for one on a boundary."""
    import numpy as np

    heat = np.asarray(heatmap, dtype=np.float64)
    total = heat.sum()
    nd = heat.ndim
    starts = []
    for c in centre:
        c2 = Fraction(c).limit_denominator(1 << 20) * 2
        twice = round(c2)  # the centre rounded to the nearest half pixel, doubled
        if twice % 2:  # a pixel centre i + 1/2: that pixel
            starts.append(((twice - 1) // 2, (twice + 1) // 2))
        else:  # a boundary between pixels c-1 and c
            starts.append((twice // 2 - 1, twice // 2 + 1))
    if total <= 0:
        return [(max(lo, 0), min(hi, n)) for (lo, hi), n in zip(starts, heat.shape)]
    limit = max(heat.shape) + 2
    for k in range(limit + 1):
        box = [(max(lo - k, 0), min(hi + k, n)) for (lo, hi), n in zip(starts, heat.shape)]
        region = heat[tuple(slice(lo, hi) for lo, hi in box)] if all(hi > lo for lo, hi in box) else heat[:0]
        if region.sum() >= fraction * total * (1 - 1e-12):
            return box
    return [(0, n) for n in heat.shape[:nd]]


def region_sides(box) -> tuple[int, ...]:
    return tuple(hi - lo for lo, hi in box)


def effective_rf(model, images, analysis, layer=None, unit=None, batch_size: int = 64):
    """(heatmap, region95) for `layer` (default: the input of the first global op, the layer the RF rule
    checks) of `model` over `images` (a float tensor [N, C, *spatial], normalised as in training).

    heatmap: numpy array over the input's spatial axes, the mean |d unit / d x| (input channels summed)
    of the centre unit (or `unit`), all its channels back-propagated at once; region95: per axis, the
    side in pixels of the smallest centred box holding 95% of the heatmap's mass (`mass_region`)."""
    heat, box, _ = _erf(model, images, analysis, layer, unit, batch_size)
    return heat, region_sides(box)


def _erf(model, images, analysis, layer, unit, batch_size):
    import torch

    from convcli.visual.taps import run_rows

    row = find_row(analysis, layer) if layer is not None else default_layer(analysis)
    unit = check_unit(analysis, row, unit)
    if row.is_global:
        from convcli.errors import ConvcliError

        raise ConvcliError(f"{row.path} comes after global pooling: every unit sees the whole input; pick a "
                           "spatial layer")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    total = None
    count = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device=device, dtype=dtype).clone().requires_grad_(True)
        y = run_rows(model, analysis, x, [row])[row.path]
        target = y[(slice(None), slice(None), *unit)].sum()
        (grad,) = torch.autograd.grad(target, x)
        part = grad.detach().abs().sum(1).sum(0).double().cpu()
        total = part if total is None else total + part
        count += len(x)
    heat = (total / max(count, 1)).numpy()
    centre = [(lo + hi) / 2 for lo, hi in rf_box(analysis, row, unit)]
    return heat, mass_region(heat, centre), (row, unit)


def randomised(model, seed: int = 0):
    """A copy of `model` with fresh random weights (each module's own `reset_parameters`, BN statistics
    reset): the untrained network, for comparison. The global RNG is left as it was."""
    import torch

    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    return fresh


def plot_erf(analysis, path, model, images, *, layer=None, unit=None, compare_random: bool = True,
             random_model=None, accuracy=None, weights_label: str = "trained weights",
             images_caption: str | None = None) -> dict:
    """Heatmap(s) of the effective RF with the theoretical RF box and the 95% region over them: the given
    weights (`weights_label`), and beside them (compare_random) the same network with random weights
    (`random_model`, default `randomised(model)`). `accuracy` (a fraction or %) goes into the title.
    Returns the numbers: {"layer", "unit", "theoretical_rf", "panels": [{"title", "region95", "heatmap"}]}."""
    from matplotlib.patches import Patch, Rectangle

    if len(analysis.input_shape) != 3:
        from convcli.errors import ConvcliError

        raise ConvcliError(f"{analysis.source}: the ERF picture is drawn for 2-D inputs; effective_rf gives the "
                           "numbers for any input")
    heat, box, (row, unit) = _erf(model, images, analysis, layer, unit, 64)
    panels = [(f"{weights_label}{accuracy_text(accuracy)}", heat, box)]
    if compare_random:
        other = random_model if random_model is not None else randomised(model)
        h2, b2, _ = _erf(other, images, analysis, row, unit, 64)
        panels.append(("random weights (untrained)", h2, b2))
    _, h, w = analysis.input_shape
    rf = rf_box(analysis, row, unit)
    (y0, y1), (x0, x1) = [(float(lo), float(hi)) for lo, hi in rf]
    left, right = min(0.0, x0) - 1, max(float(w), x1) + 1
    top, bottom = min(0.0, y0) - 1, max(float(h), y1) + 1
    past = x0 < 0 or y0 < 0 or x1 > w or y1 > h

    fig = new_figure(600 * len(panels) + 120, 720)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    handles = []
    r_y, r_x = y1 - y0, x1 - x0
    for ax, (title, hm, b) in zip(axes, panels):
        handles = []
        if past:
            ax.add_patch(Rectangle((left, top), right - left, bottom - top, facecolor="0.88", edgecolor="0.65",
                                   hatch="//", lw=0, zorder=0))
            handles.append(Patch(facecolor="0.88", edgecolor="0.65", hatch="//", label="padding (outside the input)"))
        peak = hm.max() if hm.max() > 0 else 1.0
        image = ax.imshow(hm / peak, cmap="inferno", vmin=0, vmax=1, extent=(0, w, h, 0), interpolation="nearest",
                          zorder=1)
        theo = Rectangle((x0, y0), r_x, r_y, fill=False, edgecolor="#33ccff", lw=2.5, zorder=3,
                         label=f"theoretical RF ({r_y:g}x{r_x:g} px)")
        ax.add_patch(theo)
        (by0, by1), (bx0, bx1) = b
        reg = Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor="#00ff66", lw=2, ls="--", zorder=4,
                        label="smallest centred box holding 95% of the gradient mass")
        ax.add_patch(reg)
        handles += [theo, reg]
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_aspect("equal")
        ax.set_xlabel("x (input pixels)")
        ax.set_ylabel("y (input pixels)")
        ax.set_title(f"{title}\n95% of the mass in {by1 - by0}x{bx1 - bx0} px (theoretical RF {r_y:g}x{r_x:g})",
                     fontsize=10)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="mean |d unit / d pixel| (1 = the panel's maximum)")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    what = images_caption or f"{len(images)} test images"
    fig.suptitle(f"{analysis.name}: effective receptive field (Luo et al. 2016) of {describe_row(analysis, row)} "
                 f"unit {tuple(unit)}, mean |input gradient| over {what}", fontsize=11)
    save(fig, path)
    return {"layer": row.path, "unit": list(unit), "theoretical_rf": [float(a.r) for a in row.rf_out],
            "panels": [{"title": t, "region95": list(region_sides(b)), "heatmap": hm} for t, hm, b in panels]}


__all__ = ["effective_rf", "mass_region", "region_sides", "randomised", "plot_erf", "default_layer"]
