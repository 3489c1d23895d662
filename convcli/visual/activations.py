"""`convcli eval SPEC --weights W --activations IMAGE --out DIR`: what each conv block computes for one
image: one PNG per block (each top-level block or labelled group with a spatial output: C1, C2, ...,
or layer1, layer2 of a PyTorch model), a grid of its channels' feature maps beside the input.

Each channel is min-max normalised on its own (viridis: its lowest value dark, its highest yellow),
so weak and strong channels are equally visible; a constant channel is drawn flat.
"""

from __future__ import annotations

import math
from pathlib import Path

from convcli.errors import ConvcliError
from convcli.visual._figure import accuracy_text, describe_row, new_figure, safe_filename, save


def activation_blocks(analysis) -> list:
    """The rows whose outputs get a picture: top-level or labelled blocks with a spatial output; a model
    without blocks: its conv layers."""
    nd = len(analysis.input_shape)

    def spatial(r):
        return len(r.out_shape) == nd and not r.is_global

    blocks = [r for r in analysis.rows if r.kind == "block" and (r.depth == 0 or r.label) and spatial(r)]
    if not blocks:
        blocks = [r for r in analysis.layers if r.facts is not None and r.facts.is_conv and spatial(r)]
    return blocks


def save_activations(model, analysis, image, out_dir, *, data: str | None = None, mean=None, std=None,
                     max_channels: int = 64, accuracy=None) -> list[Path]:
    """Write one PNG per block (`activation_blocks`) into `out_dir`: the feature maps of `image` (a file,
    `cifar10:INDEX` of `data`, or a uint8 tensor [C, H, W]), normalised with `mean`/`std` (a checkpoint's,
    on the 0-1 scale; default: the image's own statistics). Up to `max_channels` channels per block.
    Returns the files written, in block order (`01_C1.png`, `02_C2.png`, ...)."""
    import torch

    from convcli.visual.images import fit_image, load_image, normalise
    from convcli.visual.taps import run_rows

    if len(analysis.input_shape) != 3:
        raise ConvcliError(f"{analysis.source}: feature-map pictures are drawn for 2-D inputs")
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        pixels, caption = load_image(image, data)
    else:
        pixels, caption = image, "the image"
    pixels = fit_image(pixels, analysis.input_shape)
    blocks = activation_blocks(analysis)
    if not blocks:
        raise ConvcliError(f"{analysis.source}: no block or conv layer with a spatial output to draw")
    param = next(iter(model.parameters()), None)
    x = normalise(pixels[None], mean, std)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype if param.is_floating_point() else torch.float32)
    with torch.no_grad():
        outputs = run_rows(model, analysis, x, blocks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, row in enumerate(blocks, 1):
        maps = outputs[row.path][0].detach().float().cpu()
        name = row.label or row.path
        path = out_dir / f"{i:02d}_{safe_filename(name)}.png"
        _plot_block(analysis, row, maps, pixels, caption, path, max_channels, accuracy)
        written.append(path)
    return written


def _plot_block(analysis, row, maps, pixels, caption, path, max_channels, accuracy):
    c, h, w = maps.shape
    k = min(c, max_channels)
    cols = 8 if k + 1 <= 32 else 12 if k + 1 <= 72 else 16
    rows = math.ceil((k + 1) / cols)
    tile = 100 if cols <= 8 else 80
    fig = new_figure(cols * tile + 140, rows * (tile + 14) + 150)
    grid = fig.subplots(rows, cols, squeeze=False)
    flat = maps[:k].reshape(k, -1)
    lo, hi = flat.min(1).values.view(k, 1, 1), flat.max(1).values.view(k, 1, 1)
    norm = ((maps[:k] - lo) / (hi - lo).clamp_min(1e-12)).numpy()
    shown = None
    for i, ax in enumerate(grid.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            img = pixels.permute(1, 2, 0).numpy()
            ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None,
                      interpolation="nearest")
            ax.set_title("input", fontsize=8, pad=2, fontweight="bold")
            continue
        if i > k:
            ax.axis("off")
            continue
        shown = ax.imshow(norm[i - 1], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"ch {i - 1}", fontsize=7, pad=2)
    fig.colorbar(shown, ax=list(grid.flat), shrink=0.6, fraction=0.03,
                 label="activation (each channel's min → max)")
    fig.suptitle(f"{analysis.name}: feature maps of {describe_row(analysis, row)}, output {c}x{h}x{w}"
                 f"{accuracy_text(accuracy)}\nfor {caption}; "
                 + (f"first {k} of {c} channels" if k < c else f"all {c} channels"), fontsize=10)
    fig.supxlabel(f"x (feature-map columns, {w} per tile)", fontsize=9)
    fig.supylabel(f"y ({h} rows per tile)", fontsize=9)
    save(fig, path)


__all__ = ["activation_blocks", "save_activations"]
