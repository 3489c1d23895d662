"""The PyTorch front-end: an `nn.Module` traced with torch.fx → the same network graph a spec makes.

Modules and functions map onto registry types (one table each below); the registry then decides every
fact (shapes, params, MACs, RF, kinds) exactly as for a spec. Two cross-checks guard against a wrong
table: every node's analysed output shape must equal the shape torch computed for it (a forward pass
on zeros), and the analysed parameter total must equal the model's own count of the parameters its
forward uses. Anything that cannot be mapped or traced is an error naming the module and the reason.
Loading the model (`FILE.py:NAME`, `--input`) is `convcli.torch_load`.
"""

from __future__ import annotations

import contextlib
import re
import sys
from math import prod
from typing import NamedTuple

from convcli.errors import ConvcliError
from convcli.graph import INPUT, Graph
from convcli.layers.registry import ACTIVATIONS, Where, lookup, normalize
from convcli.torch_load import MODEL_REF, load_module, parse_input, relative_path
from convcli.torch_trace import (
    BATCH,
    defaulted_args,
    dtype_device,
    first_user_line,
    propagate_shapes,
    sizes_known_tracer,
    trace_failure,
    user_frame,
)

# --------------------------------------------------------------------------- modules → registry types


def _t(v):
    """An int or per-axis tuple as a spec value (a list for tuples)."""
    return list(v) if isinstance(v, (tuple, list)) else v


class Traced(NamedTuple):
    """A module call's traced shapes (C first, no batch axis), handed to its mapper: the mappings that depend
    on them (an upsampling's factors, a softmax's axis, a LayerNorm's extent) are decided there."""

    inp: tuple | None
    out: tuple | None


def _conv(m, io):
    pad = m.padding if isinstance(m.padding, str) else _t(m.padding)
    return "conv", {"out": m.out_channels, "k": _t(m.kernel_size), "s": _t(m.stride), "p": pad,
                    "d": _t(m.dilation), "g": m.groups, "bias": m.bias is not None, "pad_mode": m.padding_mode}


def _convt(m, io):
    return "convtranspose", {"out": m.out_channels, "k": _t(m.kernel_size), "s": _t(m.stride), "p": _t(m.padding),
                             "output_padding": _t(m.output_padding), "d": _t(m.dilation), "g": m.groups,
                             "bias": m.bias is not None}


def _bn(m, io):
    return "batchnorm", {"eps": m.eps, "momentum": 0.1 if m.momentum is None else m.momentum, "affine": m.affine}


def _pool(kind):
    def f(m, io):
        a = {"k": _t(m.kernel_size), "s": _t(m.stride if m.stride is not None else m.kernel_size),
             "p": _t(m.padding), "ceil": m.ceil_mode}
        if kind == "maxpool":
            if m.return_indices:
                raise _Unsupported("return_indices=True returns a tuple")
            a["d"] = _t(m.dilation)
        else:
            a["count_include_pad"] = getattr(m, "count_include_pad", True)
        return kind, a
    return f


def _adaptive(kind):
    return lambda m, io: (kind, {"size": _t(m.output_size)})


def _act(name, **extra):
    return lambda m, io: (name, {k: getattr(m, attr) for k, attr in extra.items()})


def _pad(m, io):
    mode = {"ConstantPad": "zeros", "ZeroPad": "zeros", "ReflectionPad": "reflect", "ReplicationPad": "replicate",
            "CircularPad": "circular"}[re.sub(r"\dd$", "", type(m).__name__)]
    return "pad", _pad_sides(m.padding, len(m.padding) // 2, mode, getattr(m, "value", 0))


# F.pad's mode names -> the pad layer's
PAD_MODES = {"constant": "zeros", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _pad_sides(padding, nd: int, mode: str, value=0) -> dict:
    """torch's padding tuple (last axis first: left, right, top, bottom, ...) as the pad layer's keys for
    nd spatial axes; a tuple for fewer axes pads only the last ones (F.pad(x, (1, 1)) pads W only)."""
    padding = [int(p) for p in padding]
    if nd == 0:
        raise _Unsupported(f"padding {tuple(padding)} of a vector: only the spatial axes of a map are padded")
    if len(padding) % 2 or len(padding) > 2 * nd:
        raise _Unsupported(f"padding {tuple(padding)}: only (before, after) pairs for the {nd} spatial axes "
                           "(not the channel or batch axis) are supported")
    if any(p < 0 for p in padding):
        raise _Unsupported(f"padding {tuple(padding)}: negative padding (a crop) is not supported")
    if mode == "zeros" and value not in (0, None):
        raise _Unsupported("constant padding with a non-zero value")
    pairs = [padding[2 * i: 2 * i + 2] for i in range(len(padding) // 2)][::-1]
    pairs = [[0, 0]] * (nd - len(pairs)) + pairs
    return {"before": [p[0] for p in pairs], "after": [p[1] for p in pairs], "mode": mode}


def _softmax(name):
    def mapper(m, io):
        if not softmax_dim_ok(m.dim, io.out):
            raise _Unsupported(f"{type(m).__name__}(dim={m.dim}) on a {list(io.out)} tensor: only a softmax over "
                               "the channel axis (dim=1) is supported")
        return name, {}
    return mapper


def softmax_dim_ok(dim, shape) -> bool:
    """Over the channel axis: dim 1, its negative form (-3 for [C, H, W], -1 for a [C] vector), or None
    (torch's legacy default, the channel axis from 2-D up). A softmax over H or W mixes a whole row."""
    return dim in (1, None) or (shape is not None and dim == -len(shape))


def _upsample(m, io):
    if m.align_corners:
        raise _Unsupported(ALIGN_CORNERS)
    # the factors per axis come from the traced shapes (size= or scale_factor=)
    return "upsample", {"scale": upsample_factors(io.inp, io.out, m.scale_factor, m.recompute_scale_factor),
                        "mode": m.mode}


def upsample_factors(in_shape, out_shape, scale_factor=None, recompute=None):
    """The whole-number factor per spatial axis of an upsampling from `in_shape` to `out_shape` (C first):
    one number when the axes agree. Given by size= or scale_factor= alike; torch samples at (o + 1/2)/f - 1/2
    either way, unless a scale_factor is not the size ratio (2.1 on 4 pixels gives 8 pixels sampled at 1/2.1)."""
    from fractions import Fraction

    ratios = [Fraction(o, i) for i, o in zip(in_shape[1:], out_shape[1:])]
    if any(r.denominator != 1 for r in ratios):
        sizes = "x".join(map(str, in_shape[1:])) + " to " + "x".join(map(str, out_shape[1:]))
        what = "downsampling" if any(r < 1 for r in ratios) else "upsampling"
        raise _Unsupported(f"{what} {sizes} (factors {', '.join(str(r) for r in ratios)}): only whole-number "
                           "upsampling factors per axis are supported")
    factors = [int(r) for r in ratios]
    if scale_factor is not None and not recompute:
        asked = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor] * len(factors)
        if [float(f) for f in asked] != [float(f) for f in factors]:
            raise _Unsupported(f"scale_factor {scale_factor} is not a whole number per axis: torch samples at "
                               "that scale, which convcli's upsample does not")
    return factors[0] if len(set(factors)) == 1 else factors


# align_corners=True samples other input positions (o*(n-1)/(m-1)): other values and another RF than convcli's
ALIGN_CORNERS = "upsampling with align_corners=True is not supported (convcli's upsample is align_corners=False)"


def _unflattens(in_shape, out_shape) -> bool:
    """(C,) or (C, 1) -> (C, 1, 1): more unit axes after the channels, nothing else changed."""
    return bool(in_shape and out_shape) and len(out_shape) > len(in_shape) and out_shape[0] == in_shape[0] \
        and set(in_shape[1:]) <= {1} and set(out_shape[1:]) == {1}


def _unit_index(index, in_shape, out_shape) -> bool:
    """y[:, :, 0, 0] (or y[..., 0, 0], -1 for 0) of a (C, 1, 1) map: every channel of the one position,
    the same values as a flatten."""
    if not (isinstance(index, tuple) and in_shape and out_shape == in_shape[:1] and set(in_shape[1:]) == {1}):
        return False
    whole = slice(None)
    head = [whole, whole] if index[:1] != (Ellipsis,) else [Ellipsis]
    rest = list(index[len(head):])
    return list(index[:len(head)]) == head and len(rest) == len(in_shape) - 1 and all(
        type(i) is int and i in (0, -1) for i in rest)


def _layernorm(m, io):
    if m.elementwise_affine and m.bias is None:
        raise _Unsupported("LayerNorm(bias=False): convcli's layernorm has a scale and a bias, or neither")
    if io.inp is None or len(io.inp) != 1 or tuple(m.normalized_shape) != tuple(io.inp):
        raise _Unsupported(f"LayerNorm({list(m.normalized_shape)}) on a {list(io.inp or ())} tensor: convcli's "
                           "layernorm normalises a feature vector (LayerNorm(C) after flatten/GAP) or, in a spec, "
                           "the channels at each position (GroupNorm(1, C) normalises a whole map, with a scale "
                           "per channel)")
    return "layernorm", {"eps": m.eps, "affine": m.elementwise_affine}


def _lossy_module(m) -> str | None:
    """What a module does that its registry layer does not say (see Node.lossy), or None."""
    import torch.nn as nn

    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if not m.track_running_stats:
            return "BatchNorm with track_running_stats=False (batch statistics at evaluation too)"
        if m.momentum is None:
            return "BatchNorm with momentum=None (a cumulative average)"
    if getattr(m, "divisor_override", None):
        return f"{type(m).__name__}(divisor_override={m.divisor_override})"
    return None


def _split_name(node) -> str | None:
    """'chunk' or 'split' for x.chunk(...), torch.split(x, ...) and the like; else None."""
    if node.op not in ("call_method", "call_function"):
        return None
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return name if name in ("chunk", "split") else None


def _split_pieces(node, name: str, shape) -> list[tuple[int, int]]:
    """The (start, stop) channel range of each piece, as torch cuts them: chunk(n) in pieces of ceil(C/n),
    split(s) in pieces of s, split([a, b, ...]) in those sizes. Only along the channel axis."""
    dim = _concrete(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0))
    if dim not in (1, -len(shape)):
        raise _Unsupported(f"{name} along dim {dim}: only a channel split (dim=1) is supported")
    c = shape[0]
    arg = _concrete(node.args[1] if len(node.args) > 1 else
                    node.kwargs.get("chunks" if name == "chunk" else "split_size_or_sections"))
    if name == "chunk":
        arg = -(-c // arg)
    sizes = list(arg) if isinstance(arg, (list, tuple)) else [arg] * -(-c // arg)
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    return [(a, min(b, c)) for a, b in zip(bounds, bounds[1:]) if a < c]


def _channel_slice(index, shape) -> tuple[int, int] | None:
    """x[:, a:b] (also x[:, a:b, ...] or with whole slices after): channels a..b-1 of a map; else None."""
    if not (isinstance(index, tuple) and len(index) >= 2 and shape and len(shape) >= 2):
        return None
    whole = slice(None)
    first, chan, *rest = index
    if first != whole or not isinstance(chan, slice) or chan.step not in (None, 1) or \
            not all(r == whole or r is Ellipsis for r in rest) or chan == whole:
        return None
    if not all(v is None or type(v) is int for v in (chan.start, chan.stop)):
        return None
    start, stop, _ = chan.indices(shape[0])
    return (start, stop) if start < stop else None


def _unflatten_module(m, io):
    size = tuple(m.unflattened_size)
    if m.dim != 1 or set(size[1:]) != {1}:
        raise _Unsupported(f"Unflatten(dim={m.dim}, {size}): only a vector as a 1x1 map, (C,) -> (C, 1, 1)")
    return "unflatten", {"axes": len(size) - 1}


def _flatten_module(m, io):
    if m.start_dim != 1 or m.end_dim != -1:
        raise _Unsupported(f"Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}): only start_dim=1")
    return "flatten", {}


def module_table():
    import torch.nn as nn

    from convcli.layers.act import ACT_PARAMS, act_modules

    table = {
        **{c: _conv for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d)},
        **{c: _convt for c in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)},
        **{c: _bn for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)},
        nn.GroupNorm: lambda m, io: ("groupnorm", {"groups": m.num_groups, "eps": m.eps, "affine": m.affine}),
        nn.Linear: lambda m, io: ("linear", {"out": m.out_features, "bias": m.bias is not None}),
        **{c: _pool("maxpool") for c in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)},
        **{c: _pool("avgpool") for c in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)},
        **{c: _adaptive("adaptiveavgpool") for c in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                                                     nn.AdaptiveAvgPool3d)},
        **{c: _adaptive("adaptivemaxpool") for c in (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                                                     nn.AdaptiveMaxPool3d)},
        **{cls: _act(name, **{p.name: kw for p, kw in ACT_PARAMS.get(name, ())})
           for name, cls in act_modules().items()},
        **{c: (lambda m, io: ("dropout", {"p": m.p})) for c in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                                                            nn.AlphaDropout)},
        nn.Softmax: _softmax("softmax"), nn.LogSoftmax: _softmax("log_softmax"),
        nn.Flatten: _flatten_module,
        nn.Unflatten: _unflatten_module,
        nn.Upsample: _upsample,
        nn.PixelShuffle: lambda m, io: ("pixelshuffle", {"r": m.upscale_factor}),
        nn.PReLU: lambda m, io: ("prelu", {"per_channel": m.num_parameters > 1, "init": float(m.init)}),
        nn.ChannelShuffle: lambda m, io: ("channelshuffle", {"groups": m.groups}),
        nn.LayerNorm: _layernorm,
    }
    for name in ("ConstantPad", "ZeroPad", "ReflectionPad", "ReplicationPad", "CircularPad"):
        for nd in (1, 2, 3):
            cls = getattr(nn, f"{name}{nd}d", None)
            if cls is not None:
                table[cls] = _pad
    return table


class _Unsupported(Exception):
    """A module or call convcli cannot map (becomes a ConvcliError naming the node)."""


class ModelError(ConvcliError):
    """A model convcli cannot analyse, named by its file, line and node (not wrapped again)."""


# --------------------------------------------------------------------------- functions → registry types

# F.relu, torch.sigmoid, x.tanh(), ...: the registry's activation names, which are also torch's function names.
ACT_FUNCS = {name: name for name in ACTIVATIONS if name != "identity"}
PASS_METHODS = {"contiguous", "clone", "float", "to", "detach", "type_as", "requires_grad_"}
RESHAPES = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}


def _arg(node, i, name, default=None):
    value = node.args[i] if len(node.args) > i else node.kwargs.get(name, default)
    return _concrete(value)


def _concrete(value):
    """An argument computed from a shape (F.avg_pool2d(x, x.size()[2:]), x.view(x.size(0), -1)) is the
    number it was in the shape run; other nodes stay nodes."""
    if isinstance(value, (list, tuple)):
        return type(value)(_concrete(v) for v in value)
    meta = getattr(value, "meta", None)
    return meta["value"] if isinstance(meta, dict) and "value" in meta else value


# --------------------------------------------------------------------------- tracing


def trace_graph(model, input_shape: tuple[int, ...], source: str, name: str | None = None) -> Graph:
    """Trace `model` with torch.fx and map it onto the registry: the graph of a spec, from a module."""
    import torch
    import torch.fx

    if isinstance(model, torch.jit.ScriptModule):  # fx cannot see inside TorchScript
        raise ConvcliError(f"{source}: a TorchScript module (torch.jit.script/trace) cannot be analysed; pass the "
                           "nn.Module it was made from")
    was_training = model.training
    model.eval()  # trace the inference graph (GoogLeNet's aux heads, dropout) and leave BN stats alone
    try:
        tracer = torch.fx.Tracer()
        tracer.record_stack_traces = True
        note = None
        try:
            fx = tracer.trace(model, concrete_args=defaulted_args(model))
        except Exception as exc:
            # A branch on the input's shape (`if x.shape[-1] > 16:`) is decided for --input's shape: trace
            # again with each size known. A branch on values still fails, with the first failure's message.
            tracer = sizes_known_tracer(torch.zeros(BATCH, *input_shape, **dtype_device(model)))
            try:
                fx = tracer.trace(model, concrete_args=defaulted_args(model))
            except Exception:
                raise ConvcliError(trace_failure(model, source, exc)) from None
            note = (f"the forward reads the input's sizes as numbers ({first_user_line(exc)}): this analysis "
                    f"holds for an input of {list(input_shape)}, and the branches the forward takes for it")
        gm = torch.fx.GraphModule(model, fx)
        propagate_shapes(gm, input_shape, source)
        graph = _Mapper(model, gm, tuple(input_shape), source, name or type(model).__name__).run()
        if note:
            graph.notes.append(note)
        return graph
    finally:
        model.train(was_training)


class _Mapper:
    def __init__(self, model, gm, input_shape, source, name):
        self.model, self.gm, self.source = model, gm, source
        self.graph = Graph(name=name, source=source, input=input_shape)
        self.ids: dict = {}  # fx node -> graph node id (or INPUT); aliases share an id
        self.modules_table = module_table()
        self.first_call: dict[str, int] = {}  # module path -> the node of its first call
        self.calls: dict[str, int] = {}
        self.merged: dict = {}  # x.view(b, c, -1) of a map: its fx node -> the map's (only a full reduction follows)
        self.partial: dict = {}  # x.mean(-1) of a map: its fx node -> (the map's, mean, keepdim) until the rest
        # ShuffleNet's channel_shuffle: x.view(b, g, c // g, h, w) -> its fx node -> (the map's, g, transposed)
        # until a view back to (b, c, h, w), which is a shuffle if the two channel axes were transposed
        self.grouped: dict = {}
        self.group_stack: list = []  # open groups: (module path, group)
        self.module_types = {n: type(m) for n, m in model.named_modules()}
        # Names for the top-level children (`convcli export` writes them: the spec's C1..O labels), else their own.
        labels = getattr(model, "block_labels", None)
        self.block_labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    # -- helpers
    def shape(self, fx_node) -> tuple[int, ...]:
        meta = fx_node.meta.get("tensor_meta")
        return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None

    def where(self, fx_node, path):
        file, line = user_frame(fx_node.stack_trace)
        return Where(file or self.source, line, path)

    def fail(self, fx_node, msg):
        # a function call is named inside the module that makes it (features.1.0.stochastic_depth)
        scope = self.scope(fx_node)
        path = fx_node.target if fx_node.op == "call_module" else ".".join([*scope[-1:], fx_node.name])
        w = self.where(fx_node, str(path))
        loc = f"{relative_path(w.file)}:{w.line}" if w.line else self.source
        return ModelError(f"{loc}: {path}: {msg}")

    def scope(self, fx_node) -> list[str]:
        stack = fx_node.meta.get("nn_module_stack") or {}
        paths = [v[0] if isinstance(v, tuple) else k for k, v in stack.items()]
        if fx_node.op == "call_module" and paths and paths[-1] == fx_node.target:
            paths = paths[:-1]  # the leaf module itself is the node, not a group
        return [p for p in paths if p]

    def open_groups(self, scope: list[str]):
        """Close the groups the node is not in, open the submodules it is in (a header row each)."""
        keep = 0
        while keep < min(len(self.group_stack), len(scope)) and self.group_stack[keep][0] == scope[keep]:
            keep += 1
        del self.group_stack[keep:]
        for path in scope[keep:]:
            depth = len(self.group_stack)
            g = self.graph.add_group(path=path, type=self.module_types.get(path, type(None)).__name__, depth=depth,
                                     label=self.block_labels.get(path, path) if depth == 0 else None,
                                     where=Where(self.source, None, path))
            self.group_stack.append((path, g))

    def add(self, fx_node, type_name: str, registry: str, raw: dict, inputs, role="layer", path=None,
            shares=None, module=None, final=True, lossy=None):
        entry = lookup(registry)
        scope = self.scope(fx_node)
        self.open_groups(scope)
        if path is None:
            path = ".".join([*scope[-1:], fx_node.name]) if scope else fx_node.name
        where = self.where(fx_node, path)
        in_shapes = [self.graph.input if i == INPUT else self.out_shapes[i] for i in inputs]
        if role == "join":
            args, _ = normalize(entry, {**raw, "branches": []}, where)
            facts = entry.join(args, in_shapes, where)
        else:
            args, _ = normalize(entry, raw, where)
            args = entry.resolve(args, in_shapes[0], where)
            facts = entry.infer(args, in_shapes[0], where)
        depth = len(self.group_stack)
        label = self.block_labels.get(path, path) if depth == 0 and module else None
        node = self.graph.add_node(path=path, type=type_name, entry=entry, args=args, inputs=tuple(inputs),
                                   depth=depth, label=label, where=where, role=role,
                                   shares=shares, module=module, raw=dict(raw), lossy=lossy)
        for _, g in self.group_stack:
            g.nodes.append(node.id)
        self.out_shapes[node.id] = tuple(facts.out_shape)
        torch_shape = self.shape(fx_node) if final else None  # a first step of several has no torch shape
        # one number per sample (a critic's x.view(-1)): torch's () is convcli's [1], the same single value
        if torch_shape is not None and torch_shape != tuple(facts.out_shape) and \
                not (torch_shape == () and tuple(facts.out_shape) == (1,)):
            raise self.fail(fx_node, f"convcli computes output shape {list(facts.out_shape)} but torch gives "
                                     f"{list(torch_shape)}; please report this model")
        return node.id

    def tensor_inputs(self, fx_node, *nodes):
        import torch.fx

        out = []
        for a in nodes:
            if isinstance(a, torch.fx.Node):
                if a not in self.ids:
                    raise self.fail(fx_node, f"reads {a.name}, which is not a tensor convcli follows")
                out.append(self.ids[a])
        return out

    # -- the walk
    def run(self) -> Graph:
        import torch.fx

        self.out_shapes: dict[int, tuple] = {}
        # an argument traced at its default (see defaulted_args) is a placeholder holding that default
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder" and not n.args]
        if len(placeholders) != 1:
            raise ConvcliError(f"{self.source}: forward takes {len(placeholders)} inputs; convcli analyses models "
                               "with one input tensor")
        for n in self.gm.graph.nodes:
            try:
                self.visit(n)
            except _Unsupported as exc:
                raise self.fail(n, str(exc)) from None
            except ModelError:
                raise
            except ConvcliError as exc:  # the registry refused the mapped layer: say which node it was
                raise self.fail(n, getattr(exc, "message", str(exc))) from None
        out = [n for n in self.gm.graph.nodes if n.op == "output"][0]
        result = out.args[0]
        if not isinstance(result, torch.fx.Node) or result not in self.ids or self.ids[result] == INPUT:
            kind = {"immutable_dict": "a dict", "dict": "a dict", "tuple": "a tuple", "list": "a list",
                    "immutable_list": "a list"}.get(type(result).__name__)
            unchanged = isinstance(result, torch.fx.Node) and self.ids.get(result) == INPUT
            got = (f"it returns {kind}: return the logits alone, or wrap the model in one that does" if kind else
                   "it returns the input unchanged" if unchanged else f"got {type(result).__name__}")
            raise ConvcliError(f"{self.source}: forward must return one tensor computed from the input ({got})")
        self.graph.output = self.ids[result]
        self.check_params()
        return self.graph

    def visit(self, n):
        if n.op == "placeholder":
            if not n.args:  # the input (not an argument at its default)
                self.ids[n] = INPUT
        elif n.op == "get_attr":
            if self.shape(n) is not None:
                kind = "buffer" if n.target in dict(self.gm.named_buffers()) else "parameter"
                raise _Unsupported(f"uses the {kind} self.{n.target} directly; convcli follows layers "
                                   f"(nn.Conv2d, nn.Linear, ...), not tensors used in forward")
        elif n.op == "call_module":
            self.call_module(n)
        elif n.op in ("call_function", "call_method"):
            if self.shape(n) is None:
                return  # a size, a shape, an int: not data flow
            self.call_function(n)

    def call_module(self, n):
        import torch.fx

        m = self.gm.get_submodule(n.target)
        mapper = self.modules_table.get(type(m))
        if mapper is None:
            raise _Unsupported(f"{type(m).__module__}.{type(m).__name__} is not a layer convcli can map onto its "
                               "types (see `convcli layers`); write it as supported layers, or analyse a YAML spec")
        reparam = [type(h).__name__ for h in m._forward_pre_hooks.values()
                   if type(h).__name__ in ("WeightNorm", "SpectralNorm")]
        if reparam:  # the weight is recomputed from other parameters (weight_g/weight_v, weight_orig) each call
            names = ", ".join(n for n, _ in m.named_parameters(recurse=False))
            util = "weight_norm" if reparam[0] == "WeightNorm" else "spectral_norm"
            raise _Unsupported(f"{type(m).__name__} under torch.nn.utils.{util} holds {names} instead of its own "
                               f"weight, which convcli's layers count; analyse the network without {util}")
        in_shape = self.shape(n.args[0]) if isinstance(n.args[0], torch.fx.Node) else None
        registry, raw = mapper(m, Traced(in_shape, self.shape(n)))
        inputs = self.tensor_inputs(n, n.args[0])
        count = self.calls.get(n.target, 0) + 1
        self.calls[n.target] = count
        # A second call of a module with weights shares them (a parameter-free ReLU called twice does not matter).
        shares = self.first_call.get(n.target) if any(True for _ in m.parameters()) else None
        path = n.target if count == 1 else f"{n.target}[call {count}]"
        self.ids[n] = self.add(n, type(m).__name__, registry, raw, inputs, path=path, shares=shares,
                               module=n.target, lossy=_lossy_module(m))
        self.first_call.setdefault(n.target, self.ids[n])

    def call_function(self, n):
        import operator

        import torch

        fname = getattr(n.target, "__name__", str(n.target)) if n.op == "call_function" else n.target
        fname = fname.rstrip("_")  # in-place forms (relu_, add_) compute the same values
        x = n.args[0] if n.args else None

        if n.target is operator.getitem and isinstance(x, torch.fx.Node) and _split_name(x) and \
                isinstance(n.args[1], int):  # x1, x2 = x.chunk(2, dim=1): each piece a range of channels
            src = x.args[0]
            start, stop = _split_pieces(x, _split_name(x), self.shape(src))[n.args[1]]
            self.ids[n] = self.add(n, "getitem", "channels", {"start": start, "stop": stop},
                                   self.tensor_inputs(n, src))
            return
        if n.target is operator.getitem and isinstance(x, torch.fx.Node) and x in self.ids and \
                _channel_slice(n.args[1], self.shape(x)) is not None:  # x[:, 8:16]
            start, stop = _channel_slice(n.args[1], self.shape(x))
            self.ids[n] = self.add(n, "getitem", "channels", {"start": start, "stop": stop},
                                   self.tensor_inputs(n, x))
            return
        if n.target is operator.getitem and isinstance(x, torch.fx.Node) and x in self.ids and \
                _unflattens(self.shape(x), self.shape(n)):  # y[:, :, None, None]
            self.ids[n] = self.add(n, "getitem", "unflatten", {"axes": len(self.shape(n)) - 1},
                                   self.tensor_inputs(n, x))
            return
        if n.target is operator.getitem and isinstance(x, torch.fx.Node) and x in self.ids and \
                _unit_index(n.args[1], self.shape(x), self.shape(n)):  # y[:, :, 0, 0] of a 1x1 map
            self.ids[n] = self.add(n, "getitem", "flatten", {}, self.tensor_inputs(n, x))
            return
        if fname in ("expand_as", "expand") and isinstance(x, torch.fx.Node) and x in self.ids and \
                len(self.shape(x)) == len(self.shape(n)) and set(self.shape(x)[1:]) == {1}:
            # a 1x1 gate expanded to the map it multiplies: the join broadcasts it anyway (same values)
            self.ids[n] = self.tensor_inputs(n, x)[0]
            return
        if fname in ("add", "iadd", "mul", "imul", "sub", "isub", "truediv", "div") or n.target in (
                operator.add, operator.mul):
            tensors = [a for a in n.args[:2] if isinstance(a, torch.fx.Node) and a in self.ids]
            if len(tensors) == 2 and fname in ("add", "iadd", "mul", "imul"):
                op = "add" if "add" in fname else "mul"
                alpha = n.kwargs.get("alpha", 1)
                self.ids[n] = self.add(n, fname, op, {}, self.tensor_inputs(n, *tensors), role="join",
                                       lossy=f"torch.add(..., alpha={alpha})" if alpha != 1 else None)
                return
            if len(tensors) == 1:  # arithmetic with a constant: element-wise, shape and RF unchanged
                other = next((a for a in n.args[:2] if a is not tensors[0]), None)
                self.ids[n] = self.add(n, fname, "identity", {}, self.tensor_inputs(n, tensors[0]),
                                       lossy=f"{fname} with the constant {_concrete(other)!r:.30}")
                return
            raise _Unsupported(f"{fname} of two tensors: only add and mul joins are supported")
        if fname in ("cat", "concat", "concatenate"):
            parts = n.args[0]
            dim = _arg(n, 1, "dim", 0)
            if not (dim == 1 or dim == -len(self.shape(n))):
                raise _Unsupported(f"cat along dim {dim}: only channel concatenation (dim=1) is supported")
            self.ids[n] = self.add(n, "cat", "concat", {}, self.tensor_inputs(n, *parts), role="join")
            return
        if fname in ACT_FUNCS:
            from convcli.layers.act import ACT_PARAMS

            settings = ACT_PARAMS.get(ACT_FUNCS[fname], ())
            raw = {p.name: _arg(n, i + 1, kw, p.default) for i, (p, kw) in enumerate(settings)}
            self.ids[n] = self.add(n, fname, ACT_FUNCS[fname], raw, self.tensor_inputs(n, x))
            return
        # torchvision's stochastic depth drops whole residual branches while training: a dropout, and at
        # inference the identity (EfficientNet, ConvNeXt, Swin)
        if fname in ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "stochastic_depth"):
            self.ids[n] = self.add(n, fname, "dropout", {"p": _arg(n, 1, "p", 0.5)}, self.tensor_inputs(n, x))
            if fname != "stochastic_depth" and _arg(n, 2, "training", True) is True and _arg(n, 1, "p", 0.5):
                # F.dropout(x, p) without training=self.training drops at evaluation too (a common slip);
                # the spec's and export's nn.Dropout do not
                w = self.where(n, n.name)
                self.graph.notes.append(f"{relative_path(w.file)}:{w.line}: F.{fname} without training=self.training "
                                        "also drops at evaluation; convcli's dropout (nn.Dropout) only in training")
            return
        if fname in ("softmax", "log_softmax"):
            dim = _arg(n, 1, "dim", None)
            if not softmax_dim_ok(dim, self.shape(n)):
                raise _Unsupported(f"{fname} over dim {dim}: only the channel axis (dim=1) is supported")
            self.ids[n] = self.add(n, fname, fname, {}, self.tensor_inputs(n, x))
            return
        if re.fullmatch(r"(max|avg)_pool[123]d", fname):
            kind = "maxpool" if fname.startswith("max") else "avgpool"
            k = _arg(n, 1, "kernel_size")
            s = _arg(n, 2, "stride", None) or k
            raw = {"k": _t(k), "s": _t(s), "p": _t(_arg(n, 3, "padding", 0))}
            if kind == "maxpool":
                raw.update(d=_t(_arg(n, 4, "dilation", 1)), ceil=_arg(n, 5, "ceil_mode", False))
            else:
                raw.update(ceil=_arg(n, 4, "ceil_mode", False), count_include_pad=_arg(n, 5, "count_include_pad", True))
            divisor = _arg(n, 6, "divisor_override", None) if kind == "avgpool" else None
            self.ids[n] = self.add(n, fname, kind, raw, self.tensor_inputs(n, x),
                                   lossy=f"divisor_override={divisor}" if divisor else None)
            return
        if re.fullmatch(r"adaptive_(max|avg)_pool[123]d", fname):
            kind = "adaptivemaxpool" if "max" in fname else "adaptiveavgpool"
            self.ids[n] = self.add(n, fname, kind, {"size": _t(_arg(n, 1, "output_size"))}, self.tensor_inputs(n, x))
            return
        if fname in ("mean", "amax", "max") and x is not None:
            self.reduce(n, fname, x)
            return
        if fname in RESHAPES:
            self.reshape(n, fname, x)
            return
        if x in self.grouped:  # between the view to (g, C/g, ...) and the view back
            src, g, swapped = self.grouped[x]
            dims = [_arg(n, i, name) for i, name in ((1, "dim0"), (2, "dim1"))] if fname in ("transpose", "swapaxes") \
                else list(n.args[1:]) if fname == "permute" else None
            if fname in PASS_METHODS:
                self.grouped[n] = self.grouped[x]
                return
            if fname == "permute" and len(dims) == 1 and isinstance(dims[0], (list, tuple)):
                dims = list(dims[0])
            rank = len(self.shape(x)) + 1
            if dims is not None and (sorted(d % rank for d in dims[:2]) == [1, 2] if fname != "permute" else
                                     [d % rank for d in dims] == [0, 2, 1, *range(3, rank)]):
                self.grouped[n] = (src, g, not swapped)
                return
            raise _Unsupported(f"{fname} of a map viewed as {g} channel groups: only the transpose of a channel "
                               "shuffle (then a view back) is supported")
        if fname == "channel_shuffle":  # torch.channel_shuffle(x, g) / F.channel_shuffle
            self.ids[n] = self.add(n, fname, "channelshuffle", {"groups": _arg(n, 1, "groups")},
                                   self.tensor_inputs(n, x))
            return
        if fname in PASS_METHODS:
            self.ids[n] = self.tensor_inputs(n, x)[0]  # no new row: the same values
            return
        if fname == "pad" and n.op == "call_function":  # F.pad(x, (l, r, t, b), mode, value)
            mode = _arg(n, 2, "mode", "constant")
            if mode not in PAD_MODES:
                raise _Unsupported(f"F.pad mode {mode!r}: only {', '.join(PAD_MODES)} are supported")
            raw = _pad_sides(_arg(n, 1, "pad"), len(self.shape(n)) - 1, PAD_MODES[mode], _arg(n, 3, "value", None))
            self.ids[n] = self.add(n, fname, "pad", raw, self.tensor_inputs(n, x))
            return
        if fname == "interpolate":  # F.interpolate(x, size, scale_factor, mode, align_corners, recompute...)
            if _arg(n, 4, "align_corners", None):
                raise _Unsupported(ALIGN_CORNERS)
            mode = _arg(n, 3, "mode", "nearest")
            if mode not in ("nearest", "linear", "bilinear", "trilinear"):
                raise _Unsupported(f"interpolation mode {mode!r}: only nearest and (bi/tri)linear are supported")
            scale = upsample_factors(self.shape(x), self.shape(n), _arg(n, 2, "scale_factor"),
                                     _arg(n, 5, "recompute_scale_factor", None))
            raw = {"scale": scale, "mode": mode}
            self.ids[n] = self.add(n, fname, "upsample", raw, self.tensor_inputs(n, x))
            return
        if n.target is operator.getitem:
            src = x.target if isinstance(x, torch.fx.Node) and x.op == "call_method" else \
                getattr(getattr(x, "target", None), "__name__", None)
            if src in ("max", "min"):  # x.max(dim=2)[0]: values and indices
                raise _Unsupported(f"x.{src}(dim)[0]: a {src} over an axis returns values and indices; write "
                                   f"x.amax(dims) for a global max pool over the spatial axes")
            raise _Unsupported(f"indexing with {_concrete(n.args[1])!r:.60}: only a range of channels (x[:, a:b]) "
                               "and the one position of a 1x1 map (x[:, :, 0, 0]) are layers convcli maps")
        if fname in ("sum", "nansum"):
            raise _Unsupported(f"{fname}: a sum over positions is no layer of convcli's; for global average pooling "
                               "write x.mean((2, 3)) (not x.sum((2, 3)) / (h * w))")
        raise _Unsupported(f"the operation '{fname}' is not one convcli maps onto its layers")

    def reduce(self, n, fname, x):
        """x.mean((2, 3)) over every spatial axis is global average pooling (amax: global max), and so is
        x.view(b, c, -1).mean(2) over the merged axis."""
        dims = _arg(n, 1, "dim")
        keep = _arg(n, 2, "keepdim", False)
        if x in self.merged:
            if dims not in (2, -1, [2], [-1], (2,), (-1,)) or keep:
                raise _Unsupported(f"{fname} over dims {dims} of a view that merges the spatial axes: only the "
                                   "merged axis without keepdim (x.view(b, c, -1).mean(2)) is supported")
            x = self.merged[x]
            dims = list(range(2, len(self.shape(x)) + 1))
        in_shape = self.shape(x) if hasattr(x, "meta") else None
        nd = len(in_shape) - 1 if in_shape else 0
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        spatial = sorted(d % (nd + 2) for d in dims)
        base = self.partial.get(x)
        if base is not None and base[1:] != (fname, bool(keep)):
            raise _Unsupported(f"{fname} after a {base[1]} over other spatial axes: only the same reduction "
                               "over every spatial axis (global pooling) is supported")
        if nd >= 1 and spatial and set(spatial) < set(range(2, nd + 2)) and fname in ("mean", "amax") and not keep:
            # x.mean(-1).mean(-1): a reduction over some spatial axes, global pooling once the rest follow
            self.partial[n] = (base[0] if base else x, fname, bool(keep))
            return
        if nd < 1 or spatial != list(range(2, nd + 2)):
            raise _Unsupported(f"{fname} over dims {dims}: only a reduction over every spatial axis (global "
                               "pooling) is supported")
        if base is not None:  # the rest of x.mean(-1).mean(-1): global pooling of the map it started from
            x = base[0]
        src = self.tensor_inputs(n, x)
        if fname == "mean":
            self.ids[n] = self.add(n, fname, "gap", {"keepdim": bool(keep)}, src)
            return
        pooled = self.add(n, fname, "adaptivemaxpool", {"size": 1}, src,
                          path=None if keep else f"{n.name}.pool", final=keep)
        self.ids[n] = pooled if keep else self.add(n, fname, "flatten", {}, [pooled])

    def reshape(self, n, fname, x):
        """view/reshape/flatten/squeeze: an identity when the shape is kept, a flatten when the result is
        one vector per sample; anything else (mixing the batch axis, 2-D → 3-D) is not a layer."""
        in_shape, out_shape = self.shape(x), self.shape(n)
        if x in self.grouped:  # the view back of a channel shuffle (or of an untouched grouping: the same map)
            src, g, swapped = self.grouped[x]
            if out_shape != self.shape(src):
                raise _Unsupported(f"{fname} {list(in_shape)} -> {list(out_shape)} of a map viewed as {g} channel "
                                   f"groups: only the view back to {list(self.shape(src))} is supported")
            inputs = self.tensor_inputs(n, src)
            self.ids[n] = self.add(n, "channel_shuffle", "channelshuffle", {"groups": g}, inputs) if swapped \
                else inputs[0]
            return
        meta_in, meta_out = x.meta.get("tensor_meta"), n.meta.get("tensor_meta")
        if out_shape == () and prod(in_shape) == 1 and meta_in.shape[0] == meta_out.shape[0]:
            # x.view(-1) of one value per sample (a GAN critic's score): convcli's vector of one
            src = self.tensor_inputs(n, x)
            self.ids[n] = src[0] if in_shape == (1,) else self.add(n, fname, "flatten", {}, src)
            return
        if len(out_shape) == len(in_shape) + 1 >= 3 and out_shape[0] * out_shape[1] == in_shape[0] and \
                min(out_shape[:2]) > 1 and out_shape[2:] == in_shape[1:] and meta_in.shape[0] == meta_out.shape[0]:
            self.grouped[n] = (x, out_shape[0], False)  # x.view(b, g, c // g, h, w): a channel shuffle's start
            return
        if meta_in.shape[0] != meta_out.shape[0]:
            raise _Unsupported(f"{fname} changes the batch axis ({list(meta_in.shape)} -> {list(meta_out.shape)})")
        src = self.tensor_inputs(n, x)
        if out_shape == in_shape:
            self.ids[n] = src[0]
            return
        if len(out_shape) == 1:
            self.ids[n] = self.add(n, fname, "flatten", {}, src)
            return
        if out_shape[0] == in_shape[0] and set(in_shape[1:]) <= {1} and set(out_shape[1:]) <= {1} and \
                1 < len(out_shape) < len(in_shape):
            # x.squeeze(-1) on the way from a pooled (C, 1, 1) to (C,): the next squeeze or view flattens it
            self.ids[n] = src[0]
            return
        if _unflattens(in_shape, out_shape):
            # y.view(b, c, 1, 1): a squeeze-and-excitation gate's vector as a 1x1 map, for its mul
            self.ids[n] = self.add(n, fname, "unflatten", {"axes": len(out_shape) - 1}, src)
            return
        if [d for d in out_shape if d != 1] == [d for d in in_shape if d != 1] and len(in_shape) > 1 and \
                len(out_shape) > 1 and out_shape[0] == in_shape[0]:
            raise _Unsupported(f"{fname} {list(in_shape)} -> {list(out_shape)} changes the spatial rank")
        if len(in_shape) > 2 and out_shape == (in_shape[0], prod(in_shape[1:])):
            self.merged[n] = x  # x.view(b, c, -1): read by the reduction that follows (see reduce)
            return
        raise _Unsupported(f"{fname} {list(in_shape)} -> {list(out_shape)}: only flattening to one vector per "
                           "sample is supported")

    def check_params(self):
        """The analysed total must be the model's own count of the parameters its forward uses."""
        owner: dict[int, str] = {}
        for node in self.graph.nodes:
            if node.module and node.shares is None:
                for name, p in self.gm.get_submodule(node.module).named_parameters():
                    first = owner.setdefault(id(p), f"{node.module}.{name}")
                    if not first.startswith(f"{node.module}."):  # the same tensor held by another layer
                        w = node.where
                        loc = f"{relative_path(w.file)}:{w.line}" if w and w.line else self.source
                        raise ModelError(
                            f"{loc}: {node.module}.{name} is {first} (tied weights): convcli counts each layer's "
                            "own weights and cannot express a tensor shared by two layers; to reuse a layer, call "
                            "the same module twice (counted once)")
        used = {m for n in self.graph.nodes if n.module for m in [n.module]}
        seen, total, frozen, nbytes, dtypes = set(), 0, 0, 0, set()
        for path in used:
            for p in self.gm.get_submodule(path).parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    dtypes.add(str(p.dtype).removeprefix("torch."))
                    total += p.numel()
                    nbytes += p.numel() * p.element_size()
                    frozen += 0 if p.requires_grad else p.numel()
        ours = sum(self.facts_params(n) for n in self.graph.nodes if n.shares is None)
        if ours != total:
            raise ConvcliError(f"{self.source}: internal check failed: the model's layers hold {total:,} "
                               f"parameters, convcli counts {ours:,}; please report this model")
        everything = {id(p): p.numel() for p in self.model.parameters()}
        unused = sum(v for k, v in everything.items() if k not in seen)
        if unused:
            self.graph.notes.append(f"{unused:,} parameters belong to modules the forward pass does not use "
                                    f"({self.unused_modules(seen)}); they are not counted (model.parameters() "
                                    f"holds {sum(everything.values()):,})")
        self.graph.frozen_params, self.graph.param_bytes, self.graph.unused_params = frozen, nbytes, unused
        self.graph.param_dtype = dtypes.pop() if len(dtypes) == 1 else "mixed dtypes" if dtypes else "float32"

    def unused_modules(self, seen: set) -> str:
        """The outermost modules none of whose parameters the forward pass uses (an old block, an auxiliary
        head), by their attribute paths; the first few."""
        names: list[str] = []
        for name, m in self.model.named_modules():
            own = [p for p in m.parameters()]
            if name and own and not any(id(p) in seen for p in own) and \
                    not any(name.startswith(n + ".") for n in names):
                names.append(name)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return shown or "parameters used directly"

    def facts_params(self, node) -> int:
        shape = self.graph.input if node.inputs[0] == INPUT else self.out_shapes[node.inputs[0]]
        if node.role == "join":
            return 0
        return node.entry.infer(node.args, shape, node.where).params


def trace_ref(ref: str, input_text: str | None) -> Graph:
    """`model.py:Net` + `--input 3,32,32` → the graph."""
    import warnings

    shape = parse_input(input_text, ref)
    with warnings.catch_warnings(record=True) as caught:  # a note under the table, not text above it
        warnings.simplefilter("default")
        model = load_module(ref)
    name = MODEL_REF.match(ref).group("name")
    with contextlib.redirect_stdout(sys.stderr):  # a print() in its forward must not mix into --json, CSV or YAML
        graph = trace_graph(model, shape, ref, name)
    said = dict.fromkeys(f"building {name}: {w.category.__name__}: {str(w.message).strip().splitlines()[0]}"
                         for w in caught if str(w.message).strip())
    graph.notes.extend(said)
    return graph


__all__ = ["trace_graph", "trace_ref", "upsample_factors"]
