"""`convcli eval SPEC --weights PATH`: accuracy, loss, per-class accuracy, confusion matrix, gallery."""

from __future__ import annotations

import typer

from convcli.commands.common import FORMAT_OPT, Format
from convcli.train.config import OPTION  # the training options' declarations (stdlib only)

AS_TRAINED = " (default: as in training)."


def _help(name: str, default: str = AS_TRAINED) -> str:
    return OPTION[name].help.rstrip(".") + default


PICTURES = "Pictures"


def evaluate(
    spec: str = typer.Argument(None, help="Spec YAML or PyTorch model (FILE.py:NAME) the weights were trained "
                               "from (default: the one recorded beside the weights, else the project's default "
                               "spec).", metavar="SPEC", show_default=False),
    weights: str = typer.Option(..., "--weights", "-w", help="Checkpoint (best.pt / last.pt) or a state_dict file.",
                                show_default=False),
    data: str = typer.Option(None, "--data", help="cifar10, an ImageFolder directory with train/ and test/, or a "
                             ".tar.gz of one (default: the data the weights were trained on)."),
    input_shape: str = typer.Option(None, "--input", "-i", help="Input shape C,H,W for a PyTorch model (default: "
                                    "as in training).", show_default=False),
    fmt: Format = FORMAT_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help=_help("tta")),
    tta_translate: int = typer.Option(None, "--tta-translate", help=_help("tta_translate"), show_default=False),
    device: str = typer.Option(None, "--device", help=_help("device", " (auto).")),
    amp: bool = typer.Option(None, "--amp/--no-amp", help=_help("amp")),
    test_subset: int = typer.Option(None, "--test-subset", help=_help("test_subset", " (default: as in training, "
                                                                                     "else all).")),
    out: str = typer.Option(None, "--out", help="Where to write confusion.png, misclassified.png and the feature "
                            "maps (default: runs/eval, runs/eval2, ...)."),
    erf: str = typer.Option(None, "--erf", help="Draw the effective receptive field (Luo et al. 2016) of the centre "
                            "unit, trained beside random weights, into this PNG.", rich_help_panel=PICTURES),
    layer: str = typer.Option(None, "--layer", help="The layer --erf looks at (default: the last before GAP).",
                              rich_help_panel=PICTURES),
    filters: str = typer.Option(None, "--filters", help="Draw the first-layer filters into this PNG.",
                                rich_help_panel=PICTURES),
    activations: str = typer.Option(None, "--activations", help="Save each block's feature maps for this image "
                                    "(a file or cifar10:INDEX) under OUT/activations/.", rich_help_panel=PICTURES),
) -> None:
    """Evaluate trained weights: test accuracy and loss, per class, and the confusion matrix.

    Writes confusion.png and misclassified.png; with --erf/--filters/--activations, what the network sees."""
    from convcli.commands.common import output_format
    from convcli.render import emit
    from convcli.train.evaluation import evaluate as run_eval
    from convcli.train.runs import strict_json

    result = run_eval(spec, weights, data=data, device=device, tta=tta, tta_translate=tta_translate, amp=amp,
                      test_subset=test_subset, out=out,
                      input_text=input_shape, erf=erf, filters=filters, activations=activations, layer=layer)
    output = report_output(result)
    output.data = strict_json(output.data)  # --json is strict JSON: a NaN loss (foreign weights) is null
    emit(output, output_format(fmt, as_json))


def report_output(r: dict):
    """The eval report as the one renderer's neutral objects (terminal, plain, csv, markdown, json)."""
    from convcli.render import Cell, Column, Lines, Output, TableData

    tta = (", flip + translate TTA" if r.get("tta_translate") else ", flip TTA") if r["tta"] else ""
    partial = r.get("partial")
    saved = (f" (saved in the middle of epoch {partial['epoch']}, after step {partial['step']}: a checkpoint to "
             "resume from, its weights not those of a finished epoch)") if partial else ""
    head = Lines([f"spec: {r['spec']}", f"weights: {r['weights']}{saved}",
                  f"data: {r['data']} ({r['n']:,} test images{tta}; device {r['device']})"])
    overall = TableData("test", [Column("accuracy", "accuracy"), Column("loss", "loss"), Column("images", "images")])
    overall.add({"accuracy": Cell(f"{100 * r['accuracy']:.2f}%", r["accuracy"]),
                 "loss": Cell(f"{r['loss']:.4f}", r["loss"]), "images": r["n"]})
    classes, confusion = r["classes"], r["confusion"]
    per_class = TableData("per class", [Column("class", "class", numeric=False), Column("accuracy", "accuracy"),
                                        Column("correct", "correct"), Column("images", "images"),
                                        Column("confused", "most confused with", numeric=False)])
    for i, c in enumerate(classes):
        row = confusion[i]
        worst = max(((n, j) for j, n in enumerate(row) if j != i and n), default=None)
        acc = r["per_class"][c]
        per_class.add({"class": c, "accuracy": Cell(f"{100 * acc:.2f}%", acc) if acc is not None else None,
                       "correct": row[i], "images": sum(row),
                       "confused": f"{classes[worst[1]]} ({worst[0]})" if worst else None})
    matrix = TableData("confusion matrix (rows: true class, columns: predicted class number)",
                       [Column("true", "true class", numeric=False)] + [Column(str(j), str(j))
                                                                         for j in range(len(classes))])
    for i, (c, row) in enumerate(zip(classes, confusion)):
        matrix.add({"true": f"{i} {c}", **{str(j): Cell(str(n), n, style="bold") if j == i else n
                                          for j, n in enumerate(row)}})
    wrote = [f"wrote {r['out']}/confusion.png and {r['out']}/misclassified.png"]
    if "erf" in r:
        e = r["erf"]
        sides = "; ".join(f"{t or 'panel'}: {'x'.join(map(str, s))} px" for t, s in zip(e["panels"], e["region95"]))
        wrote.append(f"wrote {e['file']}: theoretical RF {'x'.join(f'{x:g}' for x in e['theoretical_rf'])} px; "
                     f"95% of the gradient mass within {sides}")
    if "filters" in r:
        wrote.append(f"wrote {r['filters']}")
    if "activations" in r:
        wrote.append(f"wrote {len(r['activations'])} feature-map pictures under {r['out']}/activations/")
    # CSV: one row per class, then the whole test set (its loss too; the per-class rows have none)
    records = TableData("per class", per_class.columns[:4] + [Column("loss", "loss")] + per_class.columns[4:])
    for row in per_class.rows:
        records.add({**row, "loss": None})
    correct = sum(confusion[i][i] for i in range(len(classes)))
    records.add({"class": "all", "accuracy": r["accuracy"], "correct": correct, "images": r["n"], "loss": r["loss"],
                 "confused": None})
    return Output([head, overall, per_class, matrix, Lines(wrote)], data=r, records=records)
