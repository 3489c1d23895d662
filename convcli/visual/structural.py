"""The gradient-support recipe (receptive-field notes, §5): a copy of a model whose input gradient is
non-zero exactly on the receptive field.

- every weight a positive constant (1/fan_in, so activations stay near 1 however deep), biases 0;
- max pools (and adaptive max pools, `amax`) become average pools of the same geometry: max routes the
  gradient to one input;
- activations, softmax and dropout become the identity (dead ReLUs, saturated sigmoids and the zero
  channel-sum of a softmax's gradient would hide pixels);
- GroupNorm/LayerNorm/InstanceNorm become the identity (they couple every position of the map); batch
  norm stays, in eval mode a positive per-channel affine map;
- float64 (no underflow at the RF edges of deep nets), eval mode.

Modules are swapped in the model; functions (`F.relu`, `F.max_pool2d`, `x.amax(...)`) are swapped by
`structural_call` while `convcli.visual.taps` interprets the traced graph.
"""

from __future__ import annotations

import functools

ACT_FUNCTIONS = {"relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "elu", "celu", "hardswish",
                 "hardsigmoid", "mish", "softplus", "hardtanh", "softmax", "log_softmax", "dropout", "dropout1d",
                 "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "prelu", "selu", "softsign"}


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _per_axis(value, nd):
    if isinstance(value, (list, tuple)):
        return tuple(value) * nd if len(value) == 1 else tuple(value)
    return (value,) * nd


def pool_as_average(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """A max pool's geometry (kernel, stride, padding, dilation, ceil mode) with every window position
    weighted equally: a depthwise convolution with constant weights, so the gradient reaches every
    position in every window (the output size equals the max pool's)."""
    import torch
    import torch.nn.functional as F

    from convcli.layers.geometry import window_out

    nd = x.dim() - 2
    k = _per_axis(kernel_size, nd)
    s = _per_axis(stride if stride not in (None, [], ()) else kernel_size, nd)
    p = _per_axis(padding, nd)
    d = _per_axis(dilation, nd)
    if all(v == 1 for v in d):  # the fast path (a depthwise float64 conv is slow on the CPU)
        avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        return avg(x, k, s, p, ceil_mode=bool(ceil_mode), count_include_pad=True)
    pads = []
    for ax in range(nd):
        n = x.shape[2 + ax]
        keff = d[ax] * (k[ax] - 1) + 1
        n_out = window_out(n, keff, s[ax], p[ax], p[ax], ceil_mode)
        right = (n_out - 1) * s[ax] + keff - n - p[ax]  # what the last window needs (may crop: < 0)
        pads.append((p[ax], right))
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad lists the last axis first
    x = F.pad(x, flat)
    c = x.shape[1]
    weight = torch.ones((c, 1, *k), dtype=x.dtype, device=x.device)
    weight /= weight[0].numel()
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return conv(x, weight, stride=s, dilation=d, groups=c)


@functools.cache
def _classes():
    """The swap table, built when torch is first needed."""
    import torch.nn as nn

    class PoolAsAverage(nn.Module):
        """A max pool turned into an equal-weight window (see `pool_as_average`)."""

        _convcli_leaf = True  # traced as one call, like the max pool it replaces

        def __init__(self, pool):
            super().__init__()
            self.geometry = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)

        def forward(self, x):
            return pool_as_average(x, *self.geometry)

    acts = tuple(getattr(nn, name) for name in (
        "ReLU", "ReLU6", "GELU", "SiLU", "Sigmoid", "Tanh", "LeakyReLU", "ELU", "CELU", "Hardswish", "Hardsigmoid",
        "Mish", "Softplus", "Hardtanh", "PReLU", "SELU", "Softsign", "Softmax", "LogSoftmax", "Dropout", "Dropout1d",
        "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "GroupNorm", "LayerNorm", "InstanceNorm1d",
        "InstanceNorm2d", "InstanceNorm3d") if hasattr(nn, name))
    maxpools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    adaptive = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}
    return PoolAsAverage, acts, maxpools, adaptive


def swap_module(module):
    """The structural stand-in for one module, or None to keep it."""
    import torch.nn as nn

    PoolAsAverage, acts, maxpools, adaptive = _classes()
    if isinstance(module, acts):
        return nn.Identity()
    if isinstance(module, maxpools):
        return PoolAsAverage(module)
    if type(module) in adaptive:
        return adaptive[type(module)](module.output_size)
    return None


def make_structural(model):
    """Turn `model` (in place) into its gradient-support version and return it: swapped modules, constant
    positive weights, zero biases, float64, eval mode. A spec model's `paths` (row -> module) follows
    the swaps, so hooks land on the new modules. Pass a copy (copy.deepcopy) to keep the original."""
    import torch

    swapped = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = swapped[child] if child in swapped else swap_module(child)
            if new is not None:
                swapped[child] = new
                setattr(parent, name, new)
    paths = getattr(model, "paths", None)
    if isinstance(paths, dict):
        for path, module in list(paths.items()):
            paths[path] = swapped.get(module, module)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() >= 2:
                p.fill_(1.0 / max(p[0].numel(), 1))
            else:
                p.fill_(1.0)
        for m in model.modules():
            if type(m).__name__ == "DeformConvBlock":  # offsets 0: the nominal kernel grid
                for p in m.offset.parameters():
                    p.zero_()
    return model.double().eval()


def function_name(target) -> str:
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


def structural_call(kind: str, target, args, kwargs):
    """The structural version of an fx call_function / call_method node, or NotImplemented to run the
    original (convolutions, joins, reshapes...)."""
    import re

    import torch.nn.functional as F

    name = function_name(target)
    if name in ACT_FUNCTIONS:
        return args[0] if args else kwargs.get("input")
    m = re.fullmatch(r"max_pool([123])d(_with_indices)?", name)
    if m and kind == "call_function":
        if _arg(args, kwargs, 6, "return_indices", False):
            return NotImplemented
        return pool_as_average(args[0], _arg(args, kwargs, 1, "kernel_size"), _arg(args, kwargs, 2, "stride"),
                               _arg(args, kwargs, 3, "padding", 0), _arg(args, kwargs, 4, "dilation", 1),
                               _arg(args, kwargs, 5, "ceil_mode", False))
    m = re.fullmatch(r"adaptive_max_pool([123])d", name)
    if m and kind == "call_function":
        pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[int(m.group(1)) - 1]
        return pool(args[0], _arg(args, kwargs, 1, "output_size"))
    if name in ("amax", "max") and len(args) + len(kwargs) > 1:
        x = args[0]
        dims = _arg(args, kwargs, 1, "dim")
        if isinstance(dims, (list, tuple)) or name == "amax":
            return x.mean(dims, keepdim=bool(_arg(args, kwargs, 2, "keepdim", False)))
    return NotImplemented


__all__ = ["make_structural", "pool_as_average", "structural_call", "swap_module"]
