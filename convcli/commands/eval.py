"""`convcli eval SPEC --weights PATH`: accuracy, loss, per-class accuracy, confusion matrix, gallery."""

from __future__ import annotations

import json

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from convcli.train.config import OPTION  # the training options' declarations (stdlib only)

AS_TRAINED = " (default: as in training)."


def _help(name: str, default: str = AS_TRAINED) -> str:
    return OPTION[name].help.rstrip(".") + default


def evaluate(
    spec: str = typer.Argument(None, help="Spec YAML the weights were trained from (default: the spec copy "
                               "beside the weights, else the project's default spec).", show_default=False),
    weights: str = typer.Option(..., "--weights", "-w", help="Checkpoint (best.pt / last.pt) or a state_dict file.",
                                show_default=False),
    data: str = typer.Option(None, "--data", help=_help("data", " (default: the data the weights were trained on).")),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help=_help("tta")),
    device: str = typer.Option(None, "--device", help=_help("device", " (auto).")),
    amp: bool = typer.Option(None, "--amp/--no-amp", help=_help("amp")),
    test_subset: int = typer.Option(None, "--test-subset", help=_help("test_subset", " (default: as in training, "
                                                                                     "else all).")),
    out: str = typer.Option(None, "--out", help="Where to write confusion.png and misclassified.png "
                            "(default: runs/eval, runs/eval2, ...)."),
) -> None:
    """Test accuracy and loss, per-class accuracy, the confusion matrix (table and confusion.png) and a
    gallery of misclassified images (misclassified.png)."""
    from convcli.train.evaluation import evaluate as run_eval

    result = run_eval(spec, weights, data=data, device=device, tta=tta, amp=amp, test_subset=test_subset, out=out)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_report(result, Console(highlight=False, soft_wrap=True))


def print_report(r: dict, console: Console) -> None:
    console.print(f"spec: {r['spec']}\nweights: {r['weights']}\ndata: {r['data']} ({r['n']:,} test images"
                  f"{', flip TTA' if r['tta'] else ''}; device {r['device']})")
    overall = Table(title="test", title_justify="left")
    overall.add_column("accuracy", justify="right")
    overall.add_column("loss", justify="right")
    overall.add_column("images", justify="right")
    overall.add_row(f"{100 * r['accuracy']:.2f}%", f"{r['loss']:.4f}", f"{r['n']:,}")
    console.print(overall)

    classes, confusion = r["classes"], r["confusion"]
    per_class = Table(title="per class", title_justify="left")
    for name, justify in (("class", "left"), ("accuracy", "right"), ("correct", "right"), ("images", "right"),
                          ("most confused with", "left")):
        per_class.add_column(name, justify=justify)
    for i, c in enumerate(classes):
        row = confusion[i]
        others = [(n, j) for j, n in enumerate(row) if j != i and n]
        worst = max(others, default=None)
        per_class.add_row(c, f"{100 * r['per_class'][c]:.2f}%", f"{row[i]:,}", f"{sum(row):,}",
                          f"{classes[worst[1]]} ({worst[0]})" if worst else "-")
    console.print(per_class)

    matrix = Table(title="confusion matrix (rows: true class, columns: predicted class number)",
                   title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    matrix.add_column("true class", no_wrap=True)
    for j in range(len(classes)):
        matrix.add_column(str(j), justify="right", no_wrap=True)
    for i, (c, row) in enumerate(zip(classes, confusion)):
        matrix.add_row(f"{i} {c}", *(f"[bold]{n}[/]" if j == i else str(n) for j, n in enumerate(row)))
    console.print(matrix)
    console.print(f"wrote {r['out']}/confusion.png and {r['out']}/misclassified.png")
