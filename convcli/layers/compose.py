"""Composition: sequences, repeats, residual blocks and parallel branches joined by add or concat.

A multi-path block's RF follows Araujo et al. (Distill 2019): per axis, the largest RF over its
paths. The join (add, concat) is itself a row with k=1, so the table shows every operation.
"""

from __future__ import annotations

import copy

from convcli.layers.registry import ACTIVATIONS, MAX_ROWS, Facts, LayerType, Param, register
from convcli.yamlio import repeat_lines


@register
class Seq(LayerType):
    name = "seq"
    aliases = ("sequential", "block")
    family = "compose"
    kind = "seq"
    positional = "layers"
    params = (Param("layers", "layers", required=True),)
    doc = "a group of layers shown as one block (label it with `name: C1`)"
    examples = (((3, 8, 8), {"layers": [{"conv": {"out": 4}}, {"relu": None}]}),)

    def expand(self, a, shape, where):
        return copy.copy(a["layers"])  # a copy that keeps the YAML list's item lines


@register
class Repeat(LayerType):
    name = "repeat"
    family = "compose"
    kind = "seq"
    params = (Param("times", "int", required=True, aliases=("n",), minimum=1, maximum=None),
              Param("layers", "layers", required=True))
    doc = "repeats its layers `times` times (each copy has its own weights)"
    examples = (((3, 8, 8), {"times": 3, "layers": [{"conv": {"out": 4, "k": 3, "p": 0}}]}),)

    def expand(self, a, shape, where):
        if a["times"] * max(len(a["layers"]), 1) > MAX_ROWS:
            raise where.error(f"repeat expands to more than {MAX_ROWS:,} layers", got=f"times: {a['times']:,}")
        return repeat_lines(a["layers"], a["times"])


class _Join(LayerType):
    """Parallel branches on the same input, joined by `join_op`."""

    family = "compose"
    kind = "parallel"
    join_op = "add"

    def branch_names(self, n: int) -> list[str]:
        return [str(i) for i in range(n)]

    def join(self, a, shapes, where):
        if self.join_op == "add":
            if any(s != shapes[0] for s in shapes):
                raise where.error(
                    "branches joined by add must have equal shapes", got=" vs ".join(str(list(s)) for s in shapes)
                )
            out = shapes[0]
        elif self.join_op == "mul":
            out = broadcast_shape(shapes, where)
        else:
            spatial = {tuple(s[1:]) for s in shapes}
            if len(spatial) != 1 or any(len(s) != len(shapes[0]) for s in shapes):
                raise where.error(
                    "branches joined by concat must have equal spatial sizes",
                    got=" vs ".join(str(list(s)) for s in shapes),
                )
            out = (sum(s[0] for s in shapes), *shapes[0][1:])
        return Facts(out_shape=tuple(out), op="join", join=self.join_op, act=a.get("act"),
                     in_channels=sum(s[0] for s in shapes), out_channels=out[0])

    def build_join(self, a, shapes):
        from convcli.layers.act import make_act
        from convcli.layers.modules import Add, Concat, Mul

        return {"add": Add, "concat": Concat, "mul": Mul}[self.join_op](make_act(a["act"]) if a.get("act") else None)


def broadcast_shape(shapes, where) -> tuple[int, ...]:
    """Element-wise product of branch outputs: each axis equal or 1 (PyTorch broadcasting, same rank)."""
    if any(len(s) != len(shapes[0]) for s in shapes):
        raise where.error("branches joined by mul must have the same rank",
                          got=" vs ".join(str(list(s)) for s in shapes))
    out = []
    for sizes in zip(*shapes):
        big = {n for n in sizes if n != 1}
        if len(big) > 1:
            raise where.error("branches joined by mul must have equal sizes or size 1 on each axis (broadcasting)",
                              got=" vs ".join(str(list(s)) for s in shapes))
        out.append(big.pop() if big else 1)
    return tuple(out)


_BRANCH_KEYS = (
    Param("branches", "branches", required=True),
    Param(
        "act",
        "act",
        None,
        aliases=("activation",),
        choices=ACTIVATIONS,
        help="activation after the join",
    ),
)


@register
class Concat(_Join):
    name = "concat"
    aliases = ("cat",)
    positional = "branches"
    params = _BRANCH_KEYS
    join_op = "concat"
    doc = "parallel branches concatenated along channels (Inception); an empty branch is the identity"
    examples = (((4, 9, 9), {"branches": [[{"conv": {"out": 2, "k": 1}}], [{"conv": {"out": 3, "k": 5}}], []]}),)

    def branches(self, a, shape, where):
        return list(a["branches"])


@register
class AddBranches(_Join):
    name = "add"
    aliases = ("sum",)
    positional = "branches"
    params = _BRANCH_KEYS
    doc = "parallel branches summed element-wise; an empty branch is the identity"
    examples = (((4, 9, 9), {"branches": [[{"conv": {"out": 4, "k": 3}}], []], "act": "relu"}),)

    def branches(self, a, shape, where):
        return list(a["branches"])


@register
class MulBranches(_Join):
    name = "mul"
    aliases = ("multiply", "gate")
    positional = "branches"
    params = _BRANCH_KEYS
    join_op = "mul"
    doc = ("parallel branches multiplied element-wise with broadcasting (squeeze-and-excitation, attention "
           "gates); an empty branch is the identity")
    examples = (
        ((8, 6, 6), {"branches": [[], [{"gap": {"keepdim": True}}, {"pointwise": {"out": 2, "act": "relu"}},
                                        {"pointwise": {"out": 8, "act": "sigmoid"}}]]}),
        ((4, 5, 5), {"branches": [[{"conv": {"out": 4}}], [{"conv": {"out": 1, "act": "sigmoid"}}]]}),
    )

    def branches(self, a, shape, where):
        return list(a["branches"])


@register
class Residual(_Join):
    name = "residual"
    aliases = ("res", "skip")
    positional = "layers"
    params = (
        Param("layers", "layers", required=True),
        Param(
            "shortcut",
            "any",
            "auto",
            help="auto (identity, or a 1x1 strided projection when shapes differ), identity, or layers",
        ),
        Param(
            "act",
            "act",
            None,
            aliases=("activation",),
            choices=_BRANCH_KEYS[1].choices,
            help="activation after the add (ResNet: relu)",
        ),
    )
    doc = "y = act(body(x) + shortcut(x)) (He et al., 2016)"
    examples = (
        ((4, 8, 8), {"layers": [{"conv": {"out": 4}}]}),
        ((4, 8, 8), {"layers": [{"conv": {"out": 8, "s": 2}}], "act": "relu"}),
        ((2, 16), {"layers": [{"conv": {"out": 2, "k": 3, "d": 4}}]}),
    )

    def branch_names(self, n):
        return ["body", "shortcut"]

    def branches(self, a, shape, where):
        sc = a["shortcut"]
        if isinstance(sc, list):
            return [list(a["layers"]), sc]
        if sc == "identity":
            return [list(a["layers"]), []]
        if sc != "auto":
            raise where.error("unknown shortcut", expected="auto, identity, or a list of layers", got=sc)

        def auto(body_out):
            if tuple(body_out) == tuple(shape):
                return []
            if len(body_out) != len(shape) or any(n % m for n, m in zip(shape[1:], body_out[1:])):
                raise where.error(
                    "cannot make a projection shortcut: the body's output size does not divide the input size",
                    got=f"{list(shape)} -> {list(body_out)}",
                )
            stride = [n // m for n, m in zip(shape[1:], body_out[1:])]
            # A projection, not a block: no activation or dropout from the spec's defaults.
            return [{"conv": {"out": body_out[0], "k": 1, "p": 0, "s": stride, "act": False, "dropout": 0.0}}]

        return [list(a["layers"]), auto]


@register
class Reuse(LayerType):
    name = "reuse"
    aliases = ("shared", "same_as")
    family = "compose"
    kind = "reuse"
    positional = "of"
    params = (Param("of", "str", required=True, aliases=("layer", "target"),
                    help="the `name:` of an earlier layer whose weights this one uses again"),)
    doc = "applies an earlier named layer again with the same weights (a module called twice); params count once"
    examples = (((4, 6, 6), {"of": "first"}),)
    example_before = ({"conv": {"out": 4, "name": "first"}},)  # the layer the example reuses
