"""The spec front-end: a parsed `Spec` → the network graph. Block substitution, defaults, `$variables`,
padding and every other default end here, with each node's `file:line` kept for error messages.

Shapes are tracked while walking only because a few expansions depend on them (a residual's automatic
projection shortcut, per-axis keys); the analysis recomputes everything from the graph alone.
"""

from __future__ import annotations

import copy

from convcli.graph import INPUT, Graph
from convcli.layers.registry import MAX_ROWS, Where, normalize
from convcli.spec import Spec, entry_parts, item_line, substitute

# A hand-written spec never comes near these; a hostile or mistaken one (repeat: {times: 10**9}, a block
# that uses itself) must end with an error, not a hang or a crash.
MAX_DEPTH = 64


def spec_graph(spec: Spec) -> Graph:
    graph = Graph(name=spec.name, source=spec.file, input=tuple(spec.input), classes=spec.classes,
                  description=spec.description, rules=spec.rules, train=spec.train)
    walker = _Walker(spec, graph)
    out = walker.seq(spec.layers, "layers", INPUT, 0, spec.raw.line_of("layers"), graph.top)
    shape = walker.shapes[out]
    if spec.classes is not None and len(shape) == 1 and shape[0] != spec.classes:
        raise spec.where(spec.raw.line_of("classes"), "classes").error(
            f"classes: {spec.classes}, but the network outputs {shape[0]} values per sample",
            expected=f"a last layer with {spec.classes} outputs (e.g. linear: {{out: $classes}})")
    return graph


class _Walker:
    def __init__(self, spec: Spec, graph: Graph):
        self.spec, self.graph = spec, graph
        self.shapes: dict[int, tuple[int, ...]] = {INPUT: tuple(spec.input)}
        self.named: dict[str, int] = {}  # leaf labels, for `reuse`
        self.active_blocks: list[str] = []  # spec blocks being expanded, to catch a block that uses itself

    def seq(self, items: list, prefix: str, src: int, depth: int, line, container: list) -> int:
        for i, item in enumerate(items):
            at = item_line(items, i, line)
            where = self.spec.where(at, f"{prefix}[{i}]")
            entry, type_name, options = entry_parts(item, where, self.spec)
            where = self.spec.where(at, f"{prefix}[{i}].{type_name}")
            options = substitute(copy.deepcopy(options), self.spec.variables(), where)
            args, label = normalize(entry, options, where, self.spec.defaults_for(entry))
            if entry.kind == "reuse":
                src = self.reuse(args["of"], label, src, depth, where, container)
            else:
                src = self.node(entry, type_name, args, label, src, depth, where, container)
        return src

    def node(self, entry, type_name, args, label, src, depth, where: Where, container: list) -> int:
        shape = self.shapes[src]
        if entry.kind == "leaf":
            args = entry.resolve(args, shape, where)
            facts = entry.infer(args, shape, where)
            n = self.graph.add_node(path=where.path, type=type_name, entry=entry, args=args, inputs=(src,),
                                    depth=depth, label=label, where=where)
            self.shapes[n.id] = tuple(facts.out_shape)
            container.append(("node", n.id))
            if label:
                self.named.setdefault(label, n.id)
            self._check_size()
            return n.id

        if depth >= MAX_DEPTH:
            raise where.error(f"blocks nest more than {MAX_DEPTH} levels deep")
        group = self.graph.add_group(path=where.path, type=type_name, depth=depth, label=label, where=where,
                                     entry=entry, args=args)
        container.append(("group", group.id))
        first = len(self.graph.nodes)
        is_spec_block = type_name in self.spec.blocks
        if is_spec_block and type_name in self.active_blocks:
            cycle = " → ".join(self.active_blocks[self.active_blocks.index(type_name):] + [type_name])
            raise where.error(f"block '{type_name}' uses itself ({cycle})", expected="blocks that end")
        self.active_blocks += [type_name] if is_spec_block else []
        if entry.kind == "seq":
            children = entry.expand(args, shape, where)
            if len(self.graph.order) + len(children) > MAX_ROWS:
                raise where.error(f"the spec expands to more than {MAX_ROWS:,} layers", got=f"{len(children):,} here")
            out = self.seq(children, where.path, src, depth + 1, where.line, group.items)
        else:
            out = self._parallel(group, src, depth, where)
        if is_spec_block:
            self.active_blocks.pop()
        group.nodes = list(range(first, len(self.graph.nodes)))
        return out

    def _parallel(self, group, src: int, depth: int, where: Where) -> int:
        entry, args = group.entry, group.args
        branches = entry.branches(args, self.shapes[src], where)
        names = entry.branch_names(len(branches))
        ends: list[int] = []
        for branch, name in zip(branches, names):
            if callable(branch):
                branch = branch(self.shapes[ends[0]])
            prefix = f"{where.path}[{name}]" if name.isdigit() else f"{where.path}.{name}"
            items: list = []
            ends.append(self.seq(branch, prefix, src, depth + 1, where.line, items))
            group.branches.append(items)
        join_where = Where(where.file, where.line, f"{where.path}.join")
        facts = entry.join(args, [self.shapes[e] for e in ends], join_where)
        n = self.graph.add_node(path=join_where.path, type=entry.join_op, entry=entry, args=args,
                                inputs=tuple(ends), depth=depth + 1, where=join_where, role="join")
        self.shapes[n.id] = tuple(facts.out_shape)
        group.join = n.id
        return n.id

    def reuse(self, target: str, label, src: int, depth: int, where: Where, container: list) -> int:
        """`- reuse: c1`: the layer labelled c1 applied again here, with the same weights."""
        from convcli.errors import did_you_mean

        if target not in self.named:
            raise where.error(f"no earlier layer named '{target}' to reuse",
                              expected="the `name:` of a layer defined above (not a block)",
                              suggestion=did_you_mean(target, self.named))
        t = self.graph.nodes[self.named[target]]
        shape, was = self.shapes[src], self.shapes[t.inputs[0]]
        if len(shape) != len(was) or shape[0] != was[0]:
            raise where.error(f"'{target}' cannot be reused here: its weights expect {was[0]} input channels"
                              f" ({len(was) - 1}-D), this input is {list(shape)}", got=list(shape))
        facts = t.entry.infer(t.args, shape, where)
        n = self.graph.add_node(path=where.path, type=t.type, entry=t.entry, args=t.args, inputs=(src,),
                                depth=depth, label=label, where=where, shares=t.id)
        self.shapes[n.id] = tuple(facts.out_shape)
        container.append(("node", n.id))
        self._check_size()
        return n.id

    def _check_size(self):
        if len(self.graph.order) > MAX_ROWS:
            raise self.graph.nodes[-1].where.error(f"the spec expands to more than {MAX_ROWS:,} layers")
