"""Resampling without weights: upsample (nearest / linear interpolation) and pixel shuffle."""

from __future__ import annotations

from convcli.layers.conv import feature_map_rank
from convcli.layers.geometry import Rescale
from convcli.layers.registry import Facts, LayerType, Param, register

LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


@register
class Upsample(LayerType):
    name = "upsample"
    family = "resample"
    positional = "scale"
    params = (
        Param("scale", "int", 2, aliases=("scale_factor", "factor"), minimum=1),
        Param("mode", "str", "nearest", choices=("nearest", "linear", "bilinear", "trilinear")),
    )
    doc = "upsampling by an integer factor; interpolation reads 2 neighbours per axis (RF +1 jump)"
    examples = (((3, 4, 4), {"scale": 2}), ((3, 4, 4), {"scale": 2, "mode": "bilinear"}), ((2, 5), {"scale": 3, "mode": "linear"}))

    def infer(self, a, shape, where):
        nd = feature_map_rank(self, shape, where)
        if a["mode"] != "nearest" and a["mode"] != LINEAR_MODES[nd]:
            raise where.error(f"mode '{a['mode']}' does not fit a {nd}-D input",
                              expected=f"'nearest' or '{LINEAR_MODES[nd]}'")
        f = a["scale"]
        support = 1 if a["mode"] == "nearest" else 2
        return Facts(out_shape=(shape[0], *(n * f for n in shape[1:])), ops=[Rescale(f, support)] * nd,
                     info={"op": "upsample"})

    def build(self, a, shape):
        import torch.nn as nn

        return nn.Upsample(scale_factor=a["scale"], mode=a["mode"])


@register
class PixelShuffle(LayerType):
    name = "pixelshuffle"
    aliases = ("pixel_shuffle", "subpixel")
    family = "resample"
    positional = "r"
    params = (Param("r", "int", 2, aliases=("upscale_factor", "factor"), minimum=1),)
    doc = "pixel shuffle (sub-pixel conv): (C*r^2, H, W) -> (C, H*r, W*r), 2-D"
    examples = (((8, 3, 3), {"r": 2}),)

    def infer(self, a, shape, where):
        feature_map_rank(self, shape, where, ranks=(2,))
        r = a["r"]
        if shape[0] % (r * r):
            raise where.error(f"pixel shuffle by {r} needs channels divisible by {r * r}", got=shape[0])
        return Facts(out_shape=(shape[0] // (r * r), shape[1] * r, shape[2] * r), ops=[Rescale(r)] * 2,
                     info={"op": "pixelshuffle"})

    def build(self, a, shape):
        import torch.nn as nn

        return nn.PixelShuffle(a["r"])
