"""Build the torch model from an analysis: a thin loop that asks each registry entry for its module."""

from __future__ import annotations

import torch
from torch import nn

from convcli.analysis import Analysis, analyze_file


class SpecModel(nn.Sequential):
    """The model a spec describes. `paths` maps each table row's path to its module (not registered
    as submodules, so parameters are counted once)."""

    def __init__(self, modules: list[nn.Module], name: str, paths: dict[str, nn.Module]):
        super().__init__(*modules)
        self.spec_name = name
        object.__setattr__(self, "paths", paths)


def build_model(analysis: Analysis) -> SpecModel:
    """The spec's model: one torch module per graph node from its registry entry and resolved arguments,
    nested as the spec's blocks are (so checkpoint keys follow the spec's structure)."""
    graph = analysis.graph
    if graph.top == [] and graph.nodes:
        raise ValueError(f"{graph.source}: a graph traced from a PyTorch model is built by its own module")
    paths: dict[str, nn.Module] = {}
    modules: dict[int, nn.Module] = {}

    def make_node(i: int) -> nn.Module:
        node, row = graph.nodes[i], analysis.by_node[i]
        if node.shares is not None:
            from convcli.layers.modules import Reuse

            module = Reuse(modules[node.shares])
        else:
            module = node.entry.build(node.args, row.in_shape)
        modules[i] = module
        paths[node.path] = module
        return module

    def make(item) -> nn.Module:
        kind, i = item
        if kind == "node":
            return make_node(i)
        g = graph.groups[i]
        if g.entry.kind == "seq":
            module = nn.Sequential(*(make(c) for c in g.items))
        else:
            from convcli.layers.modules import Parallel

            branches = [nn.Sequential(*(make(c) for c in b)) for b in g.branches]
            join = analysis.by_node[g.join]
            shapes = [analysis.by_node[j].out_shape if j >= 0 else graph.input for j in graph.nodes[g.join].inputs]
            module = Parallel(branches, g.entry.build_join(g.args, shapes))
            paths[join.path] = module.join
        paths[g.path] = module
        return module

    return SpecModel([make(item) for item in graph.top], graph.name, paths)


def build_from_file(path) -> tuple[SpecModel, Analysis]:
    analysis = analyze_file(path)
    return build_model(analysis), analysis


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) from `parameters()`, which de-duplicates shared tensors."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@torch.no_grad()
def forward_shapes(model: SpecModel, input_shape) -> dict[str, tuple[int, ...]]:
    """Per-row output shapes from a real forward pass on zeros (batch 1), in eval mode, restoring
    each module's training flag afterwards so BN statistics and dropout state are untouched."""
    modes = {m: m.training for m in model.modules()}
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, p=p: shapes.__setitem__(p, tuple(o.shape[1:])))
             for p, m in model.paths.items()]
    try:
        model.eval()
        device = next(model.parameters(), torch.zeros(())).device
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return shapes
