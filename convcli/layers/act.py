"""Activations, dropout and softmax: pointwise ops (k=1), no MACs; no parameters but PReLU's slopes."""

from __future__ import annotations

from convcli.layers.registry import ACTIVATIONS, Facts, LayerType, Param, register


def act_modules() -> dict:
    """Activation name -> torch module class: the one table the builder, export and the PyTorch front-end
    read (a new activation is added here and in ACTIVATIONS)."""
    import torch.nn as nn

    return {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "elu": nn.ELU,
        "celu": nn.CELU,
        "hardswish": nn.Hardswish,
        "hardsigmoid": nn.Hardsigmoid,
        "mish": nn.Mish,
        "softplus": nn.Softplus,
        "identity": nn.Identity,
    }


# The activations with settings: the YAML key (a Param) and the torch keyword it is, once for the builder,
# the PyTorch front-end (module attributes and F.* arguments, in positional order) and `convcli layers`.
ACT_PARAMS: dict[str, tuple[tuple[Param, str], ...]] = {
    "leaky_relu": ((Param("slope", "float", 0.01, aliases=("negative_slope",)), "negative_slope"),),
    "elu": ((Param("alpha", "float", 1.0), "alpha"),),
    "celu": ((Param("alpha", "float", 1.0), "alpha"),),
    "softplus": ((Param("beta", "float", 1.0), "beta"), (Param("threshold", "float", 20.0), "threshold")),
    "gelu": ((Param("approximate", "str", "none", choices=("none", "tanh")), "approximate"),),
}


def make_act(name: str | None, slope: float | None = None, **settings):
    """The torch module for an activation name (used by conv/linear blocks too); `settings` by YAML key."""
    if slope is not None:
        settings["slope"] = slope
    torch_kw = {kw: settings[p.name] for p, kw in ACT_PARAMS.get(name, ()) if settings.get(p.name) is not None}
    return act_modules()[name](**torch_kw)


class _Pointwise(LayerType):
    family = "act"
    op = "act"

    def infer(self, a, shape, where):
        # `act` names the function (relu, log_softmax) for messages; `op` is what rules and views decide on
        return Facts(out_shape=shape, op=self.op, act=self.name if self.op in ("act", "softmax") else None)


def _activation(act_name: str, extra: tuple[Param, ...] = ()):
    @register
    class Activation(_Pointwise):
        name = act_name
        params = extra
        doc = f"{act_name} activation"
        examples = (((8, 5, 5), {}), ((6,), {}))

        def build(self, a, shape):
            return make_act(self.name, **{p.name: a.get(p.name) for p in self.params})

    return Activation


for _name in ACTIVATIONS:
    if _name != "identity":
        _activation(_name, tuple(p for p, _ in ACT_PARAMS.get(_name, ())))


@register
class Identity(_Pointwise):
    name = "identity"
    op = "identity"
    doc = "passes its input through"
    examples = (((4, 6, 6), {}),)

    def build(self, a, shape):
        import torch.nn as nn

        return nn.Identity()


@register
class PReLU(_Pointwise):
    name = "prelu"
    params = (
        Param("per_channel", "bool", False, help="a slope per channel (nn.PReLU(C)); else one for all"),
        Param("init", "float", 0.25, help="the slopes' starting value (nn.PReLU's init)"),
    )
    doc = "PReLU: max(0, x) + a·min(0, x) with a learned slope a (1 parameter, or 1 per channel)"
    examples = (((8, 5, 5), {}), ((8, 5, 5), {"per_channel": True}), ((6,), {"per_channel": True}))

    def infer(self, a, shape, where):
        return Facts(out_shape=shape, params=shape[0] if a["per_channel"] else 1, op="act", act="prelu")

    def build(self, a, shape):
        import torch.nn as nn

        return nn.PReLU(shape[0] if a["per_channel"] else 1, init=a["init"])


@register
class Dropout(_Pointwise):
    name = "dropout"
    op = "dropout"
    positional = "p"
    params = (Param("p", "float", 0.5, minimum=0.0, below=1.0, help="drop probability"),)
    doc = "element-wise dropout (inactive in eval mode)"
    examples = (((4, 6, 6), {"p": 0.2}),)

    def infer(self, a, shape, where):
        if a["p"] >= 1:
            raise where.error("dropout probability must be < 1", got=a["p"])
        return Facts(out_shape=shape, op="dropout")

    def build(self, a, shape):
        import torch.nn as nn

        return nn.Dropout(a["p"])


class _Softmax(_Pointwise):
    op = "softmax"
    doc = "softmax over the channel (or feature) axis"

    def build(self, a, shape):
        import torch.nn as nn

        return (nn.LogSoftmax if self.name == "log_softmax" else nn.Softmax)(dim=1)


@register
class Softmax(_Softmax):
    name = "softmax"
    examples = (((10,), {}), ((4, 3, 3), {}))


@register
class LogSoftmax(_Softmax):
    name = "log_softmax"
    doc = "log of the softmax over the channel (or feature) axis (pair with NLL loss)"
    examples = (((10,), {}),)
    aliases = ("logsoftmax",)
