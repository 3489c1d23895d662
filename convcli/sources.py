"""What a command's SPEC argument names: a YAML spec, or a PyTorch model (`model.py:Net`,
`package.module:factory`) traced into the same graph. Every analysis command reads through here."""

from __future__ import annotations

from pathlib import Path

from convcli.errors import ConvcliError


def load_analysis(arg, input_text: str | None = None):
    """The Analysis of one SPEC argument; `--input C,H,W` is required for a model and overrides a spec's."""
    from convcli.analysis import analyze
    from convcli.torch_graph import is_model_ref, parse_input

    text = str(arg)
    if is_model_ref(text) and not Path(text).exists():
        from convcli.torch_graph import trace_ref

        return analyze(trace_ref(text, input_text))
    from convcli.spec import load_spec

    spec = load_spec(arg)
    if input_text is not None:
        spec.input = parse_input(input_text, str(arg))
    return analyze(spec)


def is_model(arg) -> bool:
    from convcli.torch_graph import is_model_ref

    return is_model_ref(str(arg)) and not Path(str(arg)).exists()


def require_spec(arg, what: str):
    if is_model(arg):
        raise ConvcliError(f"{arg}: {what} needs a YAML spec")
