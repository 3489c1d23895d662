"""Pooling: max, average, global average (GAP) and adaptive average. No parameters, no MACs."""

from __future__ import annotations

from fractions import Fraction

from convcli.layers.conv import axes_of, feature_map_rank, window_outputs
from convcli.layers.geometry import Global, Window
from convcli.layers.registry import Facts, LayerType, Param, keys, register


class _Pool(LayerType):
    family = "pool"
    params = keys("k", "s", k={"default": 2}, s={"default": None, "help": "default: k"}) + (
        Param("p", "ints", 0, aliases=("padding",), minimum=0),
        Param("ceil", "bool", False, aliases=("ceil_mode",), help="round the output size up"),
    )

    def geometry(self, a, shape, where):
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
        return nd, k, s, p, d

    def infer(self, a, shape, where):
        nd, k, s, p, d = self.geometry(a, shape, where)
        n_out = window_outputs(self, shape, k, s, d, p, p, where, ceil=a["ceil"])
        return Facts(
            out_shape=(shape[0], *n_out),
            ops=[Window(k[i], s[i], p[i], p[i], d[i]) for i in range(nd)],
            info={"op": self.name, "k": k, "s": s},
        )


@register
class MaxPool(_Pool):
    name = "maxpool"
    aliases = ("max_pool", "maxpool1d", "maxpool2d", "maxpool3d")
    params = _Pool.params + keys("d")
    doc = "max pooling (default k=2, s=k)"
    examples = (((3, 9, 9), {"k": 3, "s": 2, "ceil": True}), ((2, 10), {"k": 2}))

    def build(self, a, shape):
        import torch.nn as nn

        nd, k, s, p, d = self.geometry(a, shape, None)
        return [nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d][nd - 1](k, s, p, d, ceil_mode=a["ceil"])


@register
class AvgPool(_Pool):
    name = "avgpool"
    aliases = ("avg_pool", "avgpool1d", "avgpool2d", "avgpool3d")
    params = _Pool.params + (Param("count_include_pad", "bool", True),)
    doc = "average pooling (default k=2, s=k)"
    examples = (((3, 8, 8), {"k": 3, "s": 1, "p": 1}), ((2, 4, 6, 6), {"k": 2}))

    def build(self, a, shape):
        import torch.nn as nn

        nd, k, s, p, d = self.geometry(a, shape, None)
        cls = [nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d][nd - 1]
        return cls(k, s, p, ceil_mode=a["ceil"], count_include_pad=a["count_include_pad"])


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
        return Facts(out_shape=out, ops=[Global()] * nd, info={"op": "gap"})

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
                # PyTorch's windows run from floor(i*n/m) to ceil((i+1)*n/m): sizes vary, so the RF
                # uses the largest window and the average stride n/m.
                widest = max(-(-(i + 1) * n // m) - (i * n // m) for i in range(m))
                ops.append(Window(widest, Fraction(n, m)))
                notes.append(f"adaptive pool {n}->{m}: windows vary in size; RF uses the largest ({widest})")
        return Facts(out_shape=(shape[0], *size), ops=ops, info={"op": "adaptiveavgpool"}, notes=notes)

    def build(self, a, shape):
        import torch.nn as nn

        nd = len(shape) - 1
        size = tuple(axes_of(a, "size", nd, None))
        return [nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d][nd - 1](size)
