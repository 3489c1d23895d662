"""A spec's model as a standalone PyTorch file: `convcli export SPEC > net.py`.

The generator builds the model convcli trains (`build_model`, on the meta device: no memory, no
initialisation), then writes one constructor expression per module of that tree, nested as the tree
is, so the generated `Net` has exactly the same `state_dict` keys and shapes and a checkpoint from
`convcli train` loads into it with `strict=True`. The file imports torch (and torchvision for a
deformable conv) only: convcli's own modules (Parallel and its joins, Reuse, ChannelLayerNorm,
DeformConvBlock) are written into it as small classes, only those it uses.

Every module type is written by an explicit exporter below; an unknown one is an error, never a guess.
Before returning, the generated code is run once on the meta device and its module tree and
state_dict are compared with the model's, so a mistake here is an error, not a wrong file.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from functools import cache

from convcli.errors import ConvcliError

# --------------------------------------------------------------------------- the helper classes

# Written into the generated file when used: the behaviour of convcli.layers.modules, torch only.
_HELPERS: dict[str, str] = {
    "Parallel": '''

class Parallel(nn.Module):
    """Runs every branch on the same input, then joins their outputs. An empty branch is the identity."""

    def __init__(self, branches, join):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.join = join

    def forward(self, x):
        return self.join([branch(x) for branch in self.branches])
''',
    "Add": '''

class Add(nn.Module):
    """Element-wise sum of the branch outputs, then an optional activation."""

    def __init__(self, act=None):
        super().__init__()
        self.act = act

    def forward(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return self.act(y) if self.act is not None else y
''',
    "Concat": '''

class Concat(nn.Module):
    """Channel concatenation of the branch outputs, then an optional activation."""

    def __init__(self, act=None):
        super().__init__()
        self.act = act

    def forward(self, xs):
        y = torch.cat(xs, dim=1)
        return self.act(y) if self.act is not None else y
''',
    "Mul": '''

class Mul(nn.Module):
    """Element-wise product of the branch outputs, broadcasting size-1 axes (an SE block's channel gate)."""

    def __init__(self, act=None):
        super().__init__()
        self.act = act

    def forward(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y * x
        return self.act(y) if self.act is not None else y
''',
    "Reuse": '''

class Reuse(nn.Module):
    """An earlier layer applied again with the same weights. The layer is held, not registered, so its
    parameters (and state_dict keys) exist once, where it was defined."""

    def __init__(self, target):
        super().__init__()
        object.__setattr__(self, "target", target)

    def forward(self, x):
        return self.target(x)
''',
    "SelectChannels": '''

class SelectChannels(nn.Module):
    """Channels start..stop-1 of an (N, C, *spatial) map: one piece of a channel split (x.chunk(2, dim=1))."""

    def __init__(self, start, stop):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[:, self.start:self.stop]
''',
    "ChannelLayerNorm": '''

class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels at every position of an (N, C, *spatial) map (ConvNeXt's LayerNorm2d)."""

    def forward(self, x):
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)
''',
    "DeformConvBlock": '''

class DeformConvBlock(nn.Module):
    """torchvision's DeformConv2d with the conv that predicts its offsets (zero-initialised, so it
    starts as a plain conv)."""

    def __init__(self, cin, cout, k, s, p, d, groups, offset_groups, bias):
        super().__init__()
        from torchvision.ops import DeformConv2d

        k, s, p, d = (v if isinstance(v, tuple) else (v, v) for v in (k, s, p, d))
        self.offset = nn.Conv2d(cin, 2 * offset_groups * k[0] * k[1], k, s, p, d, bias=True)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(cin, cout, k, s, p, d, groups, bias)

    def forward(self, x):
        return self.conv(x, self.offset(x))
''',
}


# --------------------------------------------------------------------------- code as a tree


@dataclass
class Code:
    """A constructor call `head(args)` (or a list, `[args]`), with an optional comment. `args` are
    literal strings or nested Code; a call with nested Code is written one argument per line."""

    head: str
    args: list = field(default_factory=list)
    comment: str = ""
    brackets: tuple[str, str] = ("(", ")")


def render(code: Code | str, indent: int, comment: str = "") -> list[tuple[str, str]]:
    """(text, comment) lines; the caller adds the trailing comma to the last one."""
    pad = " " * indent
    if isinstance(code, str):
        return [(pad + code, comment)]
    comment = code.comment or comment
    opening, closing = code.brackets
    if not any(isinstance(a, Code) for a in code.args):
        return [(f"{pad}{code.head}{opening}{', '.join(code.args)}{closing}", comment)]
    if len(code.args) == 1:  # a wrapper of one plain call stays on one line: Add(nn.ReLU())
        inner = render(code.args[0], 0)
        if len(inner) == 1 and not inner[0][1]:
            return [(f"{pad}{code.head}{opening}{inner[0][0]}{closing}", comment)]
    lines = [(f"{pad}{code.head}{opening}", comment)]
    for arg in code.args:
        inner = render(arg, indent + 4)
        text, note = inner[-1]
        inner[-1] = (text + ",", note)
        lines += inner
    lines.append((f"{pad}{closing}", ""))
    return lines


def join_lines(lines: list[tuple[str, str]], width: int = 120) -> str:
    """Source lines, each comment after its line, or above it when the line would be wider than `width`."""
    out = []
    for text, note in lines:
        if not note:
            out.append(f"{text}\n")
            continue
        line = f"{text}  # {safe_text(note)}"
        if len(line) <= width:
            out.append(line + "\n")
        else:
            indent = text[:len(text) - len(text.lstrip())]
            out.append(f"{indent}# {safe_text(note)}\n{text}\n")
    return "".join(out)


# --------------------------------------------------------------------------- literals


def lit(v) -> str:
    """A Python literal for an argument value (floats round-trip exactly through repr)."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        items = [lit(x) for x in v]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    raise TypeError(f"no literal for {type(v).__name__}")


def size(v):
    """A per-axis size as torch accepts it: (3, 3) -> 3 when every axis agrees (torch broadcasts an int)."""
    if isinstance(v, (tuple, list)) and len(v) > 0 and all(x == v[0] for x in v) and isinstance(v[0], int):
        return v[0]
    return v


def call(head: str, positional=(), keywords=()) -> Code:
    """`head(p1, p2, name=value, ...)`, a keyword written only when its value is not torch's default.
    `keywords` holds (name, value, default)."""
    args = [lit(v) for v in positional]
    args += [f"{name}={lit(v)}" for name, v, default in keywords if v != default or type(v) is not type(default)]
    return Code(head, args)


def safe_text(text: str) -> str:
    """Text that is safe in a comment or docstring: no line breaks, control characters or quotes
    that could end the docstring (escaped as Python would)."""
    text = str(text)
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append("'")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def class_name(name: str) -> str:
    """A class name from the spec's name: s7 -> S7, mobilenet_v2 -> MobilenetV2, shared-se -> SharedSe."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", str(name)) if p]
    ident = "".join(p[0].upper() + p[1:] for p in parts)
    if not ident or ident[0].isdigit():
        ident = "Net" + ident
    if keyword.iskeyword(ident) or ident in RESERVED:
        ident += "Net"
    return ident


# Names the generated file defines or uses at module level (a class or local variable must not shadow them).
RESERVED = {"torch", "nn", "self", "super", "print", "tuple", "object", "isinstance", "x", "y", *_HELPERS}


# --------------------------------------------------------------------------- one exporter per module type


def _conv(m, head):
    return call(head, (m.in_channels, m.out_channels, size(m.kernel_size)), [
        ("stride", size(m.stride), 1),
        ("padding", size(m.padding), 0),
        ("dilation", size(m.dilation), 1),
        ("groups", m.groups, 1),
        ("bias", m.bias is not None, True),
        ("padding_mode", m.padding_mode, "zeros"),
    ])


def _conv_transpose(m, head):
    return call(head, (m.in_channels, m.out_channels, size(m.kernel_size)), [
        ("stride", size(m.stride), 1),
        ("padding", size(m.padding), 0),
        ("output_padding", size(m.output_padding), 0),
        ("groups", m.groups, 1),
        ("bias", m.bias is not None, True),
        ("dilation", size(m.dilation), 1),
        ("padding_mode", m.padding_mode, "zeros"),
    ])


def _batchnorm(m, head):
    return call(head, (m.num_features,), [
        ("eps", m.eps, 1e-5),
        ("momentum", m.momentum, 0.1),
        ("affine", m.affine, True),
        ("track_running_stats", m.track_running_stats, True),
    ])


def _layernorm(m, head):
    shape = tuple(m.normalized_shape)
    return call(head, (shape[0] if len(shape) == 1 else shape,), [
        ("eps", m.eps, 1e-5),
        ("elementwise_affine", m.elementwise_affine, True),
        ("bias", getattr(m, "bias", None) is not None or not m.elementwise_affine, True),
    ])


def _groupnorm(m, head):
    return call(head, (m.num_groups, m.num_channels), [("eps", m.eps, 1e-5), ("affine", m.affine, True)])


def _linear(m, head):
    return call(head, (m.in_features, m.out_features), [("bias", m.bias is not None, True)])


def _inplace(m, head):
    return call(head, (), [("inplace", m.inplace, False)])


def _no_args(m, head):
    return call(head)


def _leaky_relu(m, head):
    return call(head, (), [("negative_slope", m.negative_slope, 0.01), ("inplace", m.inplace, False)])


def _elu(m, head):
    return call(head, (), [("alpha", m.alpha, 1.0), ("inplace", m.inplace, False)])


def _hardtanh(m, head):
    return call(head, (), [("min_val", m.min_val, -1.0), ("max_val", m.max_val, 1.0), ("inplace", m.inplace, False)])


def _softplus(m, head):
    return call(head, (), [("beta", m.beta, 1.0), ("threshold", m.threshold, 20.0)])


def _gelu(m, head):
    return call(head, (), [("approximate", m.approximate, "none")])


def _softmax(m, head):
    return call(head, (), [("dim", m.dim, None)])


def _dropout(m, head):
    return call(head, (), [("p", m.p, 0.5), ("inplace", m.inplace, False)])


def _maxpool(m, head):
    k = size(m.kernel_size)
    return call(head, (k,), [
        ("stride", size(m.stride), k),
        ("padding", size(m.padding), 0),
        ("dilation", size(m.dilation), 1),
        ("return_indices", m.return_indices, False),
        ("ceil_mode", m.ceil_mode, False),
    ])


def _avgpool(m, head):
    k = size(m.kernel_size)
    keywords = [
        ("stride", size(m.stride), k),
        ("padding", size(m.padding), 0),
        ("ceil_mode", m.ceil_mode, False),
        ("count_include_pad", m.count_include_pad, True),
    ]
    if hasattr(m, "divisor_override"):
        keywords.append(("divisor_override", m.divisor_override, None))
    return call(head, (k,), keywords)


def _adaptive_pool(m, head):
    keywords = [("return_indices", m.return_indices, False)] if hasattr(m, "return_indices") else []
    return call(head, (size(m.output_size),), keywords)


def _flatten(m, head):
    return call(head, (), [("start_dim", m.start_dim, 1), ("end_dim", m.end_dim, -1)])


def _unflatten(m, head):
    return call(head, (m.dim, tuple(m.unflattened_size)))


def _upsample(m, head):
    return call(head, (), [
        ("size", m.size, None),
        ("scale_factor", m.scale_factor, None),
        ("mode", m.mode, "nearest"),
        ("align_corners", m.align_corners, None),
        ("recompute_scale_factor", m.recompute_scale_factor, None),
    ])


def _pixel_shuffle(m, head):
    return call(head, (m.upscale_factor,))


def _pixel_unshuffle(m, head):
    return call(head, (m.downscale_factor,))


def _constant_pad(m, head):
    return call(head, (size(m.padding), m.value))


def _prelu(m, head):
    return call(head, (), [("num_parameters", m.num_parameters, 1), ("init", m.init, 0.25)])


def _pad(m, head):
    return call(head, (size(m.padding),))


@cache
def _exporters() -> dict:
    """torch.nn class -> (exporter, name in torch.nn). Exact classes only: a subclass may behave differently."""
    from torch import nn

    table = {
        ("Conv1d", "Conv2d", "Conv3d"): _conv,
        ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"): _conv_transpose,
        ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"): _batchnorm,
        ("LayerNorm",): _layernorm,
        ("GroupNorm",): _groupnorm,
        ("Linear",): _linear,
        ("ReLU", "ReLU6", "SiLU", "SELU", "Hardswish", "Hardsigmoid", "Mish"): _inplace,
        ("Sigmoid", "Tanh", "Identity", "Softsign", "Tanhshrink"): _no_args,
        ("ELU", "CELU"): _elu,
        ("Hardtanh",): _hardtanh,
        ("Softplus",): _softplus,
        ("LeakyReLU",): _leaky_relu,
        ("GELU",): _gelu,
        ("PReLU",): _prelu,
        ("Softmax", "LogSoftmax"): _softmax,
        ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d"): _dropout,
        ("MaxPool1d", "MaxPool2d", "MaxPool3d"): _maxpool,
        ("AvgPool1d", "AvgPool2d", "AvgPool3d"): _avgpool,
        ("AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
         "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d"): _adaptive_pool,
        ("Flatten",): _flatten,
        ("Unflatten",): _unflatten,
        ("Upsample",): _upsample,
        ("PixelShuffle",): _pixel_shuffle,
        ("PixelUnshuffle",): _pixel_unshuffle,
        ("ChannelShuffle",): lambda m, head: call(head, (m.groups,)),
        ("ConstantPad1d", "ConstantPad2d", "ConstantPad3d"): _constant_pad,
        ("ZeroPad1d", "ZeroPad2d", "ZeroPad3d",
         "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d",
         "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d",
         "CircularPad1d", "CircularPad2d", "CircularPad3d"): _pad,
    }
    out = {}
    for names, fn in table.items():
        for name in names:
            cls = getattr(nn, name, None)
            if cls is not None:
                out[cls] = (fn, f"nn.{name}")
    return out


# --------------------------------------------------------------------------- the writer


class _Writer:
    """Turns the built model's module tree into Code, with a comment per spec row and a local variable
    for every module used at more than one place (a `reuse` target)."""

    def __init__(self, model, analysis):
        from convcli.layers import modules as cm

        self.cm = cm
        graph = analysis.graph
        labels = {n.path: n.label for n in graph.nodes} | {g.path: g.label for g in graph.groups}
        self.where: dict[int, str] = {}
        for path, module in model.paths.items():
            label = labels.get(path)
            self.where.setdefault(id(module), path + (f" ({label})" if label else ""))
        # module -> its spec label (layers and blocks): shared modules' variable names, top-level block_labels
        self.label: dict[int, str] = {id(model.paths[p]): label for p, label in labels.items()
                                      if label and p in model.paths}
        self.helpers: set[str] = set()
        self.uses: dict[int, int] = {}
        self.reused_by: dict[int, list] = {}  # target -> the Reuse modules applying it again
        self._count(model)
        self.names: dict[int, str] = {}
        self.taken = set(RESERVED)
        self.defs: list[tuple[str, str, Code]] = []  # (variable, comment, constructor)

    def _count(self, module) -> None:
        """How many places hold each module object (registered children and Reuse targets)."""
        self.uses[id(module)] = self.uses.get(id(module), 0) + 1
        if self.uses[id(module)] > 1:
            return
        target = module.__dict__.get("target") if type(module) is self.cm.Reuse else None
        if target is not None:
            self.reused_by.setdefault(id(target), []).append(module)
            self._count(target)
        for child in module.children():
            self._count(child)

    def variable(self, module) -> str:
        """The local variable holding a shared module, defined (before `super().__init__`) on first use."""
        if id(module) in self.names:
            return self.names[id(module)]
        base = re.sub(r"\W+", "_", self.label.get(id(module)) or "").strip("_").lower()
        if not base.isidentifier() or keyword.iskeyword(base):
            base = "shared"
        name, n = base, 2
        while name in self.taken:
            name, n = f"{base}_{n}", n + 1
        self.taken.add(name)
        code = self.construct(module)  # may define nested shared modules first
        self.names[id(module)] = name
        where = self.where.get(id(module), "")
        again = ", ".join(self.where[id(r)] for r in self.reused_by.get(id(module), []) if id(r) in self.where)
        note = f"{where}, applied again at {again} with the same weights" if where and again else where
        self.defs.append((name, note, code))
        return name

    def code(self, module, comment: str = "") -> Code | str:
        """The expression for `module` at one place in the tree (a variable if it is shared)."""
        if self.uses.get(id(module), 0) > 1:
            return Code(self.variable(module), [], comment=self.where.get(id(module), comment), brackets=("", ""))
        out = self.construct(module)
        out.comment = out.comment or self.where.get(id(module), comment)
        return out

    def construct(self, module) -> Code:
        from torch import nn

        cm, kind = self.cm, type(module)
        if kind is nn.Sequential:
            return Code("nn.Sequential", [self.code(c) for c in module.children()])
        if kind is cm.Parallel:
            self.helpers.add("Parallel")
            branches = [self.code(b, f"branch {i}" + ("" if len(b) else ": identity"))
                        for i, b in enumerate(module.branches)]
            return Code("Parallel", [Code("", branches, brackets=("[", "]")), self.code(module.join)])
        if kind in (cm.Add, cm.Concat, cm.Mul):
            self.helpers.add(kind.__name__)
            return Code(kind.__name__, [] if module.act is None else [self.code(module.act)])
        if kind is cm.Reuse:
            self.helpers.add("Reuse")
            target = module.__dict__["target"]
            where = self.where.get(id(module))
            code = Code("Reuse", [self.variable(target)])
            code.comment = f"{where}: {self.names[id(target)]} again, with the same weights" if where else ""
            return code
        if kind is cm.SelectChannels:
            self.helpers.add("SelectChannels")
            return call("SelectChannels", (module.start, module.stop))
        if kind is cm.ChannelLayerNorm:
            self.helpers.add("ChannelLayerNorm")
            return _layernorm(module, "ChannelLayerNorm")
        if kind is cm.DeformConvBlock:
            self.helpers.add("DeformConvBlock")
            conv = module.conv
            k = tuple(conv.kernel_size)
            offset_groups = module.offset.out_channels // (2 * k[0] * k[1])
            return call("DeformConvBlock", (conv.in_channels, conv.out_channels, size(k), size(conv.stride),
                                            size(conv.padding), size(conv.dilation), conv.groups, offset_groups,
                                            conv.bias is not None))
        found = _exporters().get(kind)
        if found is None:
            where = self.where.get(id(module))
            raise ConvcliError(f"cannot export {kind.__module__}.{kind.__qualname__}"
                               + (f" at {where}" if where else "")
                               + ": convcli export has no writer for this module type; please report this spec")
        fn, head = found
        return fn(module, head)


def export_source(analysis) -> str:
    """The standalone Python source of the spec's model (checked against the model before it is returned)."""
    import torch

    from convcli.build import build_model

    graph = analysis.graph
    if graph.top == [] and graph.nodes:
        raise ConvcliError(f"{graph.source}: already a PyTorch model; `convcli export` writes a spec's model")
    with torch.device("meta"):
        model = build_model(analysis)
    writer = _Writer(model, analysis)
    top = [writer.code(m) for m in model.children()]
    block_labels = {name: writer.label[id(m)] for name, m in model.named_children() if id(m) in writer.label}
    cls = class_name(graph.name)
    source = _file(analysis, cls, writer, top, block_labels)  # repr() writes them as safe Python
    check_source(source, cls, model, graph.source)
    return source


def _file(analysis, cls: str, writer: _Writer, top: list, block_labels: dict) -> str:
    graph = analysis.graph
    input_shape = tuple(graph.input)
    out_shape = tuple(analysis.output_shape)
    axes = {1: "C, L", 2: "C, H, W", 3: "C, D, H, W"}.get(len(input_shape) - 1, "C, ...")
    name, src = safe_text(graph.name), safe_text(graph.source)
    torchvision = " and torchvision" if "DeformConvBlock" in writer.helpers else ""
    lines = [
        '"""' + f"{name}: a standalone PyTorch model, exported by convcli from {src}.",
        "",
        f"Input ({axes}) = {input_shape}; output {out_shape}. It needs only torch{torchvision}, not convcli.",
        "Its state_dict keys are those of convcli's model for the spec, so a checkpoint from",
        "`convcli train` loads into it with strict=True (save this file as net.py):",
        "",
        "    import torch",
        f"    from net import {cls}",
        "",
        f"    model = {cls}()",
        f'    ckpt = torch.load("runs/{name}/best.pt", map_location="cpu", weights_only=True)',
        '    model.load_state_dict(ckpt["model"])  # a bare state_dict file: model.load_state_dict(ckpt)',
        "    model.eval()",
        "",
        "Inputs are normalised as in training: images on the 0-1 scale, then (x - mean) / std per channel",
        'with mean = ckpt["mean"] and std = ckpt["std"] (one value per channel).',
        '"""',
    ]
    parts = ["\n".join(lines) + "\n\n", "import torch\nfrom torch import nn\n"]
    order = ["Parallel", "Add", "Concat", "Mul", "Reuse", "SelectChannels", "ChannelLayerNorm", "DeformConvBlock"]
    parts += [_HELPERS[h] for h in order if h in writer.helpers]
    body = [f"\n\nclass {cls}(nn.Sequential):\n",
            f'    """{name} ({src}): input {input_shape}, output {out_shape}."""\n\n']
    if block_labels:  # the spec's labels survive as names: `convcli inspect net.py:Net --rules ...` grades them
        body.append("    # the spec's block labels, by child (convcli reads them for the structure rule)\n")
        body.append(f"    block_labels = {block_labels!r}\n\n")
    body.append("    def __init__(self):\n")
    for var, note, code in writer.defs:
        if note:
            body.append(f"        # {safe_text(note)}\n")
        first, *rest = render(code, 8)
        first = (first[0].replace(" " * 8, f"        {var} = ", 1), first[1])
        body.append(join_lines([first, *rest]))
    body.append(join_lines(render(Code("super().__init__", top), 8)))
    parts.append("".join(body))
    parts.append(f"\n\nNet = {cls}  # the same name in every exported file\n" if cls != "Net" else "")
    shape = ", ".join(str(n) for n in input_shape)
    parts.append(
        '\n\nif __name__ == "__main__":\n'
        f"    model = {cls}().eval()\n"
        "    with torch.no_grad():\n"
        f"        y = model(torch.zeros(1, {shape}))\n"
        '    print(f"output shape: {tuple(y.shape)}")\n'
    )
    return "".join(parts)


def check_source(source: str, cls: str, model, origin: str) -> None:
    """Run the generated code once on the meta device: its module tree (reprs) and state_dict keys and
    shapes must be the model's. A difference is a bug in this module, reported, never written."""
    import torch

    namespace: dict = {"__name__": "convcli_export_check"}
    try:
        with torch.device("meta"):
            exec(compile(source, f"<export of {origin}>", "exec"), namespace)
            net = namespace[cls]()
    except Exception as exc:  # pragma: no cover - a bug in the generator
        raise ConvcliError(f"{origin}: internal check failed: the exported code does not run "
                           f"({type(exc).__name__}: {exc}); please report this spec") from None

    if signature(net) != signature(model):
        ours, theirs = signature(net), signature(model)
        where = next((b[0] for a, b in zip(ours, theirs) if a != b), "the number of modules")
        raise ConvcliError(f"{origin}: internal check failed: the exported model differs from convcli's at "
                           f"{where or 'the top'}; please report this spec")


def signature(model) -> list:
    """What must agree: state_dict keys, shapes and dtypes, and per module (after the root) its name, class
    and public attributes, per-axis sizes normalised ((3, 3) == 3) and a Reuse's target by its name."""
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}

    def norm(v):
        if isinstance(v, (tuple, list)) and v and all(type(x) is int and x == v[0] for x in v):
            return v[0]
        if hasattr(v, "named_modules"):
            return ("module", names.get(id(v)))
        return v

    out: list = [("state_dict", [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()])]
    for name, m in model.named_modules(remove_duplicate=False):
        if name:
            attrs = {k: norm(v) for k, v in vars(m).items() if not k.startswith("_") and k != "training"}
            out.append((name, type(m).__name__, attrs))
    return out
