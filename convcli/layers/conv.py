"""Convolutions: conv (1-D/2-D/3-D by input rank), pointwise, depthwise, grouped, transposed,
deformable, and the two factorised forms (depthwise-separable, spatially separable).

Counting rule (per sample): params = weights + bias + BN affine; MACs = weight multiply-accumulates,
out_positions * out_channels * (in_channels/groups) * prod(k). Dilation changes the RF, not MACs.
A transposed conv's cost scales with *input* positions.
"""

from __future__ import annotations

from fractions import Fraction
from math import prod

from convcli.layers.geometry import Transposed, Window, eff_kernel, per_axis, same_padding, window_out
from convcli.layers.registry import Facts, LayerType, Param, block_keys, conv_keys, keys, register

AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def feature_map_rank(entry: LayerType, shape, where, ranks=(1, 2, 3)) -> int:
    """Spatial rank of a (C, *spatial) input, or a clear error for a flat vector."""
    nd = len(shape) - 1
    if nd not in ranks:
        if nd == 0:
            raise where.error(
                f"'{entry.name}' needs a feature map, but its input is a flat vector of {shape[0]}",
                expected="(C, L), (C, H, W) or (C, D, H, W); put it before gap/flatten",
            )
        listed = " or ".join(map(str, ranks))
        raise where.error(f"'{entry.name}' does not support {nd}-D inputs",
                          expected=f"{listed} spatial ax{'is' if ranks == (1,) else 'es'}")
    return nd


def axes_of(a: dict, key: str, nd: int, where) -> tuple:
    try:
        return per_axis(a[key], nd)
    except ValueError as exc:
        raise where.error(f"'{key}' must give one value or one per spatial axis ({exc})", got=list(a[key])) from None


def paddings(a: dict, k_eff: tuple, s: tuple, nd: int, where) -> tuple[tuple[int, int], ...]:
    """(left, right) per axis. Default: d*(k-1)//2 each side, which keeps the size at stride 1 (odd k)."""
    p = a["p"]
    if p is None:
        return tuple((ke - 1) // 2 for ke in k_eff), tuple((ke - 1) // 2 for ke in k_eff)
    if p == "valid":
        return (0,) * nd, (0,) * nd
    if p == "same":
        if any(x != 1 for x in s):
            raise where.error(
                "p: same needs stride 1 (PyTorch rejects padding='same' for strided convs)",
                expected="an explicit padding for a strided layer",
                got=f"s: {s[0] if len(set(s)) == 1 else list(s)}",  # as written: 2, not [2, 2]
            )
        lr = [same_padding(ke) for ke in k_eff]
        return tuple(x[0] for x in lr), tuple(x[1] for x in lr)
    pp = axes_of(a, "p", nd, where)
    return pp, pp


def window_outputs(entry, shape, k, s, d, pl, pr, where, ceil=False) -> tuple[int, ...]:
    """Output size per axis with a precise error when a kernel does not fit its padded input."""
    nd = len(shape) - 1
    outs = []
    for ax in range(nd):
        ke = eff_kernel(k[ax], d[ax])
        n_out = window_out(shape[1 + ax], ke, s[ax], pl[ax], pr[ax], ceil)
        if n_out is None or n_out < 1:
            axis = AXIS_NAMES[nd][ax]
            raise where.error(
                f"kernel does not fit its input on axis {axis}",
                expected=f"k_eff = {ke} <= n_in + padding = {shape[1 + ax]} + {pl[ax] + pr[ax]}",
                got=f"input {list(shape)}",
            )
        outs.append(n_out)
    return tuple(outs)


def tail_params(a: dict, channels: int) -> int:
    """Bias and BN affine parameters of a block's tail."""
    return (channels if a["bias"] else 0) + (2 * channels if a["bn"] else 0)


def with_tail(layer, a: dict, channels: int, nd: int):
    """conv/linear followed by optional BN, activation, dropout (one row, one nn.Sequential)."""
    import torch.nn as nn

    from convcli.layers.act import make_act

    parts = [layer]
    if a["bn"]:
        parts.append([nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][max(nd, 1) - 1](channels))
    if a["act"]:
        parts.append(make_act(a["act"]))
    if a["dropout"]:
        parts.append(nn.Dropout(a["dropout"]))
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def resolve_bias(a: dict) -> dict:
    return {**a, "bias": (not a["bn"]) if a["bias"] is None else a["bias"]}


PAD_MODES = ("zeros", "reflect", "replicate", "circular")


def check_pad_fits(mode: str, before, after, shape, where) -> None:
    """PyTorch's limits on padding that reads the map itself: reflect padding must be smaller than the input
    (it mirrors without repeating the edge), circular padding at most the input (it wraps around once)."""
    for b, c, n in zip(before, after, shape[1:]):
        if mode == "reflect" and max(b, c) >= n:
            raise where.error(f"reflect padding {max(b, c)} must be smaller than the input ({n} on that axis)",
                              got=f"input {list(shape)}")
        if mode == "circular" and max(b, c) > n:
            raise where.error(f"circular padding {max(b, c)} must be at most the input ({n} on that axis)",
                              got=f"input {list(shape)}")


class _ConvBase(LayerType):
    family = "conv"
    doc = "convolution (1-D/2-D/3-D by input rank) with optional bn/act/dropout"

    def channels(self, a: dict, cin: int, where) -> tuple[int, int]:
        """(out_channels, groups)."""
        return a["out"], a["g"]

    def resolve(self, a, shape, where):
        """Per-axis k, s, d and the (left, right) padding, decided here once for this input rank."""
        a = resolve_bias(a)
        nd = feature_map_rank(self, shape, where)
        k, s, d = (axes_of(a, key, nd, where) for key in ("k", "s", "d"))
        k_eff = tuple(eff_kernel(kk, dd) for kk, dd in zip(k, d))
        pl, pr = paddings(a, k_eff, s, nd, where)
        check_pad_fits(a.get("pad_mode", "zeros"), pl, pr, shape, where)
        out, g = self.channels(a, shape[0], where)
        return {**a, "k": k, "s": s, "d": d, "pad": (tuple(pl), tuple(pr)), "out": out, "g": g}

    def infer(self, a, shape, where):
        nd, k, s, d = len(a["k"]), a["k"], a["s"], a["d"]
        pl, pr = a["pad"]
        cin, out, g = shape[0], a["out"], a["g"]
        if cin % g or out % g:
            raise where.error(f"groups={g} must divide in_channels={cin} and out_channels={out}")
        n_out = window_outputs(self, shape, k, s, d, pl, pr, where)
        weights = out * (cin // g) * prod(k)
        return Facts(
            out_shape=(out, *n_out),
            params=weights + tail_params(a, out),
            macs=prod(n_out) * weights,
            ops=[Window(k[i], s[i], pl[i], pr[i], d[i]) for i in range(nd)],
            op="conv",
            in_channels=cin,
            out_channels=out,
            groups=g,
            kernel=k,
            stride=s,
            dilation=d,
            bn=a["bn"],
            act=a["act"],
            dropout=a["dropout"],
        )

    def build(self, a, shape):
        import torch.nn as nn

        nd = len(a["k"])
        pl, pr = a["pad"]
        if pl != pr:  # asymmetric ('same' with an even kernel): torch's own padding='same' does the same
            padding = "same"
        else:
            padding = tuple(pl)
        conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][nd - 1](shape[0], a["out"], a["k"], a["s"], padding, a["d"], a["g"],
                                                         a["bias"], padding_mode=a.get("pad_mode", "zeros"))
        return with_tail(conv, a, a["out"], nd)


@register
class Conv(_ConvBase):
    name = "conv"
    examples = (
        ((3, 9, 9), {"out": 4, "k": 3, "s": 2, "p": 0}),
        ((2, 17), {"out": 3, "k": 5, "d": 2}),
        ((2, 5, 6, 7), {"out": 3, "k": [3, 1, 3], "bn": True, "act": "relu"}),
        ((3, 8, 8), {"out": 4, "k": 4, "p": "same"}),
    )
    aliases = ("conv1d", "conv2d", "conv3d", "convolution")
    params = conv_keys() + (
        Param("pad_mode", "str", "zeros", aliases=("padding_mode",), choices=PAD_MODES,
              help="what the padding holds (PyTorch's padding_mode); shapes, RF and counts do not change"),
    )


@register
class Grouped(_ConvBase):
    name = "grouped"
    aliases = ("grouped_conv", "groupconv")
    params = keys("out", "k", "s", "p", "d", "g", g={"required": True, "default": None}) + block_keys()
    doc = "grouped convolution: each of g groups sees in_channels/g inputs"
    examples = (((4, 8, 8), {"out": 6, "g": 2}),)


@register
class Pointwise(_ConvBase):
    name = "pointwise"
    aliases = ("conv1x1",)
    params = keys("out", "s", "g") + block_keys()
    doc = "1x1 convolution: mixes channels, RF unchanged"
    examples = (((4, 8, 8), {"out": 6, "bn": True}),)

    def resolve(self, a, shape, where):
        return super().resolve({**a, "k": 1, "p": 0, "d": 1}, shape, where)


@register
class Depthwise(_ConvBase):
    name = "depthwise"
    aliases = ("dwconv", "depthwise_conv")
    key_hints = {"out": "a depthwise conv keeps the channel count (m: a multiplier gives m×C channels); for a "
                        "depthwise conv followed by a 1×1 to `out` channels, write dwsconv"}
    params = (
        keys("k", "s", "p", "d")
        + (
            Param(
                "m",
                "int",
                1,
                aliases=("multiplier", "depth_multiplier"),
                minimum=1,
                help="output channels per input channel",
            ),
        )
        + block_keys()
    )
    doc = "depthwise convolution: groups = in_channels, one filter per channel"
    examples = (((4, 8, 8), {"k": 3, "m": 2}),)

    def channels(self, a, cin, where):
        return cin * a["m"], cin


@register
class ConvTranspose(LayerType):
    name = "convtranspose"
    aliases = ("deconv", "conv_transpose", "transposed_conv", "upconv")
    family = "conv"
    params = (
        keys(
            "out",
            "k",
            "s",
            "p",
            k={"required": True, "default": None},
            p={"kind": "ints", "default": 0, "minimum": 0, "help": "padding (crops the output)"},
        )
        + (Param("output_padding", "ints", 0, aliases=("op",), minimum=0),)
        + keys("d", "g")
        + block_keys()
    )
    doc = "transposed convolution (fractional stride 1/s); MACs scale with input positions"
    examples = (
        ((3, 2, 2), {"out": 1, "k": 2, "s": 2}),
        ((4, 5, 5), {"out": 2, "k": 4, "s": 2, "p": 1}),
        ((2, 7), {"out": 2, "k": 3, "s": 2, "output_padding": 1}),
    )

    def resolve(self, a, shape, where):
        nd = feature_map_rank(self, shape, where)
        per = {key: axes_of(a, key, nd, where) for key in ("k", "s", "p", "output_padding", "d")}
        return {**resolve_bias(a), **per}

    def infer(self, a, shape, where):
        k, s, p, op, d = (a[key] for key in ("k", "s", "p", "output_padding", "d"))
        nd = len(k)
        cin, out, g = shape[0], a["out"], a["g"]
        if cin % g or out % g:
            raise where.error(f"groups={g} must divide in_channels={cin} and out_channels={out}")
        n_out = []
        for i in range(nd):
            if op[i] >= max(s[i], d[i]):
                raise where.error("output_padding must be smaller than stride or dilation", got=op[i])
            n = (shape[1 + i] - 1) * s[i] - 2 * p[i] + eff_kernel(k[i], d[i]) + op[i]
            if n < 1:
                raise where.error("padding crops the whole output", got=f"n_out = {n}")
            n_out.append(n)
        weights = cin * (out // g) * prod(k)
        notes = []
        if any(eff_kernel(k[i], d[i]) % s[i] for i in range(nd)):
            notes.append(
                "transposed conv: s does not divide k_eff, so the RF size alternates between "
                "output positions; the largest is shown and the jump is the average"
            )
        return Facts(
            out_shape=(out, *n_out),
            params=weights + tail_params(a, out),
            macs=prod(shape[1:]) * weights,
            ops=[Transposed(k[i], s[i], p[i], d[i], op[i]) for i in range(nd)],
            op="convtranspose",
            in_channels=cin,
            out_channels=out,
            groups=g,
            kernel=k,
            stride=tuple(Fraction(1, x) for x in s),
            dilation=d,
            bn=a["bn"],
            act=a["act"],
            dropout=a["dropout"],
            notes=notes,
        )

    def build(self, a, shape):
        import torch.nn as nn

        nd = len(a["k"])
        cls = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][nd - 1]
        layer = cls(shape[0], a["out"], a["k"], a["s"], a["p"], a["output_padding"], a["g"], a["bias"], a["d"])
        return with_tail(layer, a, a["out"], nd)


@register
class DeformConv(_ConvBase):
    name = "deformconv"
    aliases = ("deform_conv", "deformable")
    params = conv_keys() + (Param("offset_groups", "int", 1, minimum=1),)
    doc = (
        "deformable conv (torchvision.ops.DeformConv2d) with its offset-predicting conv; "
        "the RF shown is the nominal kernel grid: real sampling positions move with the input"
    )
    examples = (((3, 9, 9), {"out": 4, "k": 3}),)

    def infer(self, a, shape, where):
        feature_map_rank(self, shape, where, ranks=(2,))
        cin, og = shape[0], a["offset_groups"]
        if cin % og:
            raise where.error(f"offset_groups={og} must divide in_channels={cin}")
        facts = super().infer(a, shape, where)
        kk = prod(facts.kernel)
        # The offset conv: same geometry, 2 offsets (dy, dx) per kernel tap and offset group, with bias.
        offset_weights = 2 * og * kk * cin * kk
        facts.params += offset_weights + 2 * og * kk
        facts.macs += prod(facts.out_shape[1:]) * offset_weights
        facts.op = "deformconv"
        facts.notes.append(
            "deformable conv: sampling positions move with the input, so the true RF is "
            "data-dependent; the RF shown is that of the nominal kernel grid"
        )
        return facts

    def build(self, a, shape):
        from convcli.layers.modules import DeformConvBlock

        pl, _ = a["pad"]
        layer = DeformConvBlock(shape[0], a["out"], a["k"], a["s"], pl, a["d"], a["g"], a["offset_groups"], a["bias"])
        return with_tail(layer, a, a["out"], len(a["k"]))


# --------------------------------------------------------------------------- factorised convolutions


def given(a: dict, *keys: str) -> dict:
    """The keys a macro received explicitly (None = not set, so the child's own default applies)."""
    return {k: a[k] for k in keys if a.get(k) is not None}


UNSET_TAIL = tuple(
    Param(p.name, p.kind, None, p.aliases, choices=p.choices, minimum=p.minimum, below=p.below, help=p.help)
    for p in block_keys()
)


@register
class DepthwiseSeparable(LayerType):
    name = "dwsconv"
    aliases = ("depthwise_separable", "separable_conv")
    family = "conv"
    kind = "seq"
    params = (
        keys("out", "k", "s", "p", "d")
        + (Param("m", "int", 1, aliases=("multiplier",), minimum=1, help="depthwise channel multiplier"),)
        + UNSET_TAIL
    )
    doc = "depthwise-separable conv: depthwise kxk (groups = in) then pointwise 1x1 (Xception, MobileNet)"
    examples = (((4, 8, 8), {"out": 8, "s": 2, "p": 1}),)

    def expand(self, a, shape, where):
        tail = given(a, "bias", "bn", "act")
        return [
            {"depthwise": {**given(a, "k", "s", "p", "d", "m"), **tail}},
            {"pointwise": {"out": a["out"], **tail, **given(a, "dropout")}},
        ]


@register
class SpatiallySeparable(LayerType):
    name = "spatial_sep"
    aliases = ("spatially_separable", "sepconv_kx1")
    family = "conv"
    kind = "seq"
    params = (
        keys(
            "out",
            "k",
            "s",
            "p",
            "d",
            k={"kind": "int"},
            s={"kind": "int"},
            d={"kind": "int"},
            p={"kind": "int", "minimum": 0, "help": "padding on the kernel's long side; default d*(k-1)//2"},
        )
        + (Param("mid", "int", None, minimum=1, help="channels between the two convs (default: out)"),)
        + UNSET_TAIL
    )
    doc = "spatially separable conv: kx1 then 1xk (Inception v3), 2-D"
    examples = (((3, 9, 9), {"out": 4, "k": 3}),)

    def expand(self, a, shape, where):
        feature_map_rank(self, shape, where, ranks=(2,))
        k, s, d = a["k"], a["s"], a["d"]
        p = (d * (k - 1)) // 2 if a["p"] is None else a["p"]
        tail = given(a, "bias", "bn", "act")
        return [
            {"conv": {"out": a["mid"] or a["out"], "k": [k, 1], "s": [s, 1], "p": [p, 0], "d": [d, 1], **tail}},
            {
                "conv": {
                    "out": a["out"],
                    "k": [1, k],
                    "s": [1, s],
                    "p": [0, p],
                    "d": [1, d],
                    **tail,
                    **given(a, "dropout"),
                }
            },
        ]
