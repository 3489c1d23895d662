"""Build the torch model from an analysis: a thin loop that asks each registry entry for its module."""

from __future__ import annotations

import torch
from torch import nn

from convcli.analysis import Analysis, Node, analyze_file


class SpecModel(nn.Sequential):
    """The model a spec describes. `paths` maps each table row's path to its module (not registered
    as submodules, so parameters are counted once)."""

    def __init__(self, modules: list[nn.Module], name: str, paths: dict[str, nn.Module]):
        super().__init__(*modules)
        self.spec_name = name
        object.__setattr__(self, "paths", paths)


def build_model(analysis: Analysis) -> SpecModel:
    paths: dict[str, nn.Module] = {}

    def make(node: Node) -> nn.Module:
        if node.entry.kind == "leaf":
            module = node.entry.build(node.args, node.in_shape)
        elif node.entry.kind == "seq":
            module = nn.Sequential(*(make(c) for c in node.children))
        else:
            from convcli.layers.modules import Parallel

            branches = [nn.Sequential(*(make(c) for c in b)) for b in node.branches]
            join = node.row.info["join"]
            module = Parallel(branches, node.entry.build_join(node.args, join.info["branch_shapes"]))
            paths[join.path] = module.join
        paths[node.row.path] = module
        return module

    return SpecModel([make(n) for n in analysis.nodes], analysis.spec.name, paths)


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
