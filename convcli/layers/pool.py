"""Pooling: max, average, global average (GAP) and adaptive average. No parameters, no MACs."""

from __future__ import annotations

from fractions import Fraction

from convcli.layers.conv import axes_of, feature_map_rank, window_outputs
from convcli.layers.geometry import Adaptive, Global, Window, eff_kernel
from convcli.layers.registry import Facts, LayerType, Param, keys, register


class _Pool(LayerType):
    family = "pool"
    params = keys("k", "s", k={"default": 2}, s={"default": None, "help": "default: k"}) + (
        Param("p", "ints", 0, aliases=("padding",), minimum=0),
        Param("ceil", "bool", False, aliases=("ceil_mode",), help="round the output size up"),
    )

    def resolve(self, a, shape, where):
        nd = feature_map_rank(self, shape, where)
        k = axes_of(a, "k", nd, where)
        s = k if a["s"] is None else axes_of(a, "s", nd, where)
        p = axes_of(a, "p", nd, where)
        d = axes_of(a, "d", nd, where) if "d" in a else (1,) * nd
        for kk, pp in zip(k, p):
            if pp * 2 > kk:
                raise where.error(
                    "pool padding must be at most half the kernel (PyTorch's rule)", got=f"k={kk}, p={pp}"
                )
        return {**a, "k": k, "s": s, "p": p, "d": d}

    def infer(self, a, shape, where):
        k, s, p, d = a["k"], a["s"], a["p"], a["d"]
        n_out = window_outputs(self, shape, k, s, d, p, p, where, ceil=a["ceil"])
        kind = {"pool": self.pool, "in_channels": shape[0], "out_channels": shape[0], "kernel": k, "stride": s,
                "dilation": d}
        if all(kk == 1 and ss == 1 and pp == 0 for kk, ss, pp in zip(k, s, p)):
            # A 1x1 window at stride 1 copies its input: not a pooling, not a downsampling.
            return Facts(out_shape=tuple(shape), op="identity", notes=[f"{self.name} k=1 s=1 is an identity"])
        if all(n == 1 for n in n_out) and all(eff_kernel(kk, dd) - pp >= n for kk, dd, pp, n in
                                               zip(k, d, p, shape[1:])) and all(pp == 0 for pp in p):
            # One window that covers the whole map: global pooling, however it is written (AvgPool2d(8) on 8x8).
            return Facts(out_shape=(shape[0], *n_out), ops=[Global()] * len(k), op="global_pool", **kind)
        floor = window_outputs(self, shape, k, s, d, p, p, where)
        notes = [f"{self.name} with ceil_mode on {list(shape[1:])}: output {list(n_out)} where floor gives "
                 f"{list(floor)} (a last, partial window)"] if tuple(floor) != tuple(n_out) else []
        return Facts(
            out_shape=(shape[0], *n_out),
            ops=[Window(k[i], s[i], p[i], p[i], d[i], ceil=a["ceil"]) for i in range(len(k))],
            op="pool",
            notes=notes,
            **kind,
        )


@register
class MaxPool(_Pool):
    name = "maxpool"
    aliases = ("max_pool", "maxpool1d", "maxpool2d", "maxpool3d")
    params = _Pool.params + keys("d")
    doc = "max pooling (default k=2, s=k)"
    examples = (((3, 9, 9), {"k": 3, "s": 2, "ceil": True}), ((2, 10), {"k": 2}))

    pool = "max"

    def build(self, a, shape):
        import torch.nn as nn

        return [nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d][len(a["k"]) - 1](a["k"], a["s"], a["p"], a["d"],
                                                                          ceil_mode=a["ceil"])


@register
class AvgPool(_Pool):
    name = "avgpool"
    aliases = ("avg_pool", "avgpool1d", "avgpool2d", "avgpool3d")
    params = _Pool.params + (Param("count_include_pad", "bool", True),)
    doc = "average pooling (default k=2, s=k)"
    examples = (((3, 8, 8), {"k": 3, "s": 1, "p": 1}), ((2, 4, 6, 6), {"k": 2}))

    pool = "avg"

    def build(self, a, shape):
        import torch.nn as nn

        cls = [nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d][len(a["k"]) - 1]
        return cls(a["k"], a["s"], a["p"], ceil_mode=a["ceil"], count_include_pad=a["count_include_pad"])


@register
class GlobalAvgPool(LayerType):
    name = "gap"
    aliases = ("global_avg_pool", "globalavgpool", "global_average_pool")
    family = "pool"
    params = (Param("keepdim", "bool", False, help="keep (C, 1, 1) instead of a flat (C,) vector"),)
    doc = "global average pooling: one value per channel; its unit sees the whole input"
    examples = (((5, 7, 7), {}), ((5, 7, 7), {"keepdim": True}), ((3, 11), {}))

    def infer(self, a, shape, where):
        nd = feature_map_rank(self, shape, where)
        out = (shape[0], *([1] * nd)) if a["keepdim"] else (shape[0],)
        return Facts(out_shape=out, ops=[Global()] * nd, op="global_pool", pool="avg", in_channels=shape[0],
                     out_channels=shape[0])

    def build(self, a, shape):
        import torch.nn as nn

        nd = len(shape) - 1
        pool = [nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d][nd - 1](1)
        return pool if a["keepdim"] else nn.Sequential(pool, nn.Flatten())


@register
class AdaptiveAvgPool(LayerType):
    name = "adaptiveavgpool"
    aliases = ("adaptive_avg_pool", "adaptiveavgpool2d")
    family = "pool"
    positional = "size"
    params = (Param("size", "ints", required=True, aliases=("output_size",), minimum=1),)
    doc = "adaptive average pooling to a fixed output size"
    examples = (((3, 12, 12), {"size": [6, 6]}), ((3, 7, 7), {"size": 3}))
    pool = "avg"
    torch_names = ("AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")

    def infer(self, a, shape, where):
        nd = feature_map_rank(self, shape, where)
        size = axes_of(a, "size", nd, where)
        ops, notes = [], []
        for n, m in zip(shape[1:], size):
            if m == 1:
                ops.append(Global())
            elif n % m == 0:
                ops.append(Window(n // m, n // m))
            else:
                op = Adaptive(n, m)
                windows = op.windows()
                sizes = sorted({hi - lo for lo, hi in windows})
                steps = {b[0] - a_[0] for a_, b in zip(windows, windows[1:])}
                if len(sizes) == 1 and len(steps) == 1 and 0 not in steps:
                    # equal windows at equal steps (13->6: k 3, s 2): a plain window, exact RF and jump
                    ops.append(Window(sizes[0], steps.pop()))
                    continue
                ops.append(op)
                if m > n:  # alexnet's AdaptiveAvgPool2d(6) on a smaller map
                    notes.append(f"adaptive pool {n}->{m} enlarges the map: windows of {'/'.join(map(str, sizes))} "
                                 "position(s), so neighbouring units can read the same positions; the jump is the "
                                 "average")
                elif len(sizes) > 1:
                    notes.append(f"adaptive pool {n}->{m}: windows of {' or '.join(map(str, sizes))} positions, so "
                                 "RFs differ between units; the widest is shown, the jump is the average")
                else:
                    notes.append(f"adaptive pool {n}->{m}: windows of {sizes[0]} positions at uneven steps, so the "
                                 "jump is the average")
        if all(m == 1 for m in size):  # a global pool, also of a 1x1 map (resnet18 at 32x32): the GAP written
            return Facts(out_shape=(shape[0], *size), ops=ops, op="global_pool", pool=self.pool,
                         in_channels=shape[0], out_channels=shape[0])
        if tuple(size) == tuple(shape[1:]):
            return Facts(out_shape=tuple(shape), op="identity", notes=[f"{self.name} to the input size is an identity"])
        return Facts(out_shape=(shape[0], *size), ops=ops, op="pool", pool=self.pool, in_channels=shape[0],
                     out_channels=shape[0], stride=tuple(op.s if isinstance(op, Window) else Fraction(n, m)
                                                         for op, n, m in zip(ops, shape[1:], size)),
                     notes=notes)

    def build(self, a, shape):
        import torch.nn as nn

        nd = len(shape) - 1
        size = tuple(axes_of(a, "size", nd, None))
        return getattr(nn, self.torch_names[nd - 1])(size)


@register
class AdaptiveMaxPool(AdaptiveAvgPool):
    name = "adaptivemaxpool"
    aliases = ("adaptive_max_pool", "adaptivemaxpool2d")
    doc = "adaptive max pooling to a fixed output size (size 1: global max pooling)"
    examples = (((3, 12, 12), {"size": [6, 6]}), ((3, 7, 7), {"size": 1}))
    pool = "max"
    torch_names = ("AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d")
