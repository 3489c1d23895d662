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
