"""Resampling without weights: upsample (nearest / linear interpolation) and pixel shuffle."""

from __future__ import annotations

from convcli.layers.conv import axes_of, feature_map_rank
from convcli.layers.geometry import Rescale, per_axis
from convcli.layers.registry import Facts, LayerType, Param, register

LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


@register
class Upsample(LayerType):
    name = "upsample"
    family = "resample"
    positional = "scale"
    params = (
        Param("scale", "ints", 2, aliases=("scale_factor", "factor"), minimum=1, help="factor, per axis allowed"),
        Param("mode", "str", "nearest", choices=("nearest", "linear", "bilinear", "trilinear")),
    )
    doc = "upsampling by an integer factor (per axis allowed); interpolation reads 2 neighbours per axis (RF +1 jump)"
    examples = (
        ((3, 4, 4), {"scale": 2}),
        ((3, 4, 4), {"scale": [2, 1]}),
        ((3, 4, 4), {"scale": 2, "mode": "bilinear"}),
        ((2, 5), {"scale": 3, "mode": "linear"}),
    )

    def infer(self, a, shape, where):
        nd = feature_map_rank(self, shape, where)
        if a["mode"] != "nearest" and a["mode"] != LINEAR_MODES[nd]:
            raise where.error(
                f"mode '{a['mode']}' does not fit a {nd}-D input", expected=f"'nearest' or '{LINEAR_MODES[nd]}'"
            )
        factors = axes_of(a, "scale", nd, where)
        support = 1 if a["mode"] == "nearest" else 2
        return Facts(
            out_shape=(shape[0], *(n * f for n, f in zip(shape[1:], factors))),
            ops=[Rescale(f, support) for f in factors], op="resample",
        )

    def build(self, a, shape):
        import torch.nn as nn

        factors = per_axis(a["scale"], len(shape) - 1)  # checked by infer
        one = len(set(factors)) == 1  # torch takes a number, or a float per axis
        return nn.Upsample(scale_factor=factors[0] if one else tuple(float(f) for f in factors), mode=a["mode"])


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
        return Facts(
            out_shape=(shape[0] // (r * r), shape[1] * r, shape[2] * r),
            ops=[Rescale(r)] * 2,
            op="resample",
        )

    def build(self, a, shape):
        import torch.nn as nn

        return nn.PixelShuffle(a["r"])


@register
class Pad(LayerType):
    name = "pad"
    family = "resample"
    params = (
        Param("before", "ints", 0, aliases=("left",), minimum=0, help="padding before each axis (left/top)"),
        Param("after", "ints", 0, aliases=("right",), minimum=0, help="padding after each axis (right/bottom)"),
        Param("mode", "str", "zeros", choices=("zeros", "reflect", "replicate", "circular")),
    )
    doc = "explicit, possibly asymmetric padding, e.g. causal: before d*(k-1), after 0"
    examples = (((2, 10), {"before": 4}), ((3, 5, 6), {"before": [1, 0], "after": [0, 2], "mode": "replicate"}))

    def sides(self, a, nd, where):
        from convcli.layers.conv import axes_of

        return axes_of(a, "before", nd, where), axes_of(a, "after", nd, where)

    def infer(self, a, shape, where):
        from convcli.layers.conv import check_pad_fits
        from convcli.layers.geometry import Window

        nd = feature_map_rank(self, shape, where)
        before, after = self.sides(a, nd, where)
        check_pad_fits(a["mode"], before, after, shape, where)
        return Facts(
            out_shape=(shape[0], *(n + b + c for n, b, c in zip(shape[1:], before, after))),
            ops=[Window(1, 1, b, c) for b, c in zip(before, after)],
            op="pad" if any(before) or any(after) else "identity",
        )

    def build(self, a, shape):
        import torch.nn as nn

        nd = len(shape) - 1
        before, after = self.sides(a, nd, None)
        # torch wants (last axis before, last axis after, previous axis before, ...).
        padding = tuple(x for b, c in reversed(list(zip(before, after))) for x in (b, c))
        if a["mode"] == "zeros":
            return [nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d][nd - 1](padding, 0.0)
        table = {
            "reflect": (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d),
            "replicate": (nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d),
            "circular": (nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d),
        }
        return table[a["mode"]][nd - 1](padding)
