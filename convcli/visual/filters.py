"""`convcli eval SPEC --weights W --filters filters.png`: the first convolution's filters as small images
(the classic AlexNet picture, Krizhevsky et al. 2012, figure 3).

Each filter is min-max normalised on its own (so its pattern shows whatever its scale) and drawn in
colour when it reads 3 channels (RGB), in grey otherwise (the mean over its input channels; exact for
1-channel inputs).
"""

from __future__ import annotations

import math

from convcli.errors import ConvcliError
from convcli.visual._figure import accuracy_text, describe_row, new_figure, save


def first_conv(model, analysis=None):
    """(the first 2-D convolution module, its row or None): the first conv row of the analysis (table
    order) when given, else the first nn.Conv2d the model registers."""
    import torch.nn as nn

    if analysis is not None:
        from convcli.visual.taps import is_traced

        for row in analysis.layers:
            if row.facts is None or not row.facts.is_conv or len(row.facts.kernel) != 2:
                continue
            if hasattr(model, "paths"):
                module = model.paths.get(row.path)
            elif row.module is not None:
                module = model.get_submodule(row.module)
            else:
                continue
            conv = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))), None)
            if conv is None and hasattr(module, "target"):  # a reused layer
                conv = next((m for m in module.target.modules() if isinstance(m, nn.Conv2d)), None)
            if conv is not None:
                return conv, row
        if is_traced(analysis) or hasattr(model, "paths"):
            raise ConvcliError(f"{analysis.source}: no 2-D convolution to draw")
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConvcliError("the model has no 2-D convolution to draw")
    return conv, None


def filter_images(weight):
    """[out, in, kh, kw] weights -> numpy [out, kh, kw, 3] (RGB, in == 3) or [out, kh, kw] (grey), each
    filter min-max normalised to 0..1 on its own (a constant filter is 0.5)."""
    w = weight.detach().float().cpu()
    if w.shape[1] == 3:
        imgs = w.permute(0, 2, 3, 1)
    else:
        imgs = w.mean(1)
    flat = imgs.reshape(len(imgs), -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp_min(1e-12)
    shape = (-1,) + (1,) * (imgs.dim() - 1)
    out = (imgs - lo.view(shape)) / span.view(shape)
    out[(hi - lo) <= 1e-12] = 0.5
    return out.numpy()


def plot_filters(model, path, analysis=None, *, accuracy=None, max_filters: int = 256, title: str | None = None):
    """Draw the first convolution's filters to `path` (PNG) in a grid (up to `max_filters`). Returns the
    weight's shape [out, in, kh, kw]."""
    conv, row = first_conv(model, analysis)
    weight = conv.weight
    if conv.__class__.__name__.startswith("ConvTranspose"):
        weight = weight.transpose(0, 1)
    out_ch, in_ch, kh, kw = weight.shape
    imgs = filter_images(weight)[:max_filters]
    n = len(imgs)
    cols = min(16, max(4, math.ceil(math.sqrt(n * 2))))
    rows = math.ceil(n / cols)
    tile = 58 if max(kh, kw) <= 7 else 70
    width = max(640, cols * tile + 80)
    height = rows * (tile + 14) + 150
    fig = new_figure(width, height)
    grid = fig.subplots(rows, cols, squeeze=False)
    colour = in_ch == 3
    for i, ax in enumerate(grid.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(imgs[i], cmap=None if colour else "gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(str(i), fontsize=7, pad=2)
        for side in ax.spines.values():
            side.set_color("0.7")
    name = analysis.name if analysis is not None else type(model).__name__
    where = describe_row(analysis, row) if row is not None else "the first Conv2d"
    mode = "RGB" if colour else (f"grey: mean over {in_ch} input channels" if in_ch > 1 else "grey")
    fig.suptitle(title or f"{name}: first-layer filters ({where}{accuracy_text(accuracy)})\n"
                 f"{out_ch} filters of {kh}x{kw} px on {in_ch} channel(s), {mode}, each min-max normalised"
                 + (f"; first {n} shown" if n < out_ch else ""), fontsize=10)
    fig.supxlabel(f"kernel x (0 to {kw - 1}); tile = filter number", fontsize=9)
    fig.supylabel(f"kernel y (0 to {kh - 1})", fontsize=9)
    save(fig, path)
    return [out_ch, in_ch, kh, kw]


__all__ = ["first_conv", "filter_images", "plot_filters"]
