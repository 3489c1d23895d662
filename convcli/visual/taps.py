"""The output tensor of any table row from one real forward pass, for a spec's model and for a PyTorch
model alike (autograd intact, so pictures and checks can back-propagate from any unit).

- A spec's model (`convcli.build.build_model`) has `paths`: row path -> module; a forward hook on it.
- A PyTorch model is traced with torch.fx (in eval mode, as `convcli.torch_graph` traces it) and run by
  an fx Interpreter that keeps every node's output. A row of a module call is the k-th call of
  `row.module` (`shared[call 2]` is the second); a function row (`F.relu`, `x + y`, `x.mean(...)`) is
  the fx node named by the last component of its path (`layer1.0.add` -> `add`).
- A block row (C1, layer1) is its last node's output.
With `structural=True` the interpreter also swaps functions for their gradient-support versions
(`convcli.visual.structural.structural_call`).
"""

from __future__ import annotations

import functools
import re

from convcli.errors import ConvcliError


def is_traced(analysis) -> bool:
    """True when the analysis came from a PyTorch model (its rows name modules), not a spec."""
    return not analysis.graph.top and any(n.module for n in analysis.graph.nodes)


def default_model(analysis):
    """The model an analysis describes, with fresh (random) weights: the spec's model, or the module
    `FILE.py:NAME` builds."""
    if is_traced(analysis):
        from convcli.torch_load import is_model_ref, load_module

        if not is_model_ref(analysis.source):
            raise ConvcliError(f"{analysis.source}: pass the PyTorch model this analysis was traced from")
        return load_module(analysis.source)
    from convcli.build import build_model

    return build_model(analysis)


def leaf_row(analysis, row):
    """A layer or join row itself; a block row's last node (the block's output)."""
    if row.kind != "block":
        return row
    group = analysis.graph.groups[row.group]
    if not group.nodes:
        raise ConvcliError(f"{analysis.source}: block {row.path} has no layers")
    return analysis.by_node[group.nodes[-1]]


@functools.cache
def _fx_classes():
    import torch.fx

    class Tracer(torch.fx.Tracer):
        """torch.fx's tracer; convcli's own stand-in modules stay single calls."""

        def is_leaf_module(self, m, qualname):
            return getattr(m, "_convcli_leaf", False) or super().is_leaf_module(m, qualname)

    class Recorder(torch.fx.Interpreter):
        """Runs a traced graph and keeps every node's output by name."""

        def __init__(self, gm, structural: bool):
            super().__init__(gm)
            self.outputs: dict = {}
            self.structural = structural

        def run_node(self, n):
            result = super().run_node(n)
            self.outputs[n.name] = result
            return result

        def _structural(self, kind, target, args, kwargs):
            if self.structural:
                from convcli.visual.structural import structural_call

                result = structural_call(kind, target, args, kwargs)
                if result is not NotImplemented:
                    return result
            return getattr(super(), kind)(target, args, kwargs)

        def call_function(self, target, args, kwargs):
            return self._structural("call_function", target, args, kwargs)

        def call_method(self, target, args, kwargs):
            return self._structural("call_method", target, args, kwargs)

    return Tracer, Recorder


def trace(model):
    """The fx GraphModule of `model`, traced in eval mode (the graph the analysis was made from)."""
    import torch.fx

    Tracer, _ = _fx_classes()
    was_training = model.training
    model.eval()
    try:
        graph = Tracer().trace(model)
    finally:
        model.train(was_training)
    return torch.fx.GraphModule(model, graph)


def fx_names(gm, analysis, rows) -> dict[str, str]:
    """Row path -> the fx node whose output is that row's (see the module docstring)."""
    calls: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for n in gm.graph.nodes:
        kinds[n.name] = n.op
        if n.op == "call_module":
            calls.setdefault(n.target, []).append(n.name)
    out = {}
    for row in rows:
        name = None
        if row.module is not None:
            m = re.search(r"\[call (\d+)\]$", row.path)
            k = int(m.group(1)) if m else 1
            found = calls.get(row.module, [])
            name = found[k - 1] if len(found) >= k else None
        else:
            for part in reversed(row.path.split(".")[-2:]):
                if kinds.get(part) in ("call_function", "call_method"):
                    name = part
                    break
        if name is None:
            raise ConvcliError(f"{analysis.source}: cannot find {row.path} in the traced model; pass the model "
                               "the analysis was made from")
        out[row.path] = name
    return out


def _fit(tensor, row, analysis):
    """The tensor as the row's [N, *out_shape] (a flattened global pool keeps its own row's shape)."""
    want = tuple(row.out_shape)
    if tuple(tensor.shape[1:]) == want:
        return tensor
    if tensor[0].numel() == _prod(want):
        return tensor.reshape(tensor.shape[0], *want)
    raise ConvcliError(f"{analysis.source}: {row.path}: the model gives {list(tensor.shape[1:])}, the analysis "
                       f"{list(want)}; pass the model the analysis was made from")


def _prod(shape) -> int:
    out = 1
    for v in shape:
        out *= v
    return out


def run_rows(model, analysis, x, rows, structural: bool = False) -> dict:
    """Run `model` on the batch `x` (eval mode) and return {row.path: output tensor [N, *out_shape]} for
    each of `rows` (a block row gives its last node's output). Gradients flow: call backward on any
    of them. `structural` (PyTorch models): swap functions for their gradient-support versions (the
    modules are swapped by `make_structural`)."""
    leaves = {row.path: leaf_row(analysis, row) for row in rows}
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "paths"):
            got: dict = {}
            hooks = []
            for leaf in {id(v): v for v in leaves.values()}.values():
                module = model.paths.get(leaf.path)
                if module is None:
                    raise ConvcliError(f"{analysis.source}: the model has no layer {leaf.path}; pass the model "
                                       "built from this analysis")
                hooks.append(module.register_forward_hook(
                    lambda m, i, o, p=leaf.path: got.__setitem__(p, o)))
            try:
                model(x)
            finally:
                for h in hooks:
                    h.remove()
            outputs = {path: got[leaf.path] for path, leaf in leaves.items()}
        else:
            _, Recorder = _fx_classes()
            gm = trace(model)
            names = fx_names(gm, analysis, list({id(v): v for v in leaves.values()}.values()))
            rec = Recorder(gm, structural)
            rec.run(x)
            outputs = {path: rec.outputs[names[leaf.path]] for path, leaf in leaves.items()}
    finally:
        model.train(was_training)
    return {path: _fit(t, leaves[path], analysis) for path, t in outputs.items()}


__all__ = ["is_traced", "default_model", "leaf_row", "trace", "fx_names", "run_rows"]
