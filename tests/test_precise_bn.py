"""Precise BN: before evaluating, BN statistics are recomputed under the current weights."""

import contextlib

import torch
from torch import nn

from convcli.train.loop import recalibrate_bn


def test_running_stats_become_the_average_over_the_batches():
    bn = nn.BatchNorm2d(2)  # fresh: running mean 0, var 1, as if the EMA had not caught up
    model = nn.Sequential(nn.Dropout(0.5), bn).train()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 2, 4, 4, generator=g) * 3 + 5 for _ in range(3)]
    assert recalibrate_bn(model, batches, contextlib.nullcontext())
    # By hand: the cumulative average of the per-batch means and unbiased variances (dropout off).
    means = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert torch.allclose(bn.running_var, variances, atol=1e-4)
    # Modes and momentum are restored.
    assert model.training and bn.training and model[0].training and bn.momentum == 0.1


def test_model_without_batchnorm_is_left_alone():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU())
    before = [p.clone() for p in model.parameters()]
    assert not recalibrate_bn(model, [torch.randn(2, 1, 5, 5)], contextlib.nullcontext())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
