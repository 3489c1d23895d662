"""Layer kinds for the rules: recognised from what a layer *is* (its analysed facts), not its name.

Every kind lives in the one table `KINDS` (name -> description + how to find its rows), so adding a
kind touches only this file. Kinds look at `Analysis.layers` (leaf rows, including the joins of
parallel branches) and, for the path-counted kinds, at the resolved node tree `Analysis.nodes`.

Two ways of counting:
- "layers": every matching layer anywhere in the net counts once.
- "path": the largest number of matching layers along any one input-to-output path. Used for
  downsampling and strided convs: a residual block whose body has a stride-2 conv and whose shortcut
  has the matching stride-2 1x1 projection reduces the resolution once, not twice.

Standalone `batchnorm`/`relu`/`dropout` rows are separate layers here; the `bn:`/`act:`/`dropout:`
options of a conv are folded into the conv's own row.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

from convcli.layers.registry import lookup

CONV_OPS = ("conv", "convtranspose", "deformconv")
NORM_OPS = ("batchnorm", "layernorm", "groupnorm")
SOFTMAX_OPS = ("softmax", "log_softmax")


# --------------------------------------------------------------------------- facts of one row


def op_of(row) -> str:
    """The canonical operation of a leaf row: `info["op"]`, else the registry's name for its type."""
    op = row.info.get("op")
    if op:
        return op
    entry = lookup(row.type)
    return entry.name if entry else row.type


def family_of(row) -> str:
    entry = lookup(row.type)
    return entry.family if entry else ""


def is_conv(row) -> bool:
    return row.kind == "layer" and op_of(row) in CONV_OPS


def is_plain_conv(row) -> bool:
    """A (non-transposed, non-deformable) convolution: conv, pointwise, depthwise, grouped, ..."""
    return row.kind == "layer" and op_of(row) == "conv"


def is_depthwise(row) -> bool:
    """groups == in_channels > 1 (a channel multiplier, out = m * in, is still depthwise)."""
    i = row.info
    return is_plain_conv(row) and i.get("groups", 1) > 1 and i.get("groups") == i.get("in")


def is_pointwise_conv(row) -> bool:
    """A 1x1 (1, 1x1x1) conv with groups 1: the channel-mixing half of a depthwise-separable conv."""
    i = row.info
    return is_plain_conv(row) and all(k == 1 for k in i.get("k", ())) and i.get("groups", 1) == 1


def is_passthrough(row) -> bool:
    """BN / activation / dropout / identity layers: element-wise, shape-preserving, no mixing."""
    if row.kind != "layer":
        return False
    op = op_of(row)
    return op in NORM_OPS or op in ("dropout", "identity") or family_of(row) == "act" and op not in SOFTMAX_OPS


def is_activation(row) -> bool:
    return row.kind == "layer" and family_of(row) == "act" and op_of(row) not in (*SOFTMAX_OPS, "dropout",
                                                                                    "identity")


def is_gap(row) -> bool:
    """Global average pooling: `gap`, or `adaptiveavgpool` to size 1 on every spatial axis."""
    if row.kind != "layer":
        return False
    op = op_of(row)
    if op == "gap":
        return True
    return op == "adaptiveavgpool" and len(row.out_shape) > 1 and all(n == 1 for n in row.out_shape[1:])


def is_strided_conv(row) -> bool:
    """A convolution (not transposed) with stride > 1 on some spatial axis."""
    return row.kind == "layer" and op_of(row) in ("conv", "deformconv") and any(s > 1 for s in row.info.get("s", ()))


def is_downsampling(row) -> bool:
    """A layer that reduces the resolution by striding: its jump grows on some axis (not a global op).

    Covers strided convs, pools with stride > 1 and adaptive pools to a smaller (non-1) size; GAP and
    flatten are global ops, not downsamplings; upsample/pixelshuffle/convtranspose shrink the jump.
    """
    if row.kind != "layer" or not row.rf_in or len(row.rf_in) != len(row.rf_out):
        return False
    return any(b.j > a.j and not b.glob for a, b in zip(row.rf_in, row.rf_out))


def is_dilated(row) -> bool:
    return is_conv(row) and any(d > 1 for d in row.info.get("d", ()))


def is_classifier_like(row) -> bool:
    """What may follow GAP in a classifier head: linear, flatten, softmax, BN/activation/dropout, or a
    1x1 conv applied to a 1x1 map (GAP with keepdim)."""
    if row.kind != "layer":
        return False
    op = op_of(row)
    if op in ("linear", "flatten", *SOFTMAX_OPS) or is_passthrough(row):
        return True
    return is_plain_conv(row) and all(k == 1 for k in row.info.get("k", ())) and all(
        n == 1 for n in row.in_shape[1:])


# --------------------------------------------------------------------------- finders


def layer_rows(analysis, pred) -> list:
    return [r for r in analysis.layers if pred(r)]


def path_rows(nodes, pred) -> list:
    """Matching rows along the path through the node tree with the most matches (max over branches)."""
    out = []
    for node in nodes:
        row = node.row
        if row.kind == "layer":
            if pred(row):
                out.append(row)
        elif node.branches or row.info.get("join") is not None:
            out += max((path_rows(b, pred) for b in node.branches), key=len, default=[])
            join = row.info.get("join")
            if join is not None and pred(join):
                out.append(join)
        else:
            out += path_rows(node.children, pred)
    return out


def successors(analysis) -> dict[int, list]:
    """Data flow between leaf rows: id(row) -> the rows that consume its output directly."""
    succ: dict[int, list] = {}

    def link(prev, row):
        for p in prev:
            succ.setdefault(id(p), []).append(row)

    def walk(nodes, prev):
        for node in nodes:
            row = node.row
            if row.kind == "layer":
                link(prev, row)
                prev = [row]
            elif node.branches or row.info.get("join") is not None:
                ends = []
                for branch in node.branches:
                    ends += walk(branch, prev)  # an empty branch (identity shortcut) passes prev through
                join = row.info["join"]
                link(ends, join)
                prev = [join]
            else:
                prev = walk(node.children, prev)
        return prev

    walk(analysis.nodes, [])
    return succ


def depthwise_separable_rows(analysis) -> list:
    """Each depthwise conv whose output feeds a 1x1 groups-1 conv, directly or through BN/activation/
    dropout layers only. One count per pair: a pointwise conv completes at most one pair. Works for
    `dwsconv`, `depthwise` + `pointwise`, and two plain convs (`g: in` then `k: 1`)."""
    succ = successors(analysis)
    used: set[int] = set()
    found = []
    for row in analysis.layers:
        if not is_depthwise(row):
            continue
        frontier, seen = list(succ.get(id(row), [])), set()
        while frontier:
            nxt = frontier.pop(0)
            if id(nxt) in seen:
                continue
            seen.add(id(nxt))
            if is_pointwise_conv(nxt) and id(nxt) not in used:
                used.add(id(nxt))
                found.append(row)
                break
            if is_passthrough(nxt):
                frontier += succ.get(id(nxt), [])
    return found


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    find: Callable  # analysis -> list of rows (one per counted occurrence)
    aliases: tuple[str, ...] = field(default=())
    counting: str = "layers"  # "layers" | "path" (see the module docstring)


KINDS: dict[str, Kind] = {}
_ALIASES: dict[str, str] = {}


def kind(name: str, description: str, pred=None, *, find=None, aliases=(), counting="layers") -> Kind:
    """Register a kind from a row predicate (counted over layers or along a path) or a custom finder."""
    if name in KINDS or name in _ALIASES:
        raise RuntimeError(f"rule kind '{name}' defined twice")
    if find is None:
        find = (lambda a: path_rows(a.nodes, pred)) if counting == "path" else (lambda a: layer_rows(a, pred))
    k = Kind(name, description, find, tuple(aliases), counting)
    KINDS[name] = k
    for alias in (name, *aliases):
        _ALIASES[alias] = name
    return k


def _op_is(*ops):
    return lambda r: r.kind == "layer" and op_of(r) in ops


kind("conv", "any convolution: conv, pointwise, depthwise, grouped, transposed, deformable "
     "(each half of a dwsconv counts)", is_conv, aliases=("convolution",))
kind("pointwise", "1x1 convolution with groups 1", is_pointwise_conv, aliases=("pointwise_conv", "conv1x1"))
kind("depthwise", "convolution with groups == in_channels > 1", is_depthwise, aliases=("depthwise_conv",))
kind("grouped", "convolution with 1 < groups < in_channels",
     lambda r: is_plain_conv(r) and r.info.get("groups", 1) > 1 and not is_depthwise(r),
     aliases=("grouped_conv",))
kind("depthwise_separable", "a depthwise conv followed (directly or through BN/activation/dropout) by a "
     "1x1 groups-1 conv; one per pair, however written", find=depthwise_separable_rows,
     aliases=("dwsconv", "dws", "separable", "depthwise_separable_conv"))
kind("dilated", "convolution with dilation > 1 on some axis", is_dilated, aliases=("dilated_conv", "atrous"))
kind("strided_conv", "convolution (not transposed) with stride > 1 on some axis; counted along the "
     "path with the most (a residual's strided projection shortcut does not count twice)",
     is_strided_conv, counting="path", aliases=("stride2_conv", "strided", "strided_convolution"))
kind("downsampling", "any layer that reduces resolution by a stride (strided conv or pool, adaptive pool to "
     "a smaller size); counted along the path with the most", is_downsampling, counting="path",
     aliases=("downsample", "stride2"))
kind("maxpool", "max pooling", _op_is("maxpool"), aliases=("max_pool", "maxpooling"))
kind("avgpool", "average pooling (not global)", _op_is("avgpool"), aliases=("avg_pool",))
kind("gap", "global average pooling: gap, or adaptiveavgpool to size 1", is_gap,
     aliases=("global_avg_pool", "global_average_pool"))
kind("pool", "any pooling: maxpool, avgpool, adaptiveavgpool, gap",
     _op_is("maxpool", "avgpool", "adaptiveavgpool", "gap"), aliases=("pooling",))
kind("flatten", "flatten", _op_is("flatten"))
kind("linear", "fully connected layer", _op_is("linear"), aliases=("fc", "dense"))
kind("transposed_conv", "transposed convolution", _op_is("convtranspose"), aliases=("convtranspose",))
kind("deformable_conv", "deformable convolution", _op_is("deformconv"), aliases=("deformconv",))
kind("upsample", "upsampling: upsample or pixelshuffle", _op_is("upsample", "pixelshuffle"))
kind("norm", "standalone normalisation layer (conv `bn: true` is part of the conv's row)",
     _op_is(*NORM_OPS), aliases=("batchnorm", "bn"))
kind("activation", "standalone activation layer (conv `act:` is part of the conv's row)", is_activation,
     aliases=("act",))
kind("dropout", "standalone dropout layer", _op_is("dropout"))
kind("join", "the join of parallel branches (residual add, concat)", lambda r: r.kind == "join",
     aliases=("add", "concat", "residual"))


def canonical(name: str) -> str | None:
    """The kind for a name or alias (case and `-`/`_` insensitive), or None."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key)


def get_kind(name: str) -> Kind | None:
    c = canonical(name)
    return KINDS[c] if c else None


def suggest(name: str) -> str | None:
    """Did-you-mean over kind names and aliases, answered with the canonical names."""
    key = str(name).lower().replace("-", "_")
    matches = difflib.get_close_matches(key, sorted(_ALIASES), n=6, cutoff=0.6)
    names = list(dict.fromkeys(_ALIASES[m] for m in matches))[:3]
    return " or ".join(f"'{n}'" for n in names) if names else None


def find(analysis, name: str) -> list:
    return KINDS[canonical(name)].find(analysis)


__all__ = ["KINDS", "Kind", "kind", "canonical", "get_kind", "find", "suggest", "op_of", "is_gap",
           "is_classifier_like", "successors", "path_rows"]
