"""Normalisation layers: 2 affine parameters per channel, no MACs counted (not a weight layer)."""

from __future__ import annotations

from convcli.layers.registry import Facts, LayerType, Param, register


class _Norm(LayerType):
    family = "norm"

    def infer(self, a, shape, where):
        affine = a.get("affine", True)
        return Facts(out_shape=shape, params=2 * shape[0] if affine else 0, op="norm", in_channels=shape[0],
                     out_channels=shape[0])


@register
class BatchNorm(_Norm):
    name = "batchnorm"
    aliases = ("bn", "batchnorm1d", "batchnorm2d", "batchnorm3d")
    params = (Param("eps", "float", 1e-5, minimum=0.0), Param("momentum", "float", 0.1, minimum=0.0),
              Param("affine", "bool", True, help="learnable scale and shift (2 params per channel)"))
    doc = "batch normalisation over the channel axis"
    examples = (((3, 4, 4), {}), ((6,), {}))

    def build(self, a, shape):
        import torch.nn as nn

        cls = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][max(len(shape) - 1, 1) - 1]
        return cls(shape[0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"])


@register
class LayerNorm(_Norm):
    name = "layernorm"
    aliases = ("ln",)
    params = (Param("eps", "float", 1e-5, minimum=0.0), Param("affine", "bool", True))
    doc = "layer norm over channels at each position (ConvNeXt's LayerNorm2d); over features for vectors"
    examples = (((3, 4, 4), {}), ((6,), {}))

    def build(self, a, shape):
        import torch.nn as nn

        from convcli.layers.modules import ChannelLayerNorm

        if len(shape) == 1:
            return nn.LayerNorm(shape[0], eps=a["eps"], elementwise_affine=a["affine"])
        return ChannelLayerNorm(shape[0], a["eps"], elementwise_affine=a["affine"])


@register
class GroupNorm(_Norm):
    name = "groupnorm"
    aliases = ("gn",)
    positional = "groups"
    params = (Param("groups", "int", 32, aliases=("g",), minimum=1), Param("eps", "float", 1e-5, minimum=0.0),
              Param("affine", "bool", True))
    doc = "group normalisation"
    examples = (((4, 4, 4), {"groups": 2}),)

    def infer(self, a, shape, where):
        if shape[0] % a["groups"]:
            raise where.error(f"groups={a['groups']} must divide the {shape[0]} channels")
        return super().infer(a, shape, where)

    def build(self, a, shape):
        import torch.nn as nn

        return nn.GroupNorm(a["groups"], shape[0], eps=a["eps"], affine=a["affine"])
