"""`convcli train SPEC`: train a spec on CIFAR-10 or an image folder (torch loads inside the command).

The training options are not written here: each is declared once in `convcli.train.config.OPTIONS`, and
this module turns the declarations into Typer options (`_with_declared_options`)."""

from __future__ import annotations

import inspect

import typer

from convcli.train.config import OPTIONS, typer_parameters


def train(
    spec: str = typer.Argument(None, help="Spec YAML, or a PyTorch model FILE.py:NAME / package.module:NAME "
                               "(with --input). Default: \\[tool.convcli] default_spec in ./pyproject.toml, "
                               "default_spec in ./convcli.yaml, else architectures/s7.yaml.", metavar="SPEC",
                               show_default=False),
    input_shape: str = typer.Option(None, "--input", "-i", help="Input shape C,H,W for a PyTorch model.",
                                    show_default=False),
    recipe: str = typer.Option(None, "--recipe", help="YAML file of training options (overrides the spec's)."),
    out: str = typer.Option(None, "--out", help="Run directory (default: runs/train, runs/train2, ...)."),
    resume: str = typer.Option(None, "--resume", help="Continue the run in this directory."),
    stop_after: int = typer.Option(None, "--stop-after", hidden=True, help="Stop after this epoch (testing)."),
    **options,
) -> None:
    """Train SPEC on CIFAR-10 (or an image folder) and write the run directory runs/NAME.

    runs/NAME holds the spec's copy, args.yaml, metrics.csv, best.pt, last.pt, curves.png and summary.json.

    Each option comes from the command line, else --recipe, else the spec's train: section, else the default.
    """
    from convcli.train.trainer import train as run_train

    run_train(spec, {o.name: options.get(o.name) for o in OPTIONS}, recipe=recipe, out=out, resume=resume,
              stop_after=stop_after, input_text=input_shape)


def _with_declared_options(func):
    """Replace `**options` in func's signature by one keyword parameter per declared option, so Typer builds
    an option for each and passes them back as keyword arguments."""
    sig = inspect.signature(func)
    fixed = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    declared = typer_parameters()
    func.__signature__ = sig.replace(parameters=fixed + declared)
    func.__annotations__ = {**{p.name: str | None if p.name in ("spec", "recipe", "out", "resume", "input_shape")
                               else int | None
                               for p in fixed}, **{p.name: p.annotation for p in declared}}
    return func


train = _with_declared_options(train)
