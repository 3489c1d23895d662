"""Flatten and fully connected layers."""

from __future__ import annotations

from math import prod

from convcli.layers.conv import resolve_bias, tail_params, with_tail
from convcli.layers.geometry import Global
from convcli.layers.registry import Facts, LayerType, Param, block_keys, register


@register
class Flatten(LayerType):
    name = "flatten"
    family = "shape"
    doc = "flattens (C, *spatial) to a vector; each later unit sees every position (RF: global)"
    examples = (((3, 4, 4), {}),)

    def infer(self, a, shape, where):
        return Facts(out_shape=(prod(shape),), ops=[Global()] * (len(shape) - 1), op="flatten")

    def build(self, a, shape):
        import torch.nn as nn

        return nn.Flatten()


@register
class Unflatten(LayerType):
    name = "unflatten"
    family = "shape"
    params = (Param("axes", "int", 2, minimum=1, maximum=3, help="unit spatial axes to add (2 for images)"),)
    doc = "a vector (C) as a 1x1 map (C, 1, 1): a squeeze-and-excitation gate before its mul (x.view(b, c, 1, 1))"
    examples = (((6,), {}), ((6,), {"axes": 1}))

    def infer(self, a, shape, where):
        # A vector, or one already partly unflattened (y.unsqueeze(-1).unsqueeze(-1): (C, 1) on the way)
        if set(shape[1:]) - {1} or len(shape) - 1 >= a["axes"]:
            raise where.error("unflatten needs a vector", expected=f"a (C) vector (after gap, flatten or linear) "
                              f"to become (C{', 1' * a['axes']})", got=list(shape))
        # Every unit already sees the whole input (its axes are global): the RF is unchanged.
        return Facts(out_shape=(shape[0],) + (1,) * a["axes"], op="identity")

    def build(self, a, shape):
        import torch.nn as nn

        if len(shape) == 1:
            return nn.Unflatten(1, (shape[0],) + (1,) * a["axes"])
        return nn.Unflatten(-1, (1,) * (a["axes"] - len(shape) + 2))  # (C, 1) -> (C, 1, 1): the last 1 split


@register
class Linear(LayerType):
    name = "linear"
    aliases = ("fc", "dense")
    family = "linear"
    params = (Param("out", "int", aliases=("out_features", "units"), required=True, minimum=1),) + tuple(
        Param("bias", "bool", True) if p.name == "bias" else p for p in block_keys()
    )
    doc = "fully connected layer on a flat vector (put gap or flatten before it)"
    examples = (((12,), {"out": 5}), ((12,), {"out": 5, "bn": True, "act": "relu"}))

    def resolve(self, a, shape, where):
        return resolve_bias(a)

    def infer(self, a, shape, where):
        if len(shape) != 1:
            raise where.error(
                f"'linear' needs a flat vector, but its input is {list(shape)}",
                expected="a (features,) input: add `- flatten` or `- gap` before it",
            )
        weights = shape[0] * a["out"]
        return Facts(
            out_shape=(a["out"],),
            params=weights + tail_params(a, a["out"]),
            macs=weights,
            op="linear",
            in_channels=shape[0],
            out_channels=a["out"],
            bn=a["bn"],
            act=a["act"],
            dropout=a["dropout"],
        )

    def build(self, a, shape):
        import torch.nn as nn

        return with_tail(nn.Linear(shape[0], a["out"], a["bias"]), a, a["out"], 1)
