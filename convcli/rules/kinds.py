"""Layer kinds for the rules: recognised from what a layer *is* (its analysed facts), not its name.

Every kind lives in the one table `KINDS` (name -> description + how to find its rows), so adding a
kind touches only this file. Kinds look at `Analysis.layers` (leaf rows, including the joins of
parallel branches) and, for the path-counted kinds and pairs, at the graph's edges.

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

# --------------------------------------------------------------------------- facts of one row
# Every predicate reads the row's typed Facts (decided once by the registry entry from what the layer
# does): a whole-map AvgPool2d is a global pool, a 1x1 stride-1 pool an identity, whatever their names.


def facts(row):
    return row.facts if row.kind != "block" else None


def op_of(row) -> str:
    """What a leaf row computes, in words a rule message can use (conv, maxpool, gap, add, ...)."""
    f = facts(row)
    if f is None:
        return row.type
    if f.op == "pool":
        return f"{f.pool}pool"
    if f.op == "global_pool":
        return "gap" if f.pool == "avg" else "global_maxpool"
    if f.op == "join":
        return f.join
    if f.op in ("act", "softmax") and f.act:
        return f.act  # relu, log_softmax: the function, not its class
    return f.op


def is_conv(row) -> bool:
    f = facts(row)
    return f is not None and f.is_conv


def is_plain_conv(row) -> bool:
    """A (non-transposed, non-deformable) convolution: conv, pointwise, depthwise, grouped, ..."""
    f = facts(row)
    return f is not None and f.op == "conv"


def is_depthwise(row) -> bool:
    f = facts(row)
    return f is not None and f.is_depthwise


def is_pointwise_conv(row) -> bool:
    f = facts(row)
    return f is not None and f.is_pointwise_conv


def is_passthrough(row) -> bool:
    """BN / activation / dropout / identity layers: element-wise, shape-preserving, no mixing."""
    f = facts(row)
    return f is not None and f.is_passthrough


def is_activation(row) -> bool:
    f = facts(row)
    return f is not None and f.op == "act"


def is_gap(row) -> bool:
    """Global average pooling, however written: gap, adaptive average pool to 1, an average pool whose
    window covers the whole map, a mean over the spatial axes."""
    f = facts(row)
    return f is not None and f.op == "global_pool" and f.pool == "avg"


def is_global_pool(row) -> bool:
    f = facts(row)
    return f is not None and f.op == "global_pool"


def is_pool(row, pool: str | None = None) -> bool:
    """A local pooling over a window of several positions (not global, not an identity k=1 s=1 pool, not a
    1x1 strided one, which takes no max or mean: it subsamples)."""
    f = facts(row)
    return f is not None and f.op == "pool" and (pool is None or f.pool == pool) and any(k > 1 for k in f.kernel)


def single_position_pools(pool: str):
    def near_misses(analysis) -> list:
        return [(r, f"a {'x'.join(['1'] * len(r.facts.kernel))} window at stride "
                    f"{'x'.join(map(str, r.facts.stride))} pools nothing: it subsamples")
                for r in analysis.layers if (f := facts(r)) is not None and f.op == "pool" and f.pool == pool
                and not any(k > 1 for k in f.kernel)]
    return near_misses


def is_strided_conv(row) -> bool:
    """A convolution (not transposed) with stride > 1 on some spatial axis."""
    f = facts(row)
    return f is not None and f.op in ("conv", "deformconv") and f.is_strided


def is_downsampling(row) -> bool:
    """A layer that reduces the resolution by striding: its jump grows on some axis (not a global op).

    Covers strided convs, pools with stride > 1 and adaptive pools to a smaller (non-1) size; GAP and
    flatten are global ops, not downsamplings; upsample/pixelshuffle/convtranspose shrink the jump.
    """
    f = facts(row)
    if f is None or f.is_global or not row.rf_in or len(row.rf_in) != len(row.rf_out):
        return False
    return any(b.j > a.j and not b.glob for a, b in zip(row.rf_in, row.rf_out))


def is_dilated(row) -> bool:
    f = facts(row)
    return f is not None and f.is_conv and f.is_dilated


def is_classifier_like(row) -> bool:
    """What may follow GAP in a classifier head: linear, flatten, softmax, BN/activation/dropout, or a
    1x1 conv applied to a 1x1 map (GAP with keepdim)."""
    f = facts(row)
    if f is None:
        return False
    if f.op in ("linear", "flatten", "softmax") or f.is_passthrough:
        return True
    if f.op == "join" and row.is_global:  # pooled heads joined after the global ops (GAP + GAP of two paths)
        return True
    return f.is_pointwise_conv and all(n == 1 for n in row.in_shape[1:])


# --------------------------------------------------------------------------- finders


def layer_rows(analysis, pred) -> list:
    return [r for r in analysis.layers if pred(r)]


def path_rows(analysis, pred) -> list:
    """Matching rows along the input-to-output path with the most matches (longest path in the DAG)."""
    best: dict[int, list] = {}
    for r in analysis.layers:
        before = max((best[id(p)] for p in analysis.producers(r)), key=len, default=[])
        best[id(r)] = before + [r] if pred(r) else before
    last = analysis.by_node.get(analysis.graph.output)
    return best.get(id(last), []) if last is not None else []


def successors(analysis) -> dict[int, list]:
    """Data flow between leaf rows: id(row) -> the rows that consume its output directly."""
    return analysis.consumers()


def is_gate(row, shape) -> bool:
    """A multiply that keeps a `shape` map's shape: the map scaled element-wise by a broadcast gate (an SE
    block's per-channel weights, a spatial attention map). It mixes neither channels nor positions."""
    f = facts(row)
    return f is not None and f.op == "join" and f.join == "mul" and tuple(row.out_shape) == tuple(shape)


def depthwise_separable_rows(analysis) -> list:
    """Each depthwise conv whose output feeds a 1x1 groups-1 conv, directly or through BN/activation/
    dropout layers and gates (an SE block's multiply) only. One count per pair: a pointwise conv completes
    at most one pair. Works for `dwsconv`, `depthwise` + `pointwise`, two plain convs (`g: in` then `k: 1`)
    and traced models (MobileNetV3/EfficientNet blocks: depthwise, SE, pointwise)."""
    succ = successors(analysis)
    used: set[int] = set()
    found = []
    for row in analysis.layers:
        if not is_depthwise(row) or not row.facts.filters_spatially:  # a 1x1 depthwise conv filters nothing
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
            if is_passthrough(nxt) or is_gate(nxt, row.out_shape):
                frontier += succ.get(id(nxt), [])
    return found


def depthwise_separable_near_misses(analysis) -> list:
    """The depthwise convs that do not make a depthwise-separable pair, each with the reason."""
    found = depthwise_separable_rows(analysis)
    return [(r, "no 1x1 conv follows it (directly or through BN/activation/dropout/a gate), so it is not separable"
             if r.facts.filters_spatially else "a 1x1 depthwise conv only scales each channel: it filters nothing")
            for r in analysis.layers if is_depthwise(r) and r not in found]


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    find: Callable  # analysis -> list of rows (one per counted occurrence)
    aliases: tuple[str, ...] = field(default=())
    counting: str = "layers"  # "layers" | "path" (see the module docstring)
    near_misses: Callable | None = None  # analysis -> [(row, why)]: what almost counts, and why it does not


KINDS: dict[str, Kind] = {}
_ALIASES: dict[str, str] = {}


def kind(name: str, description: str, pred=None, *, find=None, aliases=(), counting="layers",
         near_misses=None) -> Kind:
    """Register a kind from a row predicate (counted over layers or along a path) or a custom finder."""
    if name in KINDS or name in _ALIASES:
        raise RuntimeError(f"rule kind '{name}' defined twice")
    if find is None:
        find = (lambda a: path_rows(a, pred)) if counting == "path" else (lambda a: layer_rows(a, pred))
    k = Kind(name, description, find, tuple(aliases), counting, near_misses)
    KINDS[name] = k
    for alias in (name, *aliases):
        _ALIASES[alias] = name
    return k


def _op_is(*ops):
    return lambda r: r.kind == "layer" and r.facts.op in ops


kind("conv", "any convolution: conv, pointwise, depthwise, grouped, transposed, deformable "
     "(each half of a dwsconv counts)", is_conv, aliases=("convolution",))
kind("pointwise", "1x1 convolution with groups 1", is_pointwise_conv, aliases=("pointwise_conv", "conv1x1"))
kind("depthwise", "convolution with groups == in_channels > 1", is_depthwise, aliases=("depthwise_conv",))
kind("grouped", "convolution with 1 < groups < in_channels",
     lambda r: is_plain_conv(r) and r.facts.groups > 1 and not is_depthwise(r), aliases=("grouped_conv",))
kind("depthwise_separable", "a depthwise conv with a kernel wider than 1 followed (directly or through "
     "BN/activation/dropout/an SE gate) by a 1x1 groups-1 conv; one per pair, however written",
     find=depthwise_separable_rows,
     near_misses=depthwise_separable_near_misses, aliases=("dwsconv", "dws", "separable", "depthwise_separable_conv"))
kind("dilated", "convolution with dilation > 1 on an axis whose kernel is wider than 1 (on a 1-wide axis "
     "dilation changes nothing)", is_dilated, aliases=("dilated_conv", "atrous"),
     near_misses=lambda a: [(r, "its dilation is on 1-wide kernel axes, where it changes nothing")
                            for r in a.layers if is_conv(r) and any(d > 1 for d in r.facts.dilation)
                            and not is_dilated(r)])
kind("strided_conv", "convolution (not transposed) with stride > 1 on some axis; counted along the "
     "path with the most (a residual's strided projection shortcut does not count twice)",
     is_strided_conv, counting="path", aliases=("stride2_conv", "strided", "strided_convolution"))
kind("downsampling", "any layer that reduces resolution by a stride (strided conv or pool, adaptive pool to "
     "a smaller size); counted along the path with the most; a k=1 s=1 pool is an identity, not one",
     is_downsampling, counting="path", aliases=("downsample", "stride2"))
kind("maxpool", "local max pooling over a window (a 1x1 pool takes no max: it is an identity, or a subsample "
     "when strided; a whole-map pool is a global pool: none of them counts)", lambda r: is_pool(r, "max"),
     aliases=("max_pool", "maxpooling"), near_misses=single_position_pools("max"))
kind("avgpool", "local average pooling (not global)", lambda r: is_pool(r, "avg"), aliases=("avg_pool",))
kind("gap", "global average pooling, however written: gap, adaptive average pool to 1, an average pool "
     "whose window covers the whole map, a mean over the spatial axes", is_gap,
     aliases=("global_avg_pool", "global_average_pool"))
kind("global_pool", "any pooling over the whole map (average or max)", is_global_pool,
     aliases=("global_pooling",))
kind("pool", "any local pooling (max or average; not global, not an identity)", is_pool, aliases=("pooling",))
kind("flatten", "flatten", _op_is("flatten"))
kind("linear", "fully connected layer", _op_is("linear"), aliases=("fc", "dense"))
kind("transposed_conv", "transposed convolution", _op_is("convtranspose"), aliases=("convtranspose",))
kind("deformable_conv", "deformable convolution", _op_is("deformconv"), aliases=("deformconv",))
kind("upsample", "upsampling: upsample or pixelshuffle", _op_is("resample"))
kind("norm", "standalone normalisation layer (conv `bn: true` is part of the conv's row)",
     _op_is("norm"), aliases=("batchnorm", "bn"))
kind("activation", "standalone activation layer (conv `act:` is part of the conv's row)", is_activation,
     aliases=("act",))
kind("dropout", "standalone dropout layer", _op_is("dropout"))
kind("join", "the join of parallel branches (residual add, concat, multiply)", _op_is("join"),
     aliases=("add", "concat", "residual", "mul"))
kind("identity", "a layer that passes its input through (identity, a k=1 s=1 pool, zero padding)",
     _op_is("identity"))
kind("channel_shuffle", "a channel shuffle (ShuffleNet): whole channels reordered, no weights", _op_is("shuffle"),
     aliases=("shuffle",))


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
           "is_global_pool", "is_classifier_like", "successors", "path_rows"]
