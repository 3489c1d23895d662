"""What a command's SPEC argument names: a YAML spec, or a PyTorch model (`model.py:Net`,
`package.module:factory`) traced into the same graph. Every analysis command reads through here."""

from __future__ import annotations

from pathlib import Path

from convcli.errors import ConvcliError


def load_analysis(arg, input_text: str | None = None):
    """The Analysis of one SPEC argument; `--input C,H,W` is required for a model and overrides a spec's."""
    from convcli.analysis import analyze
    from convcli.torch_load import is_model_ref, parse_input

    text = str(arg)
    if is_model_ref(text) and not Path(text).exists():
        from convcli.spec import Spec
        from convcli.torch_graph import trace_ref

        graph = trace_ref(text, input_text)
        a = analyze(graph)
        # What train/eval read of a spec: its file (here the model reference), name, input and text.
        a.spec = Spec(file=text, name=graph.name, input=graph.input, layers=[], text=_model_text(graph))
        return a
    from convcli.spec import load_spec

    if text.endswith(".py") and Path(text).is_file():
        raise ConvcliError(_name_needed(Path(text)))
    spec = load_spec(arg)
    if input_text is not None:
        spec.input = parse_input(input_text, str(arg))
    return analyze(spec)


def _name_needed(path: Path) -> str:
    """A .py file given without :NAME: name the nn.Module classes in it (read with ast, nothing runs)."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])

    def base_name(b):
        return b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")

    defs = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    found_names: set[str] = set()
    while True:  # subclasses of the file's own models are models too (class WrongCh(Net))
        more = {n.name for n in defs if n.name not in found_names and any(
            base_name(b).endswith(("Module", "Sequential")) or base_name(b) in found_names for b in n.bases)}
        if not more:
            break
        found_names |= more
    classes = [n.name for n in defs if n.name in found_names]
    found = f" (nn.Module classes in it: {', '.join(classes)})" if classes else ""
    example = f"{path}:{classes[0] if classes else 'Net'}"
    return (f"{path}: a PyTorch file needs the model's name after a colon, FILE.py:NAME{found}; "
            f"e.g. {example} --input 3,32,32")


def is_model(arg) -> bool:
    from convcli.torch_load import is_model_ref

    return is_model_ref(str(arg)) and not Path(str(arg)).exists()


def require_spec(arg, what: str):
    if is_model(arg):
        raise ConvcliError(f"{arg}: {what} needs a YAML spec")


def build_for(analysis):
    """The torch model to train or evaluate: a spec's model from the registry, or a fresh instance of the
    PyTorch model the analysis was traced from (its own module, so its state_dict keys are its own)."""
    if is_model(analysis.source):
        from convcli.torch_load import load_module

        return load_module(analysis.source)
    from convcli.build import build_model

    return build_model(analysis)


def _model_text(graph) -> str:
    """What a run directory keeps of a PyTorch model: the same network written as a spec (for reading;
    resume and eval rebuild the module itself from its reference)."""
    head = f"# the PyTorch model {graph.source}, input {list(graph.input)}, as a spec (convcli import)\n"
    try:
        from convcli.spec_writer import spec_yaml

        return head + spec_yaml(graph)
    except ConvcliError as exc:
        return head + f"# (not expressible as a spec: {exc})\n"
