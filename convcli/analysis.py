"""The one analysis every command renders: a walk over a spec (no torch) that yields, per row,
shapes, parameters, MACs and the receptive field per spatial axis, plus the resolved tree the
model builder turns into torch modules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

from convcli.layers.geometry import AxisRF
from convcli.layers.registry import MAX_ROWS, Facts, LayerType, Where, normalize
from convcli.spec import Spec, entry_parts, item_line, load_spec, substitute


@dataclass
class Row:
    """One line of every table: a layer, a block header, or the join of parallel branches."""

    path: str
    type: str
    kind: str  # "layer" | "block" | "join"
    depth: int
    line: int | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...] = ()
    params: int = 0
    macs: int | None = None
    rf_in: list[AxisRF] = field(default_factory=list)
    rf_out: list[AxisRF] = field(default_factory=list)
    ops: list | None = None  # geometry op per axis; None: pointwise (k=1, s=1)
    label: str | None = None
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return self.kind != "block"

    @property
    def is_global(self) -> bool:
        """After GAP/flatten: every unit sees the whole input."""
        return any(a.glob for a in self.rf_out)


@dataclass
class Node:
    """The resolved tree: enough for the builder to make each torch module."""

    entry: LayerType
    args: dict
    row: Row
    children: list[Node] = field(default_factory=list)
    branches: list[list[Node]] = field(default_factory=list)

    @property
    def in_shape(self):
        return self.row.in_shape


@dataclass
class Analysis:
    spec: Spec
    rows: list[Row]
    nodes: list[Node]
    output_shape: tuple[int, ...]
    rf: list[AxisRF]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.spec.input

    @property
    def layers(self) -> list[Row]:
        return [r for r in self.rows if r.is_leaf]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs or 0 for r in self.layers)

    @property
    def notes(self) -> list[str]:
        seen = dict.fromkeys(n for r in self.rows for n in r.notes)
        return list(seen)

    def first_global_row(self) -> Row | None:
        """The first global op (GAP/flatten), if any."""
        return next((r for r in self.layers if r.is_global), None)

    def last_spatial_row(self) -> Row | None:
        """The last layer before the first global op (GAP/flatten): where the assignment measures RF."""
        last = None
        for r in self.layers:
            if r.is_global:
                break
            last = r
        return last


def analyze_file(path: str | Path) -> Analysis:
    return analyze(load_spec(path))


def analyze(spec: Spec) -> Analysis:
    walker = _Walker(spec)
    rf = [AxisRF.input(n) for n in spec.input[1:]]
    shape, rf, nodes = walker.seq(spec.layers, "layers", spec.input, rf, 0, spec.raw.line_of("layers"))
    return Analysis(spec=spec, rows=walker.rows, nodes=nodes, output_shape=shape, rf=rf)


def step_axes(rf: list[AxisRF], facts: Facts) -> list[AxisRF]:
    if facts.ops is None:
        return list(rf)
    spatial = facts.out_shape[1:]
    sizes = spatial if len(spatial) == len(facts.ops) else (1,) * len(facts.ops)
    return [op.step(a, n) for op, a, n in zip(facts.ops, rf, sizes)]


def merge_paths(paths: list[list[AxisRF]], shape: tuple[int, ...]) -> tuple[list[AxisRF], list[str]]:
    """Distill's rule for multi-path graphs: per axis, the largest RF over the paths; misalignment noted."""
    merged, notes = [], []
    spatial = shape[1:]
    for ax, axis in enumerate(zip(*paths)):
        best = max(axis, key=lambda a: (a.r, a.glob))
        if len({a.j for a in axis}) > 1:
            notes.append(
                "branches have different jumps: not aligned, so the RF is not shift-invariant; "
                "the largest over the paths is shown"
            )
        elif len({a.start for a in axis}) > 1:
            notes.append("branch RF centres differ: paths not aligned (Distill 2019); the largest RF is shown")
        n = spatial[ax] if ax < len(spatial) else best.n
        merged.append(replace(best, n=n))
    return merged, notes


# A hand-written spec never comes near these; a hostile or mistaken one (repeat: {times: 10**9}, a block
# that uses itself) must end with an error, not a hang or a crash.
MAX_DEPTH = 64


class _Walker:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.rows: list[Row] = []
        self.active_blocks: list[str] = []  # spec blocks being expanded, to catch a block that uses itself

    def seq(self, items: list, prefix: str, shape, rf, depth: int, line):
        nodes = []
        for i, item in enumerate(items):
            at = item_line(items, i, line)
            where = self.spec.where(at, f"{prefix}[{i}]")
            entry, type_name, options = entry_parts(item, where, self.spec)
            where = self.spec.where(at, f"{prefix}[{i}].{type_name}")
            options = substitute(copy.deepcopy(options), self.spec.variables(), where)
            args, label = normalize(entry, options, where, self.spec.defaults_for(entry))
            node = self.node(entry, type_name, args, label, shape, rf, depth, where)
            shape, rf = node.row.out_shape, node.row.rf_out
            nodes.append(node)
        return shape, rf, nodes

    def node(self, entry, type_name, args, label, shape, rf, depth, where: Where) -> Node:
        row = Row(
            path=where.path,
            type=type_name,
            kind="layer",
            depth=depth,
            line=where.line,
            in_shape=tuple(shape),
            rf_in=list(rf),
            label=label,
        )
        if entry.kind == "leaf":
            facts = entry.infer(args, tuple(shape), where)
            self._fill(row, facts, step_axes(rf, facts))
            self.rows.append(row)
            return Node(entry, args, row)

        row.kind = "block"
        self.rows.append(row)
        first = len(self.rows)
        node = Node(entry, args, row)
        if depth >= MAX_DEPTH:
            raise where.error(f"blocks nest more than {MAX_DEPTH} levels deep")
        is_spec_block = type_name in self.spec.blocks
        if is_spec_block and type_name in self.active_blocks:
            cycle = " → ".join(self.active_blocks[self.active_blocks.index(type_name) :] + [type_name])
            raise where.error(f"block '{type_name}' uses itself ({cycle})", expected="blocks that end")
        self.active_blocks += [type_name] if is_spec_block else []
        if entry.kind == "seq":
            children = entry.expand(args, tuple(shape), where)
            if len(self.rows) + len(children) > MAX_ROWS:
                raise where.error(f"the spec expands to more than {MAX_ROWS:,} layers", got=f"{len(children):,} here")
            out, rf_out, node.children = self.seq(children, where.path, shape, rf, depth + 1, where.line)
        else:
            out, rf_out = self._parallel(node, shape, rf, depth, where)
        if is_spec_block:
            self.active_blocks.pop()
        inner = [r for r in self.rows[first:] if r.is_leaf]
        row.out_shape, row.rf_out = tuple(out), list(rf_out)
        row.params = sum(r.params for r in inner)
        row.macs = sum(r.macs for r in inner if r.macs is not None) if any(r.macs is not None for r in inner) else None
        return node

    def _parallel(self, node: Node, shape, rf, depth, where: Where):
        entry, args = node.entry, node.args
        branches = entry.branches(args, tuple(shape), where)
        names = entry.branch_names(len(branches))
        outs, paths = [], []
        for branch, name in zip(branches, names):
            if callable(branch):
                branch = branch(outs[0])
            prefix = f"{where.path}[{name}]" if name.isdigit() else f"{where.path}.{name}"
            out, rf_b, kids = self.seq(branch, prefix, shape, rf, depth + 1, where.line)
            node.branches.append(kids)
            outs.append(tuple(out))
            paths.append(rf_b)
        join_where = Where(where.file, where.line, f"{where.path}.join")
        facts = entry.join(args, outs, join_where)
        merged, notes = merge_paths(paths, facts.out_shape)
        facts.notes.extend(notes)
        join = Row(
            path=join_where.path,
            type=entry.join_op,
            kind="join",
            depth=depth + 1,
            line=where.line,
            in_shape=outs[0],
            rf_in=merged,
        )
        self._fill(join, facts, merged)
        join.info["branch_shapes"] = outs
        self.rows.append(join)
        node.row.info["join"] = join
        return facts.out_shape, merged

    @staticmethod
    def _fill(row: Row, facts: Facts, rf_out):
        row.out_shape, row.params, row.macs = tuple(facts.out_shape), facts.params, facts.macs
        row.ops, row.info, row.notes, row.rf_out = facts.ops, dict(facts.info), list(facts.notes), list(rf_out)
