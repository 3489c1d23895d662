"""Channel rearrangements without weights: ShuffleNet's channel shuffle, through which grouped 1x1 convs
exchange information. It moves whole channels, so shapes, receptive fields and jumps are unchanged."""

from __future__ import annotations

from convcli.layers.conv import feature_map_rank
from convcli.layers.registry import Facts, LayerType, Param, register


@register
class ChannelShuffle(LayerType):
    name = "channelshuffle"
    aliases = ("channel_shuffle", "shuffle")
    family = "channels"
    positional = "groups"
    params = (Param("groups", "int", 2, aliases=("g",), minimum=1,
                    help="the channels as groups x (C/groups), read out transposed"),)
    doc = "channel shuffle (ShuffleNet): channel i*(C/g)+j moves to j*g+i; no weights, RF unchanged"
    examples = (((8, 5, 5), {"groups": 2}), ((6, 7), {"groups": 3}))

    def infer(self, a, shape, where):
        feature_map_rank(self, shape, where)
        g = a["groups"]
        if shape[0] % g:
            raise where.error(f"a channel shuffle in {g} groups needs channels divisible by {g}", got=shape[0])
        return Facts(out_shape=tuple(shape), op="shuffle", in_channels=shape[0], out_channels=shape[0], groups=g)

    def build(self, a, shape):
        import torch.nn as nn

        return nn.ChannelShuffle(a["groups"])


@register
class Channels(LayerType):
    name = "channels"
    aliases = ("select_channels", "channel_split")
    family = "channels"
    params = (
        Param("start", "int", 0, minimum=0, help="the first channel kept"),
        Param("stop", "int", None, required=True, minimum=1, help="one past the last channel kept"),
    )
    doc = ("channels start..stop-1 of the input (a channel split: ShuffleNetV2's x.chunk(2, dim=1), one branch "
           "each); no weights, RF unchanged")
    examples = (((8, 5, 5), {"start": 4, "stop": 8}), ((6, 7), {"stop": 2}))

    def infer(self, a, shape, where):
        start, stop = a["start"], a["stop"]
        if not start < stop <= shape[0]:
            raise where.error(f"channels {start}..{stop - 1} are not within the input's {shape[0]} channels",
                              expected=f"0 <= start < stop <= {shape[0]}", got=f"start {start}, stop {stop}")
        return Facts(out_shape=(stop - start, *shape[1:]), op="select", in_channels=shape[0],
                     out_channels=stop - start)

    def build(self, a, shape):
        from convcli.layers.modules import SelectChannels

        return SelectChannels(a["start"], a["stop"])
