"""The network graph every front-end produces and every analysis reads (no torch, no YAML).

Nodes are registry layers with their resolved arguments, joined by edges (`inputs`): general enough
for residual adds, concats, multiplies (SE blocks) and a module used twice (`shares`). Groups are the
source's blocks (a spec's `seq:`/branch blocks, a PyTorch model's submodules): they give tables their
tree and the rules their labels (C1, C2, ...). `order` interleaves groups and nodes as tables show them.

A spec front-end (`convcli.spec_graph`) and a PyTorch front-end (`convcli.torch_graph`) both end here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from convcli.layers.registry import LayerType, Where

INPUT = -1  # the id standing for the network input in `Node.inputs`


@dataclass
class Node:
    """One operation: a registry layer (or the join of parallel branches) applied to its inputs."""

    id: int
    path: str  # the table's path: layers[1].seq[0].conv, or a module path (layer1.0.conv1)
    type: str  # the type as written (conv2d, Conv2d, add)
    entry: LayerType
    args: dict  # resolved arguments (`entry.resolve`): the builder and the analysis read only these
    inputs: tuple[int, ...]  # producer node ids, INPUT for the network input
    depth: int = 0
    label: str | None = None
    where: Where | None = None
    role: str = "layer"  # "layer" | "join" (the join of a parallel block)
    shares: int | None = None  # id of the node whose module (weights) this node reuses
    module: str | None = None  # the PyTorch module path, when the graph came from a model
    raw: dict | None = None  # the options as a spec would write them (before defaults), for `convcli import`
    # what the source computes that the spec's layer does not (x * 0.2 analysed as an identity, BN without
    # running statistics): the analysis holds, but `convcli import` cannot write it without changing the model
    lossy: str | None = None


@dataclass
class Group:
    """A block of the source: a header row in tables, a label for rules, a container for the builder."""

    id: int
    path: str
    type: str
    depth: int
    label: str | None = None
    where: Where | None = None
    entry: LayerType | None = None  # the spec block's registry entry (seq or parallel), None for modules
    args: dict = field(default_factory=dict)
    nodes: list[int] = field(default_factory=list)  # every node inside, transitively, in order
    # The builder's tree: a seq group holds items ("node", id) / ("group", id); a parallel group holds
    # its branches (lists of items) and its join node.
    items: list[tuple[str, int]] = field(default_factory=list)
    branches: list[list[tuple[str, int]]] = field(default_factory=list)
    join: int | None = None


@dataclass
class Graph:
    name: str
    source: str  # the spec file or `model.py:Net`
    input: tuple[int, ...]  # (C, *spatial), no batch axis
    nodes: list[Node] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    order: list[tuple[str, int]] = field(default_factory=list)  # ("group" | "node", id) in table order
    top: list[tuple[str, int]] = field(default_factory=list)  # the builder's top-level items
    output: int = INPUT
    classes: int | None = None
    description: str = ""
    rules: object = None  # the spec's `rules:` (a profile name or an inline rule set)
    train: dict | None = None
    notes: list[str] = field(default_factory=list)
    frozen_params: int = 0  # parameters with requires_grad=False (a traced model's frozen layers)
    unused_params: int = 0  # a traced model's parameters in modules its forward never calls (not counted)
    param_bytes: int | None = None  # a traced model's real parameter bytes (None: float32)
    param_dtype: str = "float32"  # what param_bytes counts in (a .double() model: float64; "mixed")

    def add_node(self, **kw) -> Node:
        node = Node(id=len(self.nodes), **kw)
        self.nodes.append(node)
        self.order.append(("node", node.id))
        self.output = node.id
        return node

    def add_group(self, **kw) -> Group:
        group = Group(id=len(self.groups), **kw)
        self.groups.append(group)
        self.order.append(("group", group.id))
        return group

    def consumers(self) -> dict[int, list[int]]:
        """node id (or INPUT) -> the ids of the nodes that read its output."""
        out: dict[int, list[int]] = {}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                out.setdefault(i, []).append(n.id)
        return out

    def ancestors(self, node_id: int) -> set[int]:
        seen: set[int] = set()
        stack = [node_id]
        while stack:
            for i in self.nodes[stack.pop()].inputs:
                if i != INPUT and i not in seen:
                    seen.add(i)
                    stack.append(i)
        return seen


__all__ = ["Graph", "Group", "Node", "INPUT"]
