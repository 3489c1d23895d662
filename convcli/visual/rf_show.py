"""`convcli rf SPEC --show IMAGE --layer NAME [--unit Y,X]`: an input image with the receptive-field box
of one unit of one layer drawn on it.

The box is `rf_box` (not clipped). When it reaches past the border, the canvas is extended to show
all of it and the part outside the image is shaded: those positions are padding. The centres of
every unit of that layer (start + u*j, one per jump) are dotted, so the grid the layer samples is
visible too.
"""

from __future__ import annotations

from convcli.visual._figure import describe_row, new_figure, save
from convcli.visual.rf_box import check_unit, clipped_size, find_row, rf_box


def show_rf(analysis, image, layer, unit=None, path="rf_box.png", data: str | None = None,
            title: str | None = None) -> list:
    """Draw `image` (a file, `cifar10:INDEX`, or a uint8 tensor [C, H, W]) as the model sees it (resized
    to its input), with the RF box of `unit` (Y, X; default the centre unit) of `layer` (a path or a
    label). `data`: the dataset `cifar10:INDEX` reads (default `cifar10`). Returns the box, per axis
    (lo, hi) in input pixels."""
    from matplotlib.patches import Patch, Rectangle

    from convcli.errors import ConvcliError
    from convcli.visual.images import fit_image, load_image

    row = find_row(analysis, layer)
    if len(analysis.input_shape) != 3:
        raise ConvcliError(f"{analysis.source}: --show draws 2-D images; this model's input is "
                           f"{list(analysis.input_shape)}")
    unit = check_unit(analysis, row, unit)
    box = rf_box(analysis, row, unit)
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        pixels, caption = load_image(image, data)
    else:
        pixels, caption = image, "image"
    pixels = fit_image(pixels, analysis.input_shape)
    _, h, w = analysis.input_shape
    (y0, y1), (x0, x1) = [(float(lo), float(hi)) for lo, hi in box]
    past = x0 < 0 or y0 < 0 or x1 > w or y1 > h
    left, right = min(0.0, x0) - 1, max(float(w), x1) + 1
    top, bottom = min(0.0, y0) - 1, max(float(h), y1) + 1

    fig = new_figure(720, 760)
    ax = fig.add_subplot()
    handles = []
    if past:
        ax.add_patch(Rectangle((left, top), right - left, bottom - top, facecolor="0.85", edgecolor="0.6",
                               hatch="//", lw=0, zorder=0))
        handles.append(Patch(facecolor="0.85", edgecolor="0.6", hatch="//", label="padding (outside the input)"))
    img = pixels.permute(1, 2, 0).numpy()
    ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None,
              extent=(0, w, h, 0), interpolation="nearest", zorder=1)
    ax.add_patch(Rectangle((0, 0), w, h, fill=False, edgecolor="black", lw=1, zorder=2))

    # The layer's unit centres (every jump), when not too many.
    axes = row.rf_out
    n_y, n_x = axes[0].n, axes[1].n
    if n_y * n_x <= 4096 and not row.is_global:
        ys = [float(axes[0].start + i * axes[0].j) for i in range(n_y)]
        xs = [float(axes[1].start + i * axes[1].j) for i in range(n_x)]
        grid_x = [x for _ in ys for x in xs]
        grid_y = [y for y in ys for _ in xs]
        handles.append(ax.scatter(grid_x, grid_y, s=6, c="white", edgecolors="black", linewidths=0.4, zorder=3,
                                  label=f"centres of this layer's units (every {_fmt(axes[1].j)} px)"))
    r_y, r_x = y1 - y0, x1 - x0
    inside = clipped_size(box, analysis.input_shape)
    rect = Rectangle((x0, y0), r_x, r_y, fill=False, edgecolor="#ffdd00", lw=3, zorder=4,
                     label=f"RF of unit {tuple(unit)}: {_fmt(r_y)}x{_fmt(r_x)} px"
                           + (f" ({inside[0]}x{inside[1]} inside the image)" if past else ""))
    ax.add_patch(Rectangle((x0, y0), r_x, r_y, fill=False, edgecolor="black", lw=5, zorder=3.5))
    ax.add_patch(rect)
    handles.append(rect)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    handles.append(ax.scatter([cx], [cy], marker="+", s=160, c="red", linewidths=2.5, zorder=5,
                              label=f"its centre (y, x) = ({_fmt(cy)}, {_fmt(cx)}) = start + unit·jump"))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.set_xlabel("x (input pixels)")
    ax.set_ylabel("y (input pixels)")
    name = describe_row(analysis, row)
    ax.set_title(title or f"{analysis.name}: receptive field of one unit of {name}\n"
                 f"{caption}, input {w}x{h} px; layer output {n_y}x{n_x}, jump {_fmt(axes[0].j)} px", fontsize=11)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.09), fontsize=9, ncol=1,
              framealpha=0.95)
    save(fig, path)
    return box


def _fmt(v) -> str:
    v = float(v)
    return f"{v:g}"


__all__ = ["show_rf"]
