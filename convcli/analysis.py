"""The one analysis every command renders: a pure function of the network graph and its input shape.

Per node: shapes, parameters, MACs (from the registry's typed `Facts`) and the receptive field per
spatial axis; over the DAG, Araujo et al.'s rule (per axis, the largest RF over the paths, with a note
when the paths' centres or jumps differ). Group rows (blocks, submodules) carry subtotals.
No torch and no YAML here: front-ends (`spec_graph`, `torch_graph`) make the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

from convcli.graph import INPUT, Graph
from convcli.layers.geometry import MARGIN, AxisRF
from convcli.layers.registry import Facts


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
    facts: Facts | None = None  # None on block rows
    notes: list[str] = field(default_factory=list)
    node: int | None = None  # the graph node (layer and join rows)
    group: int | None = None  # the graph group (block rows)
    shares: str | None = None  # path of the row whose weights this one reuses
    module: str | None = None  # the PyTorch module path, for a traced model

    @property
    def is_leaf(self) -> bool:
        return self.kind != "block"

    @property
    def is_global(self) -> bool:
        """After GAP/flatten: every unit sees the whole input."""
        return any(a.glob for a in self.rf_out)


@dataclass
class Analysis:
    graph: Graph
    rows: list[Row]
    output_shape: tuple[int, ...]
    rf: list[AxisRF]
    spec: object = None  # the Spec a YAML graph came from (train reads its `train:` and text)
    by_node: dict[int, Row] = field(default_factory=dict)
    first_global: Row | None = None  # the first of `global_ops`
    # the global ops that end the spatial map: together on every input-to-output path (one GAP, or a GAP and
    # a global max pool on parallel paths, joined after); an SE block's inner GAP is not one
    global_ops: list[Row] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def source(self) -> str:
        return self.graph.source

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.input

    @property
    def layers(self) -> list[Row]:
        return [r for r in self.rows if r.is_leaf]

    @property
    def params(self) -> int:
        """Every weight once: a reused layer's weights are counted where they are defined."""
        return sum(r.params for r in self.layers if r.shares is None)

    @property
    def macs(self) -> int:
        return sum(r.macs or 0 for r in self.layers)

    @property
    def notes(self) -> list[str]:
        seen = dict.fromkeys([*self.input_notes(), *self.graph.notes, *(n for r in self.rows for n in r.notes)])
        return list(seen)

    def input_notes(self) -> list[str]:
        """[32, 32, 3] is valid (3 wide, 32 channels) but almost always an H,W,C image shape: say so."""
        c, *spatial = self.input_shape
        if len(spatial) == 2 and spatial[-1] in (1, 3, 4) and c > 4 and spatial[0] > 4:
            return [f"input {list(self.input_shape)} reads as {c} channels of {spatial[0]}×{spatial[1]}; for an "
                    f"image of {c}×{spatial[0]} pixels with {spatial[-1]} channels write "
                    f"[{spatial[-1]}, {c}, {spatial[0]}] (channels first, as PyTorch)"]
        return []

    def first_global_row(self) -> Row | None:
        """The first global op (GAP, flatten, a pool over the whole map) that ends the spatial map: one on
        every path to the output, so an SE block's inner GAP does not count."""
        return self.first_global

    def widest_global_op(self) -> Row | None:
        """Of the global ops, the one whose input has the largest RF (they usually read the same map)."""
        return max(self.global_ops, key=lambda r: [a.r for a in r.rf_in], default=None)

    def rf_before_global(self) -> list[AxisRF]:
        """The RF the assignment measures: at the input of the global ops (the largest), or the output."""
        widest = self.widest_global_op()
        return widest.rf_in if widest else self.rf

    def last_spatial_row(self) -> Row | None:
        """The layer whose output feeds the (widest) global op, or the last layer when there is none."""
        widest = self.widest_global_op()
        if widest is None:
            return self.layers[-1] if self.layers else None
        src = self.graph.nodes[widest.node].inputs[0]
        return self.by_node.get(src)

    def consumers(self) -> dict[int, list[Row]]:
        """id(row) -> the rows that read its output directly (data flow between layer rows)."""
        out: dict[int, list[Row]] = {}
        for src, users in self.graph.consumers().items():
            if src != INPUT:
                out[id(self.by_node[src])] = [self.by_node[u] for u in users]
        return out

    def producers(self, row: Row) -> list[Row]:
        return [self.by_node[i] for i in self.graph.nodes[row.node].inputs if i != INPUT]


def analyze_file(path: str | Path) -> Analysis:
    from convcli.spec import load_spec

    return analyze(load_spec(path))


def analyze(source) -> Analysis:
    """Analyse a Graph, or a Spec (made into its graph first)."""
    spec = None
    if not isinstance(source, Graph):
        from convcli.spec_graph import spec_graph

        spec, source = source, spec_graph(source)
    analysis = analyze_graph(source)
    analysis.spec = spec
    return analysis


def step_axes(rf: list[AxisRF], facts: Facts) -> list[AxisRF]:
    if facts.ops is None:
        return list(rf)
    spatial = facts.out_shape[1:]
    sizes = spatial if len(spatial) == len(facts.ops) else (1,) * len(facts.ops)
    return [op.step(a, n) for op, a, n in zip(facts.ops, rf, sizes)]


def merge_paths(paths: list[list[AxisRF]], shape: tuple[int, ...]) -> tuple[list[AxisRF], list[str]]:
    """Araujo et al. (Distill 2019) for multi-path graphs: per axis, the union of the paths' RFs (the
    largest RF when the paths are aligned, wider when their centres differ).

    A path that reaches the join with one unit on an axis that the join's output keeps spatial is a
    broadcast (an SE block's channel gate): it scales every position with global context, and the RF
    shown is that of the spatial paths (noted)."""
    merged, notes = [], []
    spatial = shape[1:]
    for ax, axis in enumerate(zip(*paths)):
        n = spatial[ax] if ax < len(spatial) else max(a.n for a in axis)
        spatial_paths = [a for a in axis if not (a.n == 1 and n > 1)] or list(axis)
        if len(spatial_paths) < len(axis):
            notes.append(
                "a broadcast branch (one value per channel, e.g. squeeze-and-excitation) scales this map: "
                "every unit also gets global context; the RF shown is that of the spatial path"
            )
        best = max(spatial_paths, key=lambda a: (a.r, a.glob))
        same_n = len({a.n for a in spatial_paths}) == 1
        regular = all(a.spans is None for a in spatial_paths)
        if all(a.glob for a in spatial_paths):
            pass  # pooled heads joined after their global ops: every unit sees the whole input on every path
        elif len({a.j for a in spatial_paths}) > 1:
            notes.append(
                "branches have different jumps: not aligned, so the RF is not shift-invariant; "
                + ("each unit's RF is the union of its paths' RFs" if same_n else "the largest over the paths is shown")
            )
        elif len({a.start for a in spatial_paths}) > 1:
            notes.append("branch RF centres differ: paths not aligned (Distill 2019); the RF shown is the union "
                         "of the paths' RFs, wider than each")
            if regular:  # the same jump: the union is regular too, from the leftmost to the rightmost edge
                lo = min(a.start - Fraction(a.r) / 2 for a in spatial_paths)
                hi = max(a.start + Fraction(a.r) / 2 for a in spatial_paths)
                r = hi - lo
                best = replace(best, r=int(r) if r == int(r) else r, start=(lo + hi) / 2,
                               glob=any(a.glob for a in spatial_paths))
        if same_n and (not regular or len({a.j for a in spatial_paths}) > 1):
            # an irregular or unaligned path: each unit's RF is the union of its RFs over the paths
            units = [[a.span(u) for a in spatial_paths] for u in range(-MARGIN, n + MARGIN)]
            best = AxisRF.from_spans([(min(lo for lo, _ in us), max(hi for _, hi in us)) for us in units], best.j,
                                     best.glob, MARGIN)
        merged.append(replace(best, n=n))
    return merged, notes


def analyze_graph(graph: Graph) -> Analysis:
    """Shapes, counts and RF of every node, in order, then subtotals for the group rows."""
    shapes = {INPUT: tuple(graph.input)}
    rfs = {INPUT: [AxisRF.input(n) for n in graph.input[1:]]}
    by_node: dict[int, Row] = {}
    for node in graph.nodes:
        in_shapes = [shapes[i] for i in node.inputs]
        where = node.where
        if node.role == "join":
            facts = node.entry.join(node.args, in_shapes, where)
            rf_in, notes = merge_paths([rfs[i] for i in node.inputs], facts.out_shape)
            facts.notes.extend(notes)
            rf_out = rf_in
        else:
            facts = node.entry.infer(node.args, in_shapes[0], where)
            rf_in = rfs[node.inputs[0]]
            rf_out = step_axes(rf_in, facts)
        shapes[node.id], rfs[node.id] = tuple(facts.out_shape), rf_out
        by_node[node.id] = Row(
            path=node.path,
            type=node.type,
            kind="join" if node.role == "join" else "layer",
            depth=node.depth,
            line=where.line if where else None,
            in_shape=in_shapes[0],
            out_shape=tuple(facts.out_shape),
            params=facts.params,
            macs=facts.macs,
            rf_in=list(rf_in),
            rf_out=list(rf_out),
            ops=facts.ops,
            label=node.label,
            facts=facts,
            notes=list(facts.notes),
            node=node.id,
            shares=graph.nodes[node.shares].path if node.shares is not None else None,
            module=node.module,
        )

    rows = []
    for kind, i in graph.order:
        if kind == "node":
            rows.append(by_node[i])
            continue
        g = graph.groups[i]
        inner = [by_node[n] for n in g.nodes]
        first, last = (inner[0], inner[-1]) if inner else (None, None)
        macs = [r.macs for r in inner if r.macs is not None]
        rows.append(Row(
            path=g.path,
            type=g.type,
            kind="block",
            depth=g.depth,
            line=g.where.line if g.where else None,
            in_shape=first.in_shape if first else (),
            out_shape=last.out_shape if last else (),
            params=sum(r.params for r in inner if r.shares is None),
            macs=sum(macs) if macs else None,
            rf_in=list(first.rf_in) if first else [],
            rf_out=list(last.rf_out) if last else [],
            label=g.label,
            group=g.id,
        ))

    global_ops = [by_node[i] for i in global_cut(graph, {n.id for n in graph.nodes if by_node[n.id].facts.is_global})]
    return Analysis(graph=graph, rows=rows, output_shape=shapes[graph.output], rf=rfs[graph.output],
                    by_node=by_node, first_global=global_ops[0] if global_ops else None, global_ops=global_ops)


def global_cut(graph, is_global: set[int]) -> list[int]:
    """The global nodes that end the spatial map on every path: each is the first global node on its paths,
    and from it the output is reached through nodes whose every input path has passed a global node. So a
    GAP + global-max head joined by an add is a cut of two, and an SE block's GAP is none (its gate is
    multiplied back into the map, which a path bypassing the GAP still carries)."""
    covered: dict[int, bool] = {}  # every path from the input to the node passes a global node
    for n in graph.nodes:  # topological order
        ins = list(dict.fromkeys(n.inputs))
        covered[n.id] = n.id in is_global or (bool(ins) and all(i != INPUT and covered[i] for i in ins))
    if graph.output == INPUT or not covered.get(graph.output):
        return []
    live = {graph.output}  # reach the output through covered nodes only
    for n in reversed(graph.nodes):
        if n.id in live:
            live.update(i for i in n.inputs if i != INPUT and covered[i])
    return [n.id for n in graph.nodes if n.id in live and n.id in is_global
            and not all(i != INPUT and covered[i] for i in n.inputs)]
