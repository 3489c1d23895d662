"""Figures written next to the metrics: curves.png, confusion.png, misclassified.png (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[dict], path: Path, title: str | None = None) -> None:
    """Loss and accuracy per epoch, train and test, from metrics.csv rows. `title`: the spec's name and best
    accuracy. With a few epochs (a quick try), the points carry their values and the axis is padded, so
    one or two points are still a readable picture."""
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in rows]
    col = {k: [float(r[k]) for r in rows] for k in ("train_loss", "test_loss", "train_acc", "test_acc")}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, col["train_loss"], "o-", label="train")
    ax_loss.plot(epochs, col["test_loss"], "o-", label="test")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.plot(epochs, [100 * a for a in col["train_acc"]], "o-", label="train")
    ax_acc.plot(epochs, [100 * a for a in col["test_acc"]], "o-", label="test")
    ax_acc.set(title="accuracy (%)", xlabel="epoch")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) <= 3:
            ax.set_xlim(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5)
            ax.set_xticks(epochs)
            ax.margins(y=0.25)
            lines = ax.get_lines()
            for i, line in enumerate(lines):
                for x, y in zip(line.get_xdata(), line.get_ydata()):
                    # at each epoch the higher value is labelled above its point, the lower below: close
                    # train and test values do not print over each other
                    others = [o.get_ydata()[list(o.get_xdata()).index(x)] for o in lines if o is not line]
                    below = any(y < v or (y == v and i > 0) for v in others)
                    ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, -8 if below else 6),
                                ha="center", va="top" if below else "bottom", fontsize=8, color=line.get_color())
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.set_ylabel("%")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str | None = None) -> None:
    """Rows are true classes, columns predictions; cells show counts, coloured by the row's share."""
    plt = _pyplot()
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    k = len(classes)
    size = max(5, 0.6 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_misclassified(images, true: list[int], pred: list[int], classes: list[str], path: Path,
                       cols: int = 8, title: str | None = None) -> None:
    """A gallery of uint8 [N, C, H, W] images titled "true → predicted"."""
    plt = _pyplot()
    n = len(true)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None)
        ax.set_title(f"{classes[true[i]]}\n→ {classes[pred[i]]}", fontsize=8)
    if n == 0:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(f"{title + ': ' if title else ''}misclassified, most confident first: true → predicted",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
