"""Helpers shared by the analysis commands: spec arguments, output format, torch-side totals."""

from __future__ import annotations

import glob
from enum import Enum
from pathlib import Path

import typer

from convcli.errors import ConvcliError


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


SPECS_ARG = typer.Argument(..., help="Spec files, directories of specs, globs (quoted), or PyTorch models as "
                           "FILE.py:NAME or package.module:NAME (with --input).", metavar="SPECS", show_default=False)
INPUT_OPT = typer.Option(None, "--input", "-i", help="Input shape C,H,W (or C,L / C,D,H,W) for a PyTorch model; "
                         "overrides a spec's `input:`.", show_default=False)
FORMAT_OPT = typer.Option(Format.table, "--format", "-f", help="Output format.", case_sensitive=False)
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document (a list for several specs).")


def expand_specs(args: list[str]) -> list[Path]:
    """Files as given; quoted globs expanded; a directory → its *.yaml/*.yml, or, when it has none, those
    one folder down (one folder per student: subs/alice/s7.yaml). Hidden folders and training runs (a
    folder with args.yaml holds a copy of its spec) are skipped."""
    from convcli.sources import is_model

    out: list[Path] = []
    for arg in args:
        p = Path(arg)
        file, _, name = arg.rpartition(":")
        if file and name and any(ch in file for ch in "*?[") and not p.exists():  # 'subs/*/net.py:Net'
            found = sorted(glob.glob(file, recursive=True))
            if not found:
                raise ConvcliError(f"{file}: no file matches this pattern")
            out += [f"{m}:{name}" for m in found]
        elif is_model(arg):
            out.append(arg)
        elif p.is_dir():
            found = _yaml_in(p)
            folders = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".")
                       and not (d / "args.yaml").exists()]
            below = [f for d in folders for f in _yaml_in(d) if _has_layers(f)]
            models = _py_in(p) + [f for d in folders for f in _py_in(d)]
            skipped = _models_note(p, models) if models else ""
            if not found and not below:
                raise ConvcliError(f"{arg}: no *.yaml specs in this directory or the folders in it"
                                   + (f"; {skipped}" if models else ""))
            if found and below:
                _note(f"note: {arg}: {len(below)} more spec(s) in its subfolders are not included; "
                      f"to grade them too, pass '{p / '*' / '*.yaml'}' as well (quoted)")
            if models:
                _note(f"note: {arg}: not included: {skipped}")
            out += found or below
        elif any(ch in arg for ch in "*?[") and not p.exists():
            found = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            if not found:
                raise ConvcliError(f"{arg}: no file matches this pattern")
            out += found
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def _yaml_in(folder: Path) -> list[Path]:
    return sorted(f for f in [*folder.glob("*.yaml"), *folder.glob("*.yml")] if f.is_file())


def _models_note(folder: Path, models: list[Path]) -> str:
    """A PyTorch file needs its class and an input shape, so a directory's are named, not silently left out."""
    top = [m for m in models if m.parent == folder]
    below = [m for m in models if m.parent != folder]
    patterns = []
    if top:
        patterns.append(top[0] if len(top) == 1 else folder / "*.py")
    if below:
        names = {m.name for m in below}
        patterns.append(below[0] if len(below) == 1 else folder / "*" / (names.pop() if len(names) == 1 else "*.py"))
    shown = ", ".join(str(m) for m in models[:3]) + (", ..." if len(models) > 3 else "")
    files = "1 PyTorch file" if len(models) == 1 else f"{len(models)} PyTorch files"
    return (f"{files} ({shown}) {'needs its' if len(models) == 1 else 'need their'} class and an input shape: "
            f"pass {' and '.join(repr(f'{x}:NAME') for x in patterns)} --input C,H,W")


def _py_in(folder: Path) -> list[Path]:
    """Model files a student may have handed in; not package plumbing or tests."""
    return sorted(f for f in folder.glob("*.py") if f.is_file() and not f.name.startswith((".", "_", "test_"))
                  and f.name not in ("setup.py", "conftest.py"))


def _has_layers(f: Path) -> bool:
    """A spec, not a rules or recipe file beside it (architectures/rules/s7.yaml): a top-level `layers:`."""
    try:
        with open(f, encoding="utf-8", errors="replace") as fh:
            return any(line.startswith("layers:") for line in fh.read(65536).splitlines())
    except OSError:
        return False


def _note(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True, emoji=False).print(text, style="yellow")


def output_format(fmt: Format, as_json: bool) -> str:
    if as_json and fmt.value not in ("table", "json"):  # two answers to one question: say so, not pick one
        raise ConvcliError(f"--json and --format {fmt.value} ask for two formats; give one of them")
    return "json" if as_json else fmt.value


def batch_labels(args) -> tuple[str | None, list[str]]:
    """Labels for a batch: when every spec file sits under one folder other than the current one, the
    folder (said once, in the title) and the paths below it (alice.yaml, not /home/ta/sub/alice.yaml)."""
    import os

    labels = [spec_label(a) for a in args]
    parts = []  # (file, ":NAME" or "") — a model file FILE.py:NAME is placed by its file
    for lab in labels:
        file, sep, name = lab.rpartition(":") if ":" in lab and not Path(lab).exists() else (lab, "", "")
        if sep and not Path(file).is_file():  # package.module:NAME has no folder
            return None, labels
        parts.append((file, sep + name))
    if len(labels) < 2:
        return None, labels
    try:
        common = os.path.commonpath([os.path.dirname(file) or "." for file, _ in parts])
    except ValueError:
        return None, labels
    if common in ("", ".", os.sep):
        return None, labels
    return common, [os.path.relpath(file, common) + ref for file, ref in parts]


def analyse_each(paths: list, input_shape: str | None):
    """The analyses of a command's specs (`expand_specs` of its arguments) as [(label, analysis)], and the
    specs that could not be read as [(label, error)]. One spec: its error is raised. A batch goes on without
    the unreadable ones (see `report_unreadable`), as `inspect` grades the rest; labels as in a batch."""
    from convcli.sources import load_analysis

    batch = len(paths) > 1
    _, labels = batch_labels(paths) if batch else (None, [spec_label(p) for p in paths])
    done, failed = [], []
    for path, label in zip(paths, labels):
        try:
            done.append((label, load_analysis(path, input_shape)))
        except ConvcliError as exc:
            if not batch:
                raise
            failed.append((label, exc))
    return done, failed


def report_unreadable(failed, total: int) -> None:
    """After a batch's output: each unreadable spec's error on stderr; exit 2 when none could be read, else 1."""
    import typer

    from convcli.render import console

    if not failed:
        return
    err = console(stderr=True)
    for _, exc in failed:  # each error names its file (file:line), as `inspect`'s do
        err.print(f"error: {exc}", markup=False)
    raise typer.Exit(2 if len(failed) == total else 1)


def batch_title(output, label: str, name: str):
    """In a batch, each spec's table is titled with its file (40 copies of s7.yaml all say `name: s7`)."""
    from convcli.render import Lines, TableData

    shown = label if Path(label.partition(":")[0]).stem == name else f"{label} ({name})"
    for block in output.blocks[:1]:
        if isinstance(block, TableData) and block.title.startswith(f"{name}:"):
            block.title = shown + block.title[len(name):]
        elif isinstance(block, Lines) and block.lines and block.lines[0].startswith(f"{name}:"):
            block.lines = [shown + block.lines[0][len(name):], *block.lines[1:]]
    return output


def spec_label(arg) -> str:
    """A spec as tables and gradebooks show it: relative to the current directory when inside it."""
    text = str(arg)
    p = Path(text)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return text
    return text


def totals(analysis) -> dict:
    """Totals from the graph (no torch): every weight once, shared weights counted where defined.
    The tests compare them with torch's de-duplicated `parameters()` of the built model."""
    g = analysis.graph
    total = analysis.params
    size = g.param_bytes if g.param_bytes is not None else 4 * total  # float32 unless the model says otherwise
    return {"total": total, "trainable": total - g.frozen_params, "macs": analysis.macs, "size_mb": size / 1e6,
            "dtype": g.param_dtype}
