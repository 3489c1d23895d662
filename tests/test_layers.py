"""Every registered layer type, checked against PyTorch itself: output shape from a real forward
pass, parameter count from torch's parameters(), and MACs from torch.utils.flop_counter."""

import pytest
import torch
from helpers import analyze_layers, build
from torch.utils.flop_counter import FlopCounterMode

from convcli.build import count_params, forward_shapes
from convcli.layers.registry import entries, lookup


def analyze_example(name, shape, opts):
    """A one-layer spec (after the layers the entry's example needs, e.g. the target of a `reuse`);
    vector inputs (C,) come from a flatten of a (C, 1) map."""
    before = list(lookup(name).example_before)
    if len(shape) == 1:
        return analyze_layers([shape[0], 1], ["flatten", *before, {name: opts}])
    return analyze_layers(shape, [*before, {name: opts}])


CASES = [pytest.param(e.name, shape, opts, id=f"{e.name}-{i}")
         for e in entries() for i, (shape, opts) in enumerate(e.examples)]


def test_every_registered_type_has_an_example():
    assert [e.name for e in entries() if not e.examples] == []


@pytest.mark.parametrize("name,shape,opts", CASES)
def test_shapes_and_params_match_torch(name, shape, opts):
    a = analyze_example(name, shape, opts)
    model = build(a)
    assert count_params(model)[0] == a.params
    shapes = forward_shapes(model, a.input_shape)
    for row in a.rows:
        assert shapes[row.path] == row.out_shape, row.path


@pytest.mark.parametrize("name,shape,opts", [c for c in CASES if c.values[0] != "deformconv"])
def test_macs_match_torch_flop_counter(name, shape, opts):
    # flop_counter counts 2 FLOPs per multiply-accumulate of conv / transposed conv / matmul weights,
    # without bias: the same rule as ours, so MACs = FLOPs / 2.
    a = analyze_example(name, shape, opts)
    model = build(a).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *a.input_shape))
    assert a.macs == counter.get_total_flops() // 2


def test_transposed_conv_macs_scale_with_input_positions():
    # ConvTranspose2d(3->1, k=2, s=2) on a 2x2 input: each of the 4 input positions multiplies its
    # 3 channels into a 2x2 patch of 1 output channel: 4 * 3 * 1 * 2 * 2 = 48 MACs (torchinfo says 192).
    a = analyze_layers([3, 2, 2], [{"convtranspose": {"out": 1, "k": 2, "s": 2}}])
    assert a.macs == 48
    assert a.output_shape == (1, 4, 4)


def test_depthwise_and_dilation_macs_by_hand():
    # depthwise 3x3 on 8 channels of 10x10 (p=1): 100 positions * 8 channels * (8/8) * 9 = 7,200.
    a = analyze_layers([8, 10, 10], [{"depthwise": {"k": 3}}])
    assert a.macs == 7200
    # dilation changes the RF, not the cost: same 7,200 with d=2 (p=2 keeps the size).
    b = analyze_layers([8, 10, 10], [{"depthwise": {"k": 3, "d": 2, "p": 2}}])
    assert b.macs == 7200 and b.rf[0].r == 5


def test_deformable_conv_counts_offset_conv_by_hand():
    # DeformConv2d(3->4, 3x3) on 9x9 (p=1): weights 4*3*9 = 108 + bias 4;
    # offset conv 3 -> 2*9 = 18 channels, 3x3: 18*3*9 = 486 + bias 18. Total 616.
    a = analyze_layers([3, 9, 9], [{"deformconv": {"out": 4, "k": 3}}])
    assert a.params == 108 + 4 + 486 + 18
    # MACs: 81 positions * (108 + 486) = 48,114.
    assert a.macs == 81 * (108 + 486)


def test_shared_parameter_totals_come_from_torch():
    # count_params de-duplicates a tensor used twice (summing rows would count it twice).
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, lin)
    assert count_params(model)[0] == 20


def test_forward_check_leaves_bn_statistics_alone():
    a = analyze_layers([3, 8, 8], [{"conv": {"out": 4, "bn": True}}])
    model = build(a).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    forward_shapes(model, (3, 8, 8))
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert model.training  # the mode is restored


@pytest.mark.parametrize("per_axis", [{"k": [3, 1]}, {"s": [2, 1]}, {"d": [2, 1]}, {"p": [1, 0]}])
def test_dwsconv_takes_per_axis_values_as_its_parts_do(per_axis):
    # The composite passes its k/s/d/p to the depthwise part; a per-axis list must survive that. Torch's own
    # forward pass and parameter count are the reference.
    from tests.helpers import analyze_layers, build

    a = analyze_layers([4, 16, 16], [{"dwsconv": {"out": 8, **per_axis}}])
    model = build(a)
    assert tuple(model(torch.zeros(1, 4, 16, 16)).shape[1:]) == a.output_shape
    assert sum(p.numel() for p in model.parameters()) == a.params


def test_an_se_gate_with_linear_layers_is_unflattened_for_its_mul():
    # gap -> linear 16->4 (64 + 4 bias) -> linear 4->16 (64 + 16) -> unflatten to (16, 1, 1) -> mul: 148.
    from tests.helpers import analyze_layers, build

    gate = ["gap", {"linear": {"out": 4, "act": "relu"}}, {"linear": {"out": 16, "act": "sigmoid"}}, "unflatten"]
    a = analyze_layers([16, 8, 8], [{"mul": [[], gate]}])
    assert a.params == 148 and tuple(a.output_shape) == (16, 8, 8)
    model = build(a)
    assert tuple(model(torch.zeros(2, 16, 8, 8)).shape) == (2, 16, 8, 8)
    assert sum(p.numel() for p in model.parameters()) == 148
