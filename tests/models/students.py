"""Networks written the way students write them, for the PyTorch front-end tests. Every expected
number is worked by hand in tests/test_torch_frontend.py."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(cin, cout, **kw):
    return [nn.Conv2d(cin, cout, 3, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU()]


class S7Student(nn.Module):
    """C1..C4, O as nn.Sequential attributes; GAP written as AvgPool2d(4) over the 4x4 map; a
    MaxPool2d(1, 1) (an identity) in C4; a 1x1 conv head, x.view(-1, 10), F.log_softmax."""

    def __init__(self):
        super().__init__()
        self.C1 = nn.Sequential(*cbr(3, 16, padding=1), *cbr(16, 32, padding=1), nn.MaxPool2d(2))
        self.C2 = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),  # depthwise
            nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),  # pointwise
            nn.MaxPool2d(2),
        )
        self.C3 = nn.Sequential(*cbr(64, 64, padding=2, dilation=2), nn.MaxPool2d(2))
        self.C4 = nn.Sequential(*cbr(64, 128, padding=1), nn.MaxPool2d(1, 1))
        self.O = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(128, 10, 1))

    def forward(self, x):
        x = self.C4(self.C3(self.C2(self.C1(x))))
        x = self.O(x)
        x = x.view(-1, 10)
        return F.log_softmax(x, dim=-1)


class S7TopLevel(nn.Module):
    """C1..C4 as Sequentials, then GAP and the classifier as single top-level modules: self.gap, self.O."""

    def __init__(self):
        super().__init__()
        self.C1 = nn.Sequential(*cbr(3, 16, padding=1), nn.MaxPool2d(2))
        self.C2 = nn.Sequential(*cbr(16, 32, padding=1), nn.MaxPool2d(2))
        self.C3 = nn.Sequential(*cbr(32, 32, padding=1), nn.MaxPool2d(2))
        self.C4 = nn.Sequential(*cbr(32, 64, padding=1))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.O = nn.Linear(64, 10)

    def forward(self, x):
        x = self.gap(self.C4(self.C3(self.C2(self.C1(x)))))
        return self.O(torch.flatten(x, 1))


class Attributes(nn.Module):
    """Layers as attributes, F.relu(self.bn(self.conv(x))) in forward, GAP as AdaptiveAvgPool2d(1)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.gap(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)


class SharedSEResidual(nn.Module):
    """A conv called twice (shared weights) inside a residual add, a squeeze-and-excitation gate, and
    GAP written as F.adaptive_avg_pool2d; the SE block's own x.mean is not the classifier's GAP."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.shared(x))
        y = F.relu(self.shared(y))
        x = x + y
        x = self.pool(x)
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        x = x * s
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.fc(x)


class MeanHead(nn.Module):
    """GAP written as x.mean((2, 3))."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:
            x = F.relu(x)
        return x


class Custom(nn.Module):
    """A layer type convcli does not know (AlexNet's local response normalisation)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.LocalResponseNorm(2)

    def forward(self, x):
        return self.act(self.conv(x))


class WrongChannels(nn.Module):
    """The second conv expects 16 channels; the first makes 8 (the forward fails in `d`)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)
        self.d = nn.Conv2d(16, 8, 3)

    def forward(self, x):
        return self.d(self.c(x))


class WrongFeatures(nn.Module):
    """The head expects 100 features; a 3x3 conv on 32x32 flattens to 8*30*30 = 7200."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(100, 10)

    def forward(self, x):
        return self.fc(self.c(x).flatten(1))


class SpareHead(nn.Module):
    """A head defined but never called: 8*10 + 10 = 90 parameters the forward does not use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.spare = nn.Linear(8, 10)

    def forward(self, x):
        return self.conv(x)


class GapBySize(nn.Module):
    """GAP as F.avg_pool2d(x, x.size()[2:]): the kernel is read from the map's own size."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.c(x)), x.size()[2:])
        return self.fc(x.view(x.size(0), -1))


def make_attributes():
    """A zero-argument factory, as `students.py:make_attributes`."""
    return Attributes()


class TinyTrainable(nn.Module):
    """The tests' tiny spec written as a module (training a PyTorch model like a spec)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*cbr(3, 16, padding=1), nn.MaxPool2d(2), *cbr(16, 32, padding=1),
                                      nn.MaxPool2d(2))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))
