"""`convcli train SPEC`: train a spec on CIFAR-10 or an image folder (torch loads inside the command)."""

from __future__ import annotations

import typer

DATA_HELP = "cifar10, an ImageFolder directory with train/ and test/, or a .tar.gz of one."
OPTIONS = "Training options"


def train(
    spec: str = typer.Argument(None, help="Spec YAML. Default: \\[tool.convcli] default_spec in ./pyproject.toml, "
                               "default_spec in ./convcli.yaml, else architectures/s7.yaml.", show_default=False),
    data: str = typer.Option(None, "--data", help=DATA_HELP, rich_help_panel=OPTIONS),
    epochs: int = typer.Option(None, "--epochs", help="Epochs in all (on --resume: more extends the run).",
                               rich_help_panel=OPTIONS),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Training batch size.", rich_help_panel=OPTIONS),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (sgd 0.1, adam/adamw 1e-3).",
                             rich_help_panel=OPTIONS),
    optimizer: str = typer.Option(None, "--optimizer", help="sgd (Nesterov, momentum 0.9) | adam | adamw.",
                                  rich_help_panel=OPTIONS),
    schedule: str = typer.Option(None, "--schedule", help="onecycle | cosine | step.", rich_help_panel=OPTIONS),
    weight_decay: float = typer.Option(None, "--weight-decay", help="Weight decay (sgd 5e-4, adam 0, adamw 0.05).",
                                       rich_help_panel=OPTIONS),
    label_smoothing: float = typer.Option(None, "--label-smoothing", help="Label smoothing (0.2).",
                                          rich_help_panel=OPTIONS),
    device: str = typer.Option(None, "--device", help="auto | cuda | cuda:N | cpu | mps (auto).",
                               rich_help_panel=OPTIONS),
    seed: int = typer.Option(None, "--seed", help="Seed for weights, subset, shuffling, augmentation (0).",
                             rich_help_panel=OPTIONS),
    amp: bool = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on CUDA and on CPUs with native bf16 "
                             "(AVX512-BF16, AMX) (on).", rich_help_panel=OPTIONS),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last",
                                       help="NHWC memory format on CUDA and CPU (on).", rich_help_panel=OPTIONS),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model (off).",
                                 rich_help_panel=OPTIONS),
    target_acc: float = typer.Option(None, "--target-acc", help="Stop once test accuracy reaches this (0.93 or 93).",
                                     rich_help_panel=OPTIONS),
    subset: int = typer.Option(None, "--subset", help="Train on N images (class-balanced, chosen by the seed).",
                               rich_help_panel=OPTIONS),
    test_subset: int = typer.Option(None, "--test-subset", help="Test on N images (class-balanced, fixed).",
                                    rich_help_panel=OPTIONS),
    translate: int = typer.Option(None, "--translate", help="Random translation in pixels (2; 0: off).",
                                  rich_help_panel=OPTIONS),
    flip: bool = typer.Option(None, "--flip/--no-flip", help="Horizontal flip (on).", rich_help_panel=OPTIONS),
    alt_flip: bool = typer.Option(None, "--alt-flip/--no-alt-flip", help="Alternating flip: each image mirrored "
                                  "in every other epoch instead of at random (on).", rich_help_panel=OPTIONS),
    cutout: int = typer.Option(None, "--cutout", help="Cutout square side in pixels (0: off).",
                               rich_help_panel=OPTIONS),
    precise_bn: int = typer.Option(None, "--precise-bn", help="Recompute BN statistics on N training images "
                                   "before each evaluation (4096; 0: off, keep the moving averages).",
                                   rich_help_panel=OPTIONS),
    lookahead: bool = typer.Option(None, "--lookahead/--no-lookahead", help="Lookahead: every 5 steps pull the "
                                   "weights towards their moving average (on).", rich_help_panel=OPTIONS),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Test accuracy with flip test-time augmentation (on).",
                             rich_help_panel=OPTIONS),
    recipe: str = typer.Option(None, "--recipe", help="YAML file of training options (overrides the spec's)."),
    out: str = typer.Option(None, "--out", help="Run directory (default: runs/train, runs/train2, ...)."),
    resume: str = typer.Option(None, "--resume", help="Continue the run in this directory."),
    stop_after: int = typer.Option(None, "--stop-after", hidden=True, help="Stop after this epoch (testing)."),
) -> None:
    """Train SPEC and write runs/NAME: spec copy, args.yaml, metrics.csv, best.pt, last.pt, curves.png,
    summary.json.

    Each training option comes from the command line, else --recipe, else the spec's train: section,
    else the built-in default.
    """
    from convcli.train.trainer import train as run_train

    options = {"data": data, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
               "schedule": schedule, "weight_decay": weight_decay, "label_smoothing": label_smoothing,
               "device": device, "seed": seed, "amp": amp, "compile": compile, "target_acc": target_acc,
               "subset": subset, "test_subset": test_subset, "translate": translate, "flip": flip, "cutout": cutout,
               "precise_bn": precise_bn, "channels_last": channels_last, "alt_flip": alt_flip,
               "lookahead": lookahead, "tta": tta}
    run_train(spec, options, recipe=recipe, out=out, resume=resume, stop_after=stop_after)
