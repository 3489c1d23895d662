"""The `convcli` app: registers one module per command and owns the error boundary.

Command modules import only typer/rich/stdlib at the top; torch loads inside the commands that
need it, so `convcli --help` and shell completion stay fast.
"""

from __future__ import annotations

import os
import sys

import typer

from convcli.commands import eval as eval_cmd
from convcli.commands import export as export_cmd
from convcli.commands import import_model, inspect, layers, params, rf, train
from convcli.errors import ConvcliError, report

app = typer.Typer(
    name="convcli",
    help="Design, analyse and train convolutional networks written as YAML specs or PyTorch modules.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

ANALYSE, TRAIN = "Analyse", "Train"
app.command("inspect", rich_help_panel=ANALYSE)(inspect.inspect)
app.command("rf", rich_help_panel=ANALYSE)(rf.rf)
app.command("params", rich_help_panel=ANALYSE)(params.params)
app.command("layers", rich_help_panel=ANALYSE)(layers.layers)
app.command("export", rich_help_panel=ANALYSE)(export_cmd.export)
app.command("import", rich_help_panel=ANALYSE)(import_model.import_model)
app.command("train", rich_help_panel=TRAIN)(train.train)
app.command("eval", rich_help_panel=TRAIN)(eval_cmd.evaluate)


def _version(value: bool) -> None:
    if value:
        from convcli import __version__

        typer.echo(f"convcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", help="Print the version and exit.",
                                       callback=_version, is_eager=True)) -> None:
    """Design, analyse and train convolutional networks written as YAML specs or PyTorch modules."""


def _to_ascii(exc: UnicodeError):
    """A codec error handler: what a stream cannot encode, written in ASCII (render.ASCII) or as '?'."""
    from convcli.render import ASCII

    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start:exc.end]
    return "".join(ASCII.get(ch, "?") for ch in bad), exc.end


def ascii_fallback() -> None:
    """A stream that cannot encode the output (a cp1252 or ASCII file, a Windows console) gets the same text
    in ASCII instead of a crash, whose exit 1 would read as "a rule failed"."""
    import codecs

    codecs.register_error("convcli_ascii", _to_ascii)
    for stream in (sys.stdout, sys.stderr):
        try:
            "→×─".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            try:
                stream.reconfigure(errors="convcli_ascii")
            except (AttributeError, ValueError):  # not a TextIOWrapper (a test's capture): leave it
                pass


def main() -> None:
    """Entry point: user errors print one message to stderr and exit 2 (CONVCLI_DEBUG=1 re-raises).
    Typer itself reports usage errors (exit 2) and handles --help."""
    import warnings

    # torch's note that padding='same' with an even kernel pads a copy: the analysis already says how it pads
    warnings.filterwarnings("ignore", message=r"Using padding='same' with even kernel")
    for name in ("stdout", "stderr"):  # closed by the shell (`>&-`): write nowhere rather than crash
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - for the process's life
    ascii_fallback()
    try:
        app()
    except ConvcliError as exc:
        if os.environ.get("CONVCLI_DEBUG"):
            raise
        report(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
