"""The layer registry: each layer type is described once, here or in a small per-family module.

An entry owns everything about its type: its YAML keys (with short and long names and defaults),
how it maps an input shape to an output shape, its receptive-field step per spatial axis, its
parameter and MAC counts, and how to build the torch module. The analysis, the builder and every
command read these entries; nothing else knows about individual layer types.

Entries are torch-free at import; `build` imports torch inside, so `convcli rf` never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from convcli.errors import SpecError, did_you_mean

MAX_ROWS = 100_000  # rows one spec may expand to: more is a mistake or a hostile file, not a network
MAX_SIZE = 1 << 20  # any integer option (channels, kernel, stride, padding, ...) and any input size

ACTIVATIONS = ("relu", "relu6", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "elu", "celu", "hardswish",
               "hardsigmoid", "mish", "softplus", "identity")


@dataclass(frozen=True)
class Where:
    """Where a spec node lives, for error messages."""

    file: str
    line: int | None
    path: str

    def error(self, message: str, **kw) -> SpecError:
        return SpecError(message, file=self.file, line=self.line, path=self.path, **kw)


@dataclass(frozen=True)
class Param:
    """One YAML key of a layer type.

    kind: int | ints (int or per-axis list) | pad (ints or 'same') | bool | float | str | act |
    layers (a list of layer entries) | branches (a list of layer lists) | any.
    """

    name: str
    kind: str = "int"
    default: Any = None
    aliases: tuple[str, ...] = ()
    required: bool = False
    choices: tuple = ()
    minimum: int | float | None = None
    below: float | None = None  # a strict upper bound (dropout < 1)
    maximum: int | None = MAX_SIZE  # integers: an inclusive upper bound (None: checked by the entry)
    help: str = ""
    default_text: str | None = None  # a default computed from other keys, as `convcli layers` shows it


# The keys conv-like entries share, defined once so every entry spells them the same way.
SHARED_KEYS = {
    p.name: p
    for p in (
        Param("out", "int", aliases=("out_channels", "filters"), required=True, minimum=1, help="output channels"),
        Param("k", "ints", 3, aliases=("kernel", "kernel_size"), minimum=1, help="kernel size, per axis allowed"),
        Param("s", "ints", 1, aliases=("stride",), minimum=1, help="stride"),
        Param(
            "p",
            "pad",
            None,
            aliases=("padding",),
            minimum=0,
            help="padding: int, per-axis list, or 'same'; default d*(k-1)//2 (keeps size at stride 1)",
            default_text="d*(k-1)//2",
        ),
        Param("d", "ints", 1, aliases=("dilation",), minimum=1, help="dilation"),
        Param("g", "int", 1, aliases=("groups",), minimum=1, help="groups"),
    )
}


def keys(*names: str, **changes: dict) -> tuple[Param, ...]:
    """Shared keys by name, e.g. keys("k", "s", k={"default": 2}) for a pool's kernel of default 2."""
    return tuple(replace(SHARED_KEYS[n], **changes.get(n, {})) for n in names)


def conv_keys() -> tuple[Param, ...]:
    return keys("out", "k", "s", "p", "d", "g") + block_keys()


def block_keys() -> tuple[Param, ...]:
    """The optional tail of a conv or linear block: bias, norm, activation, dropout."""
    return (
        Param("bias", "bool", None, help="default: true unless bn"),
        Param("bn", "bool", False, aliases=("batchnorm",), help="batch norm after the layer"),
        Param("act", "act", None, aliases=("activation",), choices=ACTIVATIONS, help="activation after bn"),
        Param("dropout", "float", 0.0, minimum=0.0, below=1.0, help="dropout probability after the activation"),
    )


# What a layer computes, decided by the registry entry from what the layer does (never from its name).
OPS = (
    "conv",  # a sliding-window weighted sum: conv, pointwise, depthwise, grouped (any rank)
    "convtranspose",
    "deformconv",
    "linear",
    "pool",  # a local max/avg pool (`pool` says which)
    "global_pool",  # a pool whose window covers its whole input (GAP, adaptive to 1, AvgPool2d(k=n))
    "flatten",
    "norm",
    "act",
    "dropout",
    "softmax",
    "identity",  # passes its input through (nn.Identity, a k=1 s=1 pool, zero padding of 0)
    "resample",  # upsample, pixel shuffle
    "pad",
    "shuffle",  # a channel shuffle: whole channels reordered
    "select",  # a range of the input's channels (a channel split)
    "join",  # add / concat / mul of several inputs
)


@dataclass
class Facts:
    """What a layer does to one sample, as typed fields: the analysis turns these into a table row, and
    rules, views and kinds read them (a new layer type that fills them is seen everywhere)."""

    out_shape: tuple[int, ...]
    params: int = 0
    macs: int | None = None  # None: not a weight layer ('-' in tables)
    ops: list | None = None  # one geometry op per spatial axis; None = pointwise (RF unchanged)
    notes: list[str] = field(default_factory=list)
    op: str = "identity"  # one of OPS
    pool: str | None = None  # "max" | "avg" for pools and global pools
    join: str | None = None  # "add" | "concat" | "mul" for joins
    in_channels: int | None = None
    out_channels: int | None = None
    groups: int = 1
    kernel: tuple[int, ...] = ()
    stride: tuple = ()
    dilation: tuple[int, ...] = ()
    bn: bool = False  # a conv/linear block's tail: batch norm, activation, dropout in the same row
    act: str | None = None
    dropout: float = 0.0

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}")

    # Semantic facts, derived in one place from the fields above.
    @property
    def is_conv(self) -> bool:
        return self.op in ("conv", "convtranspose", "deformconv")

    @property
    def is_depthwise(self) -> bool:
        """groups == in_channels > 1 (a channel multiplier, out = m * in, is still depthwise)."""
        return self.op == "conv" and self.groups > 1 and self.groups == self.in_channels

    @property
    def is_pointwise_conv(self) -> bool:
        """A 1x1 (1, 1x1x1) conv with groups 1: the channel-mixing half of a depthwise-separable conv."""
        return self.op == "conv" and all(k == 1 for k in self.kernel) and self.groups == 1

    @property
    def is_strided(self) -> bool:
        return any(s > 1 for s in self.stride)

    @property
    def is_dilated(self) -> bool:
        """Dilation > 1 on an axis whose kernel is wider than 1, where it spreads the taps (span d(k-1)+1);
        on a 1-wide kernel axis dilation changes nothing, so a k=1 d=2 conv is not a dilated conv."""
        return any(d > 1 and k > 1 for k, d in zip(self.kernel, self.dilation))

    @property
    def filters_spatially(self) -> bool:
        """Some kernel axis is wider than 1 (a 1x1 depthwise conv only scales each channel)."""
        return any(k > 1 for k in self.kernel)

    @property
    def is_global(self) -> bool:
        """After it every unit sees the whole input: the spatial map ends here (GAP, flatten)."""
        return self.op in ("global_pool", "flatten")

    @property
    def is_passthrough(self) -> bool:
        """Shape-preserving, mixing neither positions nor channels: BN, activation, dropout, identity, and a
        channel shuffle (which moves whole channels)."""
        return self.op in ("norm", "act", "dropout", "identity", "shuffle")


class LayerType:
    """Base of all entries. `kind` is 'leaf', 'seq' (expands into children) or 'parallel'."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""
    kind: ClassVar[str] = "leaf"
    params: ClassVar[tuple[Param, ...]] = ()
    positional: ClassVar[str | None] = None  # the key a bare (non-mapping) YAML value fills
    doc: ClassVar[str] = ""
    # (input shape, options) pairs: documentation, and the registry-wide tests check each one against torch
    examples: ClassVar[tuple] = ()
    example_before: ClassVar[tuple] = ()  # layers an example needs before it (a `reuse` needs its target)
    key_hints: ClassVar[dict[str, str]] = {}  # a key users write that this type does not take → what to do

    def resolve(self, a: dict, shape: tuple[int, ...], where: Where) -> dict:
        """Arguments with every default decided for this input (padding, bias, per-axis kernels): called
        once when the graph is made; `infer` and `build` read the result and never recompute it."""
        return a

    # leaf API (a: the resolved arguments)
    def infer(self, a: dict, shape: tuple[int, ...], where: Where) -> Facts:
        raise NotImplementedError

    def build(self, a: dict, shape: tuple[int, ...]):
        raise NotImplementedError

    # seq API: raw child entries (YAML-like dicts), parsed and analysed by the caller
    def expand(self, a: dict, shape: tuple[int, ...], where: Where) -> list:
        raise NotImplementedError

    # parallel API
    def branches(self, a: dict, shape: tuple[int, ...], where: Where) -> list[list]:
        raise NotImplementedError

    def join(self, a: dict, shapes: list[tuple[int, ...]], where: Where) -> Facts:
        raise NotImplementedError

    def build_join(self, a: dict, shapes: list[tuple[int, ...]]):
        raise NotImplementedError


_REGISTRY: dict[str, LayerType] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[LayerType]) -> type[LayerType]:
    """Class decorator: one instance per type; a duplicate name is a bug, so it raises."""
    entry = cls()
    for key in (cls.name, *cls.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise RuntimeError(f"layer type '{key}' registered twice")
        _ALIASES[key] = cls.name
    _REGISTRY[cls.name] = entry
    return cls


_LOADED = []


def _load() -> None:
    # Importing the family modules registers their entries (all of them, even when one family module was
    # imported first on its own, e.g. `act` for its torch table).
    from convcli.layers import act, channels, compose, conv, linear, norm, pool, resample  # noqa: F401

    _LOADED.append(True)


def lookup(name: str) -> LayerType | None:
    if not _LOADED:
        _load()
    canon = _ALIASES.get(name)
    return _REGISTRY[canon] if canon else None


def all_names() -> list[str]:
    if not _LOADED:
        _load()
    return sorted(_ALIASES)


def entries() -> list[LayerType]:
    if not _LOADED:
        _load()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


# --------------------------------------------------------------------------- argument normalisation

# PyTorch's constructor arguments for what a spec infers from the layer's input.
INFERRED_KEYS = ("in", "in_channels", "in_features", "num_features", "num_channels", "cin", "input_channels")
INFERRED_HINT = "input channels and features come from the previous layer's output; give only what it outputs"

RESERVED = ("name",)  # keys every entry accepts: `name` labels a layer or block (C1, C2, ..., O)


def shown(v):
    """A YAML value as the user wrote it: "16" in quotes is text, not the number 16."""
    if isinstance(v, str):
        return f'"{v}" (text; numbers are written without quotes)' if v.strip().lstrip("-").isdigit() else f'"{v}"'
    return v


def _check_value(p: Param, v, where: Where):
    def bad(expected: str):
        return where.error(f"'{p.name}' has the wrong type", expected=expected, got=shown(v))

    def check_int(x):
        if isinstance(x, bool) or not isinstance(x, int):
            raise bad("an integer" if p.kind == "int" else "an integer or a per-axis list of integers")
        if p.minimum is not None and x < p.minimum:
            raise where.error(f"'{p.name}' must be >= {p.minimum}", got=x)
        if p.maximum is not None and x > p.maximum:
            raise where.error(f"'{p.name}' is too large", expected=f"at most {p.maximum:,}", got=x)
        return x

    if v is None:
        return None
    if p.kind == "int":
        return check_int(v)
    if p.kind in ("ints", "pad"):
        if p.kind == "pad" and isinstance(v, str):
            if v not in ("same", "valid"):
                raise where.error(
                    "unknown padding",
                    expected="an integer, a per-axis list, 'same' or 'valid'",
                    got=v,
                    suggestion=did_you_mean(v, ("same", "valid")),
                )
            return v
        if isinstance(v, (list, tuple)):  # a tuple: already checked once (a composite passing it to its parts)
            if not v:
                raise bad("a non-empty list")
            return tuple(check_int(x) for x in v)
        return check_int(v)
    if p.kind == "bool":
        if not isinstance(v, bool):
            raise bad("true or false")
        return v
    if p.kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad("a number")
        if v != v or v in (float("inf"), float("-inf")):
            raise where.error(f"'{p.name}' must be a finite number", got=v)
        if p.minimum is not None and v < p.minimum:
            raise where.error(f"'{p.name}' must be >= {p.minimum}", got=v)
        if p.below is not None and v >= p.below:
            raise where.error(f"'{p.name}' must be < {p.below}", got=v)
        return float(v)
    if p.kind in ("str", "act"):
        if p.kind == "act" and v is False:
            return None
        if not isinstance(v, str):
            raise bad("one of " + ", ".join(map(str, p.choices)) if p.choices else "a string")
        if p.choices and v not in p.choices:
            raise where.error(
                f"unknown {p.name} '{v}'",
                expected="one of " + ", ".join(p.choices),
                suggestion=did_you_mean(v, p.choices),
            )
        return v
    if p.kind == "layers":
        if not isinstance(v, list):
            raise bad("a list of layers")
        return v
    if p.kind == "branches":
        if not isinstance(v, list) or not all(isinstance(b, list) for b in v):
            raise bad("a list of branches, each a list of layers")
        return v
    return v


def normalize(entry: LayerType, raw, where: Where, defaults: dict | None = None) -> tuple[dict, str | None]:
    """Validate a YAML value against the entry's keys; return (args with every key, label)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        if entry.positional is None:
            raise where.error(f"'{entry.name}' takes a mapping of options", expected="{key: value, ...}", got=raw)
        raw = {entry.positional: raw}
    by_name = {}
    for p in entry.params:
        for key in (p.name, *p.aliases):
            by_name[key] = p
    args: dict = {}
    label = None
    for source, mapping in (("defaults", defaults or {}), ("layer", raw)):
        for key, value in mapping.items():
            if key in RESERVED:
                if source == "layer":
                    label = str(value)
                continue
            p = by_name.get(key)
            if p is None:
                if source == "defaults":
                    continue  # family-wide defaults: keys this type does not take are skipped
                known = [q.name for q in entry.params]
                hint = entry.key_hints.get(key) or (INFERRED_HINT if key in INFERRED_KEYS else None)
                raise where.error(
                    f"unknown key '{key}' for '{entry.name}'" + (f": {hint}" if hint else ""),
                    expected="one of " + ", ".join(known + list(RESERVED)) if known else "no keys",
                    suggestion=None if hint else did_you_mean(key, list(by_name) + list(RESERVED)),
                )
            if source == "layer" and p.name in args and p.name in raw and key != p.name:
                raise where.error(f"'{key}' and '{p.name}' both given", expected="one of them")
            args[p.name] = _check_value(p, value, where)
    for p in entry.params:
        if args.get(p.name) is None:
            if p.required:
                raise where.error(f"'{entry.name}' needs '{p.name}'" + (f" ({p.help})" if p.help else ""))
            args[p.name] = p.default
    return args, label
