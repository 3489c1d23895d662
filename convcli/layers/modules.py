"""The few torch modules the registry needs beyond torch.nn (imported only when building a model)."""

from __future__ import annotations

import torch
from torch import nn


class _Join(nn.Module):
    """The join of parallel branches (a module, so hooks, tables and RF see it), then an optional activation."""

    def __init__(self, act: nn.Module | None = None):
        super().__init__()
        self.act = act

    def combine(self, xs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        y = self.combine(xs)
        return self.act(y) if self.act is not None else y


class Add(_Join):
    """Element-wise sum of branch outputs."""

    def combine(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


class Concat(_Join):
    """Channel concatenation of branch outputs."""

    def combine(self, xs):
        return torch.cat(xs, dim=1)


class Mul(_Join):
    """Element-wise product of branch outputs, broadcasting size-1 axes (an SE block's channel gate)."""

    def combine(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y * x
        return y


class SelectChannels(nn.Module):
    """Channels start..stop-1 of an (N, C, *spatial) map: one piece of a channel split (x.chunk(2, dim=1))."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start:self.stop]


class Reuse(nn.Module):
    """A layer applied again with the weights of an earlier one. The earlier module is held, not
    registered, so its parameters and state_dict keys exist once, where it was defined."""

    def __init__(self, target: nn.Module):
        super().__init__()
        object.__setattr__(self, "target", target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)


class Parallel(nn.Module):
    """Runs every branch on the same input, then joins them. An empty branch is the identity."""

    def __init__(self, branches: list[nn.Module], join: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.join = join

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join([branch(x) for branch in self.branches])


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels at every position of a (N, C, *spatial) map (ConvNeXt's LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)
        return super().forward(x).movedim(-1, 1)


class DeformConvBlock(nn.Module):
    """torchvision's DeformConv2d with the conv that predicts its offsets (zero-initialised, so it
    starts as a plain conv, as in Dai et al., 2017)."""

    def __init__(self, cin, cout, k, s, p, d, groups, offset_groups, bias):
        super().__init__()
        from torchvision.ops import DeformConv2d

        taps = k[0] * k[1]
        self.offset = nn.Conv2d(cin, 2 * offset_groups * taps, k, s, p, d, bias=True)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(cin, cout, k, s, p, d, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))
