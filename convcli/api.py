"""The notebook API, in the style of `torchinfo.summary`:

    >>> import convcli
    >>> report = convcli.summary(model, input_size=(3, 32, 32), rules="s7")
    >>> report            # the inspect table and the rule verdicts (rich in a terminal, HTML in Jupyter)
    >>> report.ok         # no rule failed
    >>> report.to_dict()  # the `convcli inspect --json` document

`model_or_spec` may be an `nn.Module`, a spec path, or a `model.py:Net` reference. `input_size` is
(C, H, W) without the batch axis (also (C, L) or (C, D, H, W)); a spec's own `input:` is used when it
is None. Importing convcli does not import torch; passing a module does.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Report:
    analysis: object
    totals: dict
    ruleset: object
    checks: list

    @property
    def ok(self) -> bool:
        """True when no rule failed (rules that could not be checked, e.g. accuracy, do not fail)."""
        return not any(c.ok is False for c in self.checks)

    @property
    def params(self) -> int:
        return self.totals["total"]

    @property
    def macs(self) -> int:
        return self.totals["macs"]

    @property
    def rf(self):
        """The receptive field the assignment measures: at the input of the first global op."""
        from convcli.render import jsonable, per_axis_value

        return jsonable(per_axis_value([a.r for a in self.analysis.rf_before_global()]))  # 13, or [26, 22]

    def to_dict(self) -> dict:
        from convcli.render import jsonable
        from convcli.views import inspect_document

        return jsonable(inspect_document(self.analysis, self.totals, self.ruleset, self.checks))

    def __rich_console__(self, console, options):
        from rich.text import Text

        from convcli.render import to_rich
        from convcli.rules import render_checks, summary_line
        from convcli.views import inspect_table

        table = inspect_table(self.analysis, self.totals)
        yield to_rich(table)
        for line in table.footer:
            yield Text(line)
        if self.ruleset is not None:
            yield render_checks(self.checks, title=f"Rules: {self.ruleset.name}")
            yield Text(("PASS: " if self.ok else "FAIL: ") + summary_line(self.checks))

    def _render(self, **kw):
        import io

        from rich.console import Console

        console = Console(record=True, width=kw.pop("width", 160), file=io.StringIO(), **kw)
        console.print(self)
        return console

    def __str__(self) -> str:
        """The plain text `convcli inspect` prints to a file: tables laid out whole, notes unbroken."""
        from convcli.render import render_to_string
        from convcli.views import inspect_output

        return render_to_string(inspect_output(self.analysis, self.totals, self.ruleset, self.checks), "table")

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return self._render().export_html(inline_styles=True)


def summary(model_or_spec, input_size=None, rules=None, accuracy: float | None = None) -> Report:
    """Analyse a model or spec and check its rules (`rules`: a profile such as "s7", a rules file, "none";
    default: the spec's own `rules:`). `model_or_spec`: a spec file, `FILE.py:NAME`, an nn.Module instance,
    a spec as a dict (the YAML's keys), or a Spec/Graph. `accuracy` (0.853 or 85.3) is checked by an
    `accuracy` rule."""
    from convcli.analysis import analyze
    from convcli.commands.common import totals
    from convcli.errors import ConvcliError
    from convcli.graph import Graph
    from convcli.rules import resolve_rules, run_checks
    from convcli.spec import Spec

    accuracy = _fraction(accuracy)
    input_text = _input_text(input_size)
    what = model_or_spec
    if isinstance(what, (str, Path)):
        from convcli.sources import load_analysis
        from convcli.torch_load import is_model_ref

        if input_size is None and is_model_ref(str(what)) and not Path(str(what)).exists():
            raise ConvcliError(f"{what}: summary() of a PyTorch model needs input_size=(C, H, W), "
                               f"e.g. summary({str(what)!r}, input_size=(3, 32, 32))")
        a = load_analysis(what, input_text)
    elif isinstance(what, type):
        raise ConvcliError(f"summary() needs a model instance, not the class {what.__name__}: "
                           f"pass {what.__name__}() (with its arguments)")
    elif hasattr(what, "named_modules") and callable(what):
        from convcli.torch_graph import trace_graph

        if input_size is None:
            raise ConvcliError(f"summary({type(what).__name__}) needs input_size=(C, H, W), "
                               "e.g. summary(model, input_size=(3, 32, 32))")
        from convcli.torch_load import parse_input

        shape = parse_input(input_text, type(what).__name__, option="input_size")
        a = analyze(trace_graph(what, shape, type(what).__name__))
    elif isinstance(what, dict):
        import yaml

        from convcli.spec import parse_spec

        spec = parse_spec(yaml.safe_dump(what, sort_keys=False), "<dict>")
        if input_text is not None:
            from convcli.torch_load import parse_input

            spec.input = parse_input(input_text, "<dict>")
        a = analyze(spec)
    elif isinstance(what, (Spec, Graph)):
        a = analyze(what)
    else:
        raise ConvcliError(f"summary() takes a spec file, 'FILE.py:NAME', an nn.Module instance, a spec dict, "
                           f"or a Spec/Graph; got {type(what).__name__} {what!r:.60}")
    ruleset = resolve_rules(a.spec, rules, option="summary(rules=...)")
    checks = run_checks(a, ruleset, accuracy) if ruleset else []
    return Report(a, totals(a), ruleset, checks)


def _input_text(input_size) -> str | None:
    """input_size as the CLI's --input text: (3, 32, 32), [3, 32, 32], torch.Size, or "3,32,32" / "3x32x32"
    (checked by parse_input, so a bad one is a ConvcliError, not torch's TypeError)."""
    from convcli.errors import ConvcliError

    if input_size is None or isinstance(input_size, str):
        return input_size
    if isinstance(input_size, (list, tuple)) and all(isinstance(n, int) and not isinstance(n, bool)
                                                     for n in input_size):
        return ",".join(map(str, input_size))
    raise ConvcliError(f"input_size must be (C, H, W) (or (C, L), (C, D, H, W)) without the batch axis, e.g. "
                       f"input_size=(3, 32, 32); got {input_size!r:.60}")


def _fraction(accuracy):
    """0.853 or 85.3 (percent, as `--target-acc` takes it) as a fraction; anything else is an error."""
    from convcli.errors import ConvcliError

    if accuracy is None:
        return None
    if isinstance(accuracy, bool) or not isinstance(accuracy, numbers.Real) or accuracy != accuracy:
        raise ConvcliError(f"summary(accuracy=...) must be a number, got {accuracy!r}")
    if not 0 <= accuracy <= 100:
        raise ConvcliError(f"summary(accuracy=...) is a fraction in [0, 1] or a percentage up to 100, got {accuracy}")
    return accuracy / 100 if accuracy > 1 else accuracy
