"""Views over one Analysis: the tables and JSON documents the commands print."""

from __future__ import annotations

from convcli.analysis import Analysis, Row
from convcli.layers.geometry import IDENTITY, fmt_num
from convcli.layers.registry import lookup
from convcli.render import Cell, Column, Lines, Name, Output, TableData, jsonable, per_axis_value

AXES = {1: "L", 2: "H×W", 3: "D×H×W"}
MACS_RULE = (
    "MACs: multiply-accumulates of conv, transposed-conv and linear weights, per sample (batch 1), "
    "bias excluded; '-' = not a weight layer."
)
PARAMS_RULE = ("Params: weights + bias + BN affine; a reused (shared) layer's weights count once, where defined "
               "(its later uses show 'shared', so the rows add up to the total).")
RF_RULE = (
    "RF (input px): receptive-field size in input pixels; Jump: input pixels between adjacent units "
    "(r_out = r_in + (k_eff-1)*j_in, j_out = j_in*s, k_eff = d*(k-1)+1)."
)


def shape_str(shape) -> str:
    return "[" + ", ".join(str(x) for x in shape) + "]"  # no thousands separator: [8,192] reads as two axes


def display_names(rows: list[Row]) -> list[Name]:
    """Tree view: each row shows its path relative to its parent block, indented by depth (the full
    path goes to Markdown and CSV)."""
    stack: list[str] = []
    names = []
    for r in rows:
        del stack[r.depth :]
        parent = stack[-1] if stack else ""
        tail = r.path[len(parent) :] if parent and r.path.startswith(parent) else r.path
        tail = tail.lstrip(".")
        label = r.label if r.label and r.label != tail else None
        names.append(Name("  " * r.depth + tail + (f" ({label})" if label else ""), r.path, label))
        if r.kind == "block":
            stack.append(r.path)
    return names


def describe(r: Row) -> str:
    """A short, torch-like description: 'conv 3→32 3×3 s2 d2 g32 +bn+relu'."""
    f = r.facts
    if f is None:
        return r.type
    text = r.type
    if f.op in ("conv", "convtranspose", "deformconv"):
        parts = [r.type, f"{f.in_channels}→{f.out_channels}", "×".join(map(str, f.kernel))]
        for key, values in (("s", f.stride), ("d", f.dilation)):
            if any(x != 1 for x in values):
                parts.append(key + fmt_axes(per_axis_value(list(values))))
        if f.groups != 1:
            parts.append(f"g{f.groups}")
        tail = "".join(f"+{t}" for t in (("bn" if f.bn else None), f.act) if t)
        text = " ".join(parts) + (f" {tail}" if tail else "")
    elif f.op == "pool" and f.kernel:  # the window and its step: AvgPool2d(7) on an 8x8 map reads 7×7 s7
        text = " ".join([r.type, "×".join(map(str, f.kernel)), "s" + fmt_axes(per_axis_value(list(f.stride)))])
    elif f.op == "linear":
        text = f"{r.type} {f.in_channels}→{f.out_channels}"  # `linear` in a spec, `Linear` in a model
    elif f.op == "join" and f.act:
        text = f"{f.join} +{f.act}"
    elif f.op == "global_pool" and (lookup(r.type) is None or lookup(r.type).name != "gap"):
        text = f"{r.type} (global {f.pool} pool)"  # written as a pool over the whole map (or a mean)
    elif f.op == "identity" and r.type != "identity":
        text = f"{r.type} (identity)"
    if r.shares:
        text += f" (shares {r.shares})"
    return text


def axis_columns(r: Row) -> list[dict]:
    """Per spatial axis: the course's columns for this row."""
    out = []
    ops = r.ops or [IDENTITY] * len(r.rf_in)
    for op, a, b in zip(ops, r.rf_in, r.rf_out):
        out.append(
            {
                "n_in": a.n,
                "r_in": a.r,
                "j_in": a.j,
                **op.columns(a),
                "n_out": b.n,
                "r_out": b.r,
                "j_out": b.j,
                "start": b.start,
                "global": b.glob,
            }
        )
    return out


RF_KEYS = ("n_in", "r_in", "j_in", "k", "s", "p", "d", "n_out", "r_out", "j_out", "start")


def rf_values(r: Row) -> dict:
    cols = axis_columns(r)
    return {key: per_axis_value([c[key] for c in cols]) for key in RF_KEYS}


def rf_summary(a: Analysis) -> dict:
    at = a.last_spatial_row()
    rf_axes = a.rf_before_global()
    first_global = a.first_global_row()
    return {
        "rf": per_axis_value([x.r for x in rf_axes]),
        "jump": per_axis_value([x.j for x in rf_axes]),
        "start": per_axis_value([x.start for x in rf_axes]),
        "rf_at": at.path if at else None,
        "global_at": first_global.path if first_global else None,
        "exceeds_input": [bool(x.r > n) for x, n in zip(rf_axes, a.input_shape[1:])],
    }


def rf_footer(a: Analysis) -> list[str]:
    s = rf_summary(a)
    nd = len(a.input_shape) - 1
    lines = [
        f"Final RF: {fmt_axes(s['rf'])} input px, jump {fmt_axes(s['jump'])}"
        + (f" (at {s['rf_at']}, the last layer before {s['global_at']})" if s["global_at"] else f" (at {s['rf_at']})")
    ]
    if any(s["exceeds_input"]):
        size = "×".join(map(str, a.input_shape[1:]))
        lines.append(f"The RF exceeds the {size} input ({AXES[nd]}): units near the border see padding.")
    if s["global_at"]:
        lines.append(
            f"From {s['global_at']} on, every unit sees the whole input (global; its RF is shown as "
            "the union of the windows, not clipped)."
        )
    lines += [f"note: {n}" for n in a.notes]
    if any(isinstance(c["p"], str) for r in a.layers if r.rf_out for c in axis_columns(r)):
        lines.append("p a+b: a px of padding before (top/left), b after (bottom/right), as PyTorch pads "
                     "padding='same' for an even kernel.")
    lines.append(RF_RULE)
    return lines


def fmt_axes(v) -> str:
    return "×".join(fmt_num(x) for x in v) if isinstance(v, list) else fmt_num(v)


# --------------------------------------------------------------------------- rf


def rf_table(a: Analysis) -> TableData:
    cols = [Column("layer", "Layer", numeric=False)] + [
        Column(k, h)
        for k, h in (
            ("n_in", "n_in"),
            ("r_in", "r_in"),
            ("j_in", "j_in"),
            ("k", "k"),
            ("s", "s"),
            ("p", "p"),
            ("d", "d"),
            ("n_out", "n_out"),
            ("r_out", "RF (input px)"),
            ("j_out", "Jump"),
        )
    ]
    t = TableData(
        title=f"{a.name}: receptive field per layer (input {shape_str(a.input_shape)})",
        columns=cols,
        footer=rf_footer(a),
    )
    for name, r in zip(display_names(a.rows), a.rows):
        if r.kind == "block":
            t.add({"layer": name, **{key: "" for key in RF_KEYS}}, style="bold", kind="block")
        else:
            t.add({"layer": name, **rf_values(r)})
    return t


def rf_json(a: Analysis) -> dict:
    layers = [{"name": r.path, "type": r.type, **rf_values(r), "global": r.is_global} for r in a.layers]
    return jsonable(
        {
            "spec": a.source,
            "name": a.name,
            "input": list(a.input_shape),
            "layers": layers,
            **rf_summary(a),
            "notes": a.notes,
        }
    )


def explain(a: Analysis) -> list[str]:
    """Each step's arithmetic, for students: `r_out = r_in + (k_eff-1)*j_in = 5 + (3-1)*2 = 9`."""
    nd = len(a.input_shape) - 1
    axis_names = AXES[nd].split("×")
    lines = [f"{a.name}: input {shape_str(a.input_shape)}; start with r = 1, j = 1 on every axis"]
    for r in a.layers:
        lines.append("")
        lines.append(f"{r.path}  ({describe(r)})  → {shape_str(r.out_shape)}")
        ops = r.ops or [IDENTITY] * nd
        per_axis = [op.explain(x, y) if r.ops else [] for op, x, y in zip(ops, r.rf_in, r.rf_out)]
        if not r.ops:
            lines.append("  pointwise: n, RF and jump unchanged")
            continue
        if all(p == per_axis[0] for p in per_axis):
            lines += [f"  {line}" for line in per_axis[0]]
        else:
            for name, steps in zip(axis_names, per_axis):
                lines += [f"  {name}: {line}" for line in steps]
    lines.append("")
    lines += rf_footer(a)
    return lines


# --------------------------------------------------------------------------- params


def params_table(a: Analysis, totals: dict) -> TableData:
    cols = [
        Column("layer", "Layer", numeric=False),
        Column("type", "Type", numeric=False, wrap=True),
        Column("shape", "Output shape", numeric=False),
        Column("params", "Params"),
        Column("macs", "MACs"),
    ]
    t = TableData(
        title=f"{a.name}: parameters and MACs (input {shape_str(a.input_shape)}, per sample)",
        columns=cols,
        # the front-end's notes (parameters the forward does not use), not the RF notes of the rf view
        footer=totals_footer(totals)[:2] + [f"note: {n}" for n in [*a.input_notes(), *a.graph.notes]]
        + totals_footer(totals)[2:],
    )
    for name, r in zip(display_names(a.rows), a.rows):
        block = r.kind == "block"
        t.add(
            {
                "layer": name,
                "type": describe(r),
                "shape": shape_str(r.out_shape),
                "params": Cell(f"({r.params:,})", r.params) if block else
                (Cell("shared", 0) if r.shares and r.params else r.params or None),
                "macs": (Cell(f"({r.macs:,})", r.macs) if r.macs else None) if block else r.macs,
            },
            style="dim" if block else None,
            kind="block" if block else None,
        )
    return t


def human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def totals_footer(t: dict) -> list[str]:
    return [
        f"Total params: {t['total']:,}   Trainable: {t['trainable']:,}   Non-trainable: "
        f"{t['total'] - t['trainable']:,}",
        f"MACs per sample: {t['macs']:,} ({human(t['macs'], 'MACs')})   "
        f"Params size: {t['size_mb']:.2f} MB ({t.get('dtype', 'float32')})",
        "(n) on a block row: subtotal of the rows below it, not added again.",
        MACS_RULE,
        PARAMS_RULE,
    ]


def params_json(a: Analysis, totals: dict) -> dict:
    # A shared layer's later uses count 0 (and name the row they share), so the layers add up to the total.
    layers = [
        {"name": r.path, "type": r.type, "output_shape": list(r.out_shape), "params": 0 if r.shares else r.params,
         "macs": r.macs, **({"shares": r.shares} if r.shares else {})}
        for r in a.layers
    ]
    return jsonable(
        {"spec": a.source, "name": a.name, "input": list(a.input_shape), **totals, "layers": layers,
         "notes": [*a.input_notes(), *a.graph.notes]}
    )


# --------------------------------------------------------------------------- inspect


def inspect_table(a: Analysis, totals: dict) -> TableData:
    p = params_table(a, totals)
    t = TableData(
        title=f"{a.name}: {shape_str(a.input_shape)} → {shape_str(a.output_shape)}",
        columns=p.columns + [Column("rf", "RF (input px)"), Column("jump", "Jump")],
        footer=totals_footer(totals)[:2] + rf_footer(a)[:-1] + totals_footer(totals)[2:] + [RF_RULE],
    )
    for row, style, kind, r in zip(p.rows, p.styles, p.kinds, a.rows):
        row = dict(row)
        if r.rf_out:
            rf = per_axis_value([x.r for x in r.rf_out])
            row["rf"] = Cell(f"{fmt_axes(rf)} (global)", rf) if r.is_global else rf
            row["jump"] = per_axis_value([x.j for x in r.rf_out])
        t.add(row, style=style, kind=kind)
    return t


def inspect_json(a: Analysis, totals: dict) -> dict:
    doc = params_json(a, totals)
    by_path = {r.path: r for r in a.layers}
    for layer in doc["layers"]:
        r = by_path[layer["name"]]
        layer["rf"] = jsonable(per_axis_value([x.r for x in r.rf_out]))
        layer["jump"] = jsonable(per_axis_value([x.j for x in r.rf_out]))
    doc.update(jsonable(rf_summary(a)))
    doc["output_shape"] = list(a.output_shape)
    doc["notes"] = a.notes
    return doc


def inspect_document(a: Analysis, totals: dict, ruleset, checks) -> dict:
    """The `inspect --json` document: the layer table, totals, RF summary and the rule verdicts."""
    doc = inspect_json(a, totals)
    doc.update(rules=ruleset.name if ruleset else None, checks=[c.to_json() for c in checks],
               ok=not any(c.ok is False for c in checks))
    return doc


# --------------------------------------------------------------------------- what each command prints


def rf_output(a: Analysis, explain_steps: bool = False, label: str = "") -> Output:
    """`convcli rf`: the course table (or, with --explain, each step's arithmetic); CSV: one row per layer."""
    table = rf_table(a)
    blocks = [Lines(explain(a), code=True)] if explain_steps else [table]
    return Output(blocks, data=rf_json(a), records=table, label=label or a.name)


def params_output(a: Analysis, totals: dict, label: str = "") -> Output:
    table = params_table(a, totals)
    return Output([table], data=params_json(a, totals), records=table, label=label or a.name)


def inspect_output(a: Analysis, totals: dict, ruleset=None, checks=None, label: str = "") -> Output:
    """`convcli inspect` of one spec: the layer table, then the verdicts and the PASS/FAIL line."""
    from convcli.rules.report import verdict_line, verdict_table

    checks = checks or []
    table = inspect_table(a, totals)
    blocks: list = [table]
    if ruleset is not None:
        blocks.append(verdict_table(checks, title=f"Rules: {ruleset.name}"))
        ok = not any(c.ok is False for c in checks)
        blocks.append(Lines([verdict_line(checks)], style="bold green" if ok else "bold red"))
    return Output(blocks, data=inspect_document(a, totals, ruleset, checks), records=table, label=label or a.name)


def add_empirical(output: Output, a: Analysis, results) -> None:
    """`rf --empirical`: the gradient-support RF beside the analytic one (a column, and JSON keys
    `rf_measured`, `rf_mismatch` per layer, `empirical_ok` for the spec)."""
    by_path = {r.path: r for r in results}
    table = output.records
    table.columns.append(Column("measured", "RF measured", numeric=False))
    leaf_rows = iter(a.rows)
    for row, kind in zip(table.rows, table.kinds):
        r = next(leaf_rows)
        e = by_path.get(r.path) if kind != "block" else None
        row["measured"] = (Cell(e.cell(), e.measured[0] if len(set(e.measured)) == 1 else e.measured,
                                style="bold red" if e.mismatch else None) if e else "")
    for layer in output.data["layers"]:
        e = by_path.get(layer["name"])
        if e is not None:
            layer["rf_measured"] = per_axis_value(e.measured)
            layer["rf_mismatch"] = e.mismatch
    output.data["empirical_ok"] = not any(e.mismatch for e in results)
    table.footer.append("RF measured: input pixels with a non-zero gradient from the centre unit (constant "
                        "positive weights, max-pool as average, activations as identity), clipped to the "
                        "input pixels real units read; '≠' marks a mismatch with the analysis.")
    for note in dict.fromkeys(n for e in results for n in e.notes):
        table.footer.append(f"note (measured): {note}")
