"""The gradient-support check of the analytic receptive field, for users (`convcli rf SPEC --empirical`).

Make the model structural (`convcli.visual.structural`: constant positive weights, zero biases,
average pools for max pools, identity activations, float64, eval mode), run it once on an input of
ones, and for every layer back-propagate 1 from the centre unit of its output (channels summed).
The input pixels with a non-zero gradient are that unit's receptive field; per axis, their span is
the measured RF.

The measurement cannot see padding, so it is compared with the analytic region of the same unit
clipped to the input (`rf_box` + `pixel_range`), exactly as tests/test_rf_empirical.py does. A
difference is a mismatch (the analysis, or the model given, is wrong) unless the analysis says it
approximates there: a squeeze-and-excitation gate (global context), branches of different jumps and
sizes, or a deformable conv; `notes` says which. After an upsampling (or an adaptive or ceil_mode pool) the units
differ: the table shows the widest, and the check compares the centre unit's own span.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from convcli.visual.rf_box import centre_unit, pixel_range, rf_box

# Analysis notes that announce an approximation the gradient check will disagree with.
APPROXIMATIONS = ("broadcast", "largest over the paths", "deformable", "data-dependent", "largest window")


@dataclass
class EmpiricalRF:
    """One row's check. Sizes are per spatial axis, in input pixels."""

    path: str
    label: str | None
    unit: tuple[int, ...]  # the unit measured (the centre of the row's output map)
    analytic: list[int]  # the analytic RF size, unclipped (the table's number)
    expected: list[int]  # the analytic region of that unit, clipped to the input
    measured: list[int]  # the span of input pixels with a non-zero gradient
    expected_span: list[tuple[int, int]]  # first and last pixel, inclusive
    measured_span: list[tuple[int, int]]
    notes: list[str] = field(default_factory=list)  # why the analysis is approximate here (upstream of the row)
    unit_rf: list[int] | None = None  # the measured unit's own analytic size, unclipped (< analytic where units differ)

    @property
    def differs(self) -> bool:
        """The measured pixels are not the analytic region (clipped to the input)."""
        return self.measured_span != self.expected_span

    @property
    def explained(self) -> bool:
        """It differs where the analysis says it approximates (see `notes`)."""
        return self.differs and bool(self.notes)

    @property
    def mismatch(self) -> bool:
        """It differs and nothing explains it: the analysis (or the model given) is wrong."""
        return self.differs and not self.notes

    @property
    def ok(self) -> bool:
        return not self.mismatch

    @property
    def clipped(self) -> bool:
        return self.expected != self.analytic

    def cell(self) -> str:
        """The measured size as a table cell: `6`, `5×3`, `32 (84 clipped)`, `3 ≠ 5` (a mismatch), `16 vs 8
        (approximation)` (a difference the notes explain), `41 (widest unit: 49)` (units differ)."""
        def fmt(v):
            return str(v[0]) if len(set(v)) == 1 else "×".join(str(x) for x in v)
        text = fmt(self.measured)
        if self.differs:
            if self.measured == self.expected:  # the same size, somewhere else
                shift = [m[0] - e[0] for m, e in zip(self.measured_span, self.expected_span)]
                text += f", shifted {fmt([f'{v:+d}' for v in shift])} px"
                return text + (" (approximation)" if self.explained else " ≠ analysis")
            return f"{text} ≠ {fmt(self.expected)}" if self.mismatch else \
                f"{text} vs {fmt(self.expected)} (approximation)"
        own = self.unit_rf or self.analytic
        if own != self.analytic:  # units differ (after an upsampling or an adaptive pool): the table shows the widest
            return text + (f" ({fmt(own)} clipped)" if self.expected != own else "") + \
                f" (widest unit: {fmt(self.analytic)})"
        if self.clipped:
            return f"{text} ({fmt(self.analytic)} clipped)"
        return text

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "unit": list(self.unit), "analytic": self.analytic,
                "expected": self.expected, "measured": self.measured,
                "expected_span": [list(s) for s in self.expected_span],
                "measured_span": [list(s) for s in self.measured_span], "unit_rf": self.unit_rf or self.analytic,
                "differs": self.differs,
                "mismatch": self.mismatch, "notes": self.notes}


def _upstream_notes(analysis, row) -> list[str]:
    """The analysis' notes on approximations at this row or before it."""
    ids = analysis.graph.ancestors(row.node) | {row.node}
    notes = []
    for i in sorted(ids):
        for note in analysis.by_node[i].notes:
            if any(key in note for key in APPROXIMATIONS) and note not in notes:
                notes.append(note)
    return notes


def reachable_units(analysis, row, unit) -> list[tuple[int, int]]:
    """Per axis, the first and last input pixel `unit` of `row` reaches through real units only (each
    layer's window clamped to its input map). The analytic RF counts the padding's virtual positions as
    the map continued, and a virtual position's own window may cover input pixels that no real unit
    reads (a stride-2 conv on 8 pixels drops pixel 7): those pixels can never carry a gradient."""
    need = {id(row): [(u, u) for u in unit]}
    found = None
    for r in reversed(analysis.layers):
        spans = need.pop(id(r), None)
        if spans is None or len(r.rf_in) != len(spans):
            continue
        into = []
        for ax, (a, b) in enumerate(spans):
            op, n_in = (r.ops[ax] if r.ops else None), r.rf_in[ax].n
            reads = [op.reads(o) if op is not None else (o, o) for o in range(a, b + 1)] if a <= b else []
            lo, hi = max(min((x for x, y in reads if x <= y), default=n_in), 0), \
                min(max((y for x, y in reads if x <= y), default=-1), n_in - 1)
            into.append((lo, hi))
        producers = analysis.producers(r)
        for p in producers:
            old = need.get(id(p))
            need[id(p)] = into if old is None else [(min(x0, x1), max(y0, y1))
                                                     for (x0, y0), (x1, y1) in zip(old, into)]
        if not producers or len(producers) < len(analysis.graph.nodes[r.node].inputs):  # reads the input
            found = into if found is None else [(min(x0, x1), max(y0, y1)) for (x0, y0), (x1, y1) in zip(found, into)]
    return found or [(0, -1)] * len(unit)


def empirical_rf(analysis, model=None, rows=None) -> list[EmpiricalRF]:
    """Measure every leaf row's RF (or just `rows`) by gradient support and compare it with the analysis.

    `model`: the spec's model (`build_model(analysis)`) or the PyTorch module the analysis was traced
    from; it is copied, never changed. None builds it from the analysis (weights do not matter)."""
    import torch

    from convcli.visual.structural import make_structural
    from convcli.visual.taps import default_model, run_rows

    model = default_model(analysis) if model is None else copy.deepcopy(model)
    model = make_structural(model.cpu())
    rows = [r for r in (rows or analysis.layers) if r.rf_out]
    x = torch.ones(1, *analysis.input_shape, dtype=torch.float64, requires_grad=True)
    outputs = run_rows(model, analysis, x, rows, structural=True)
    results = []
    for row in rows:
        y = outputs[row.path]
        nd = len(row.rf_out)
        unit = centre_unit(row)
        if y.dim() - 2 == nd:  # a spatial map: the centre unit, channels summed
            target = y[(0, slice(None), *(n // 2 for n in y.shape[2:]))].sum()
        else:  # a vector (after GAP / flatten / linear): every output sees the whole input
            target = y[0].sum()
        (grad,) = torch.autograd.grad(target, x, retain_graph=True, allow_unused=True)
        support = grad[0].abs().sum(0) > 0 if grad is not None else torch.zeros(analysis.input_shape[1:], dtype=bool)
        spans = []
        for ax in range(support.dim()):
            others = tuple(i for i in range(support.dim()) if i != ax)
            line = support.any(dim=others) if others else support
            idx = line.nonzero().flatten()
            spans.append((int(idx.min()), int(idx.max())) if len(idx) else (0, -1))
        box = rf_box(analysis, row, unit)
        boxed = pixel_range(box, analysis.input_shape)
        # The analytic region, less the input pixels that no real unit on the way reads (see reachable_units).
        expected_span = [(max(lo, a), min(hi, b)) if max(lo, a) <= min(hi, b) else (lo, lo - 1)
                         for (lo, hi), (a, b) in zip(boxed, reachable_units(analysis, row, unit))]
        results.append(EmpiricalRF(
            path=row.path, label=row.label, unit=unit,
            analytic=[int(a.r) if a.r == int(a.r) else float(a.r) for a in row.rf_out],
            expected=[hi - lo + 1 for lo, hi in expected_span],
            measured=[hi - lo + 1 for lo, hi in spans],
            expected_span=expected_span, measured_span=spans,
            notes=_upstream_notes(analysis, row),
            unit_rf=[int(hi - lo) if hi - lo == int(hi - lo) else float(hi - lo) for lo, hi in box],
        ))
    return results


__all__ = ["EmpiricalRF", "empirical_rf"]
