"""The graph → a YAML spec (`convcli import model.py:Net --input 3,32,32 > net.yaml`).

A traced DAG becomes the spec language's nesting: a join (add, concat, mul) with its branches from
the point where they fork (the join's immediate dominator). A graph that is not series-parallel (a
layer feeding two joins that do not nest) cannot be written as nested branches: that is an error, not
a spec with duplicated layers. Top-level submodules become labelled `seq` blocks (C1, C2, ... stay
labels, so the structure rule still reads them); a module called twice becomes `name:` + `reuse:`.
"""

from __future__ import annotations

import re

from convcli.errors import ConvcliError
from convcli.graph import INPUT, Graph


def dominators(graph: Graph) -> dict[int, int]:
    """Immediate dominator of every node on a path to the output (Cooper, Harvey & Kennedy, on a DAG in
    topological order)."""
    order = {INPUT: -1, **{n.id: i for i, n in enumerate(graph.nodes)}}
    idom: dict[int, int] = {}

    def intersect(a: int, b: int) -> int:
        while a != b:
            while order[a] > order[b]:
                a = idom[a]
            while order[b] > order[a]:
                b = idom[b]
        return a

    for n in graph.nodes:
        preds = list(dict.fromkeys(n.inputs))
        d = preds[0]
        for p in preds[1:]:
            d = intersect(d, p)
        idom[n.id] = d
    return idom


def _label(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", path).strip("_") or "layer"


class _Writer:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.idom = dominators(graph)
        self.emitted: set[int] = set()
        self.names: dict[int, str] = {}
        shared = {n.shares for n in graph.nodes if n.shares is not None}
        for i in shared:
            self.names[i] = _label(graph.nodes[i].module or graph.nodes[i].path)

    def item(self, node) -> dict:
        if node.id in self.emitted:
            raise ConvcliError(f"{self.graph.source}: {node.path} feeds two joins that do not nest: the graph is "
                               "not series-parallel, so it cannot be written as nested branches")
        self.emitted.add(node.id)
        self.faithful(node)
        if node.shares is not None:
            return {"reuse": self.names[node.shares]}
        opts = _options(node)
        if node.id in self.names:
            opts["name"] = self.names[node.id]
        return {node.entry.name: opts} if opts else node.entry.name

    def faithful(self, node) -> None:
        if node.lossy:
            raise ConvcliError(f"{self.graph.source}: {node.path}: {node.lossy} has no spec equivalent, so "
                               "`convcli import` cannot write this model without changing what it computes "
                               "(the analysis of the model itself is unaffected)")

    def chain(self, src: int, end: int) -> list[tuple[int, dict]]:
        """(first node id, item) pairs computing `end`'s output from `src`'s."""
        items: list[tuple[int, dict]] = []
        cur = end
        while cur != src:
            if cur == INPUT:
                raise ConvcliError(f"{self.graph.source}: a branch does not start at its fork; cannot write it")
            node = self.graph.nodes[cur]
            if node.role == "join":
                self.faithful(node)
                fork = self.idom[cur]
                branches = [[it for _, it in self.chain(fork, i)] for i in node.inputs]
                self.emitted.add(cur)
                opts = {"branches": branches}
                items.insert(0, (cur, {node.entry.name: opts}))
                cur = fork
            else:
                items.insert(0, (cur, self.item(node)))
                cur = node.inputs[0]
        return items


def _options(node) -> dict:
    """The node's options without those equal to the type's defaults (tuples as lists)."""
    entry, raw = node.entry, dict(node.raw or {})
    defaults = {p.name: p.default for p in entry.params}
    out = {}
    for key, value in raw.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list) and len(set(map(str, value))) == 1:
            value = value[0]
        if key == "bias" and value is True:
            continue  # the default without bn
        if key in defaults and value == defaults[key]:
            continue
        if key == "s" and entry.family == "pool" and value == out.get("k", raw.get("k")):
            continue  # a pool's stride defaults to its kernel
        out[key] = value
    return out


def graph_to_spec(graph: Graph) -> dict:
    w = _Writer(graph)
    items = w.chain(INPUT, graph.output)
    layers, current, current_label = [], None, None
    for first, item in items:
        label = _top_group(graph, first)
        if label is None:
            leaf = graph.nodes[first] if first != INPUT and first < len(graph.nodes) else None
            if leaf is not None and leaf.label and leaf.depth == 0 and "reuse" not in item:
                # a top-level single module (self.O = nn.Linear(...)) keeps its name: the structure rule reads it
                opts = (item.get(leaf.entry.name) or {}) if isinstance(item, dict) else {}
                item = {leaf.entry.name: {**opts, "name": leaf.label}}
            layers.append(item)
            current, current_label = None, None
            continue
        if label != current_label:
            current = []
            current_label = label
            layers.append({"seq": {"name": label, "layers": current}})
        current.append(item)
    return {"name": graph.name, "input": list(graph.input), "layers": layers}


def _top_group(graph: Graph, node_id: int) -> str | None:
    """The label of the top-level submodule a node belongs to, if any."""
    for g in graph.groups:
        if g.depth == 0 and node_id in g.nodes and g.label:
            return g.label
    return None


def spec_yaml(graph: Graph) -> str:
    import yaml

    head = (f"# {graph.name}: written by `convcli import {graph.source}` from the traced model.\n"
            "# Same analysis as the model: params, MACs, shapes and receptive field.\n")
    if graph.frozen_params:
        head += (f"# The model froze {graph.frozen_params:,} parameters (requires_grad=False); a spec has no "
                 "frozen layers, so here every parameter is trainable.\n")
    return head + yaml.safe_dump(graph_to_spec(graph), sort_keys=False, default_flow_style=None, width=110)
