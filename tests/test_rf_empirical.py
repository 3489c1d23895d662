"""The analytic RF against the model PyTorch actually built: the gradient-support check.

Recipe (receptive-field notes, §5): float64, constant positive weights and zero biases, max-pool
swapped for an average pool of the same geometry (max routes gradient to one input), eval mode
(BN becomes a positive affine map, dropout the identity). Backprop 1 from the centre unit of the
last spatial layer; the input pixels with non-zero gradient are its RF, clipped to the input.
"""

from pathlib import Path

import pytest
import torch
from helpers import analyze_layers

from convcli.analysis import analyze_file
from convcli.build import build_model

ROOT = Path(__file__).resolve().parent.parent


ACTIVATIONS = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.GELU, torch.nn.SiLU,
               torch.nn.LeakyReLU)


def structural(model):
    swapped = {}
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, ACTIVATIONS):
                swapped[child] = torch.nn.Identity()
                setattr(mod, child_name, swapped[child])
            if isinstance(child, torch.nn.MaxPool1d | torch.nn.MaxPool2d | torch.nn.MaxPool3d):
                nd = {torch.nn.MaxPool1d: 1, torch.nn.MaxPool2d: 2, torch.nn.MaxPool3d: 3}[type(child)]
                pool = [torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d][nd - 1]
                swapped[child] = pool(child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode)
                setattr(mod, child_name, swapped[child])
    for path, module in model.paths.items():  # keep the row -> module map pointing at the new modules
        model.paths[path] = swapped.get(module, module)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(0.0 if name.endswith("bias") else 0.1)
    return model.double().eval()


def measured_rf(analysis):
    """Per axis: how many input pixels the centre unit of the last spatial layer depends on."""
    model = structural(build_model(analysis))
    row = analysis.last_spatial_row()
    captured = {}
    model.paths[row.path].register_forward_hook(lambda m, i, o: captured.__setitem__("y", o))
    x = torch.ones(1, *analysis.input_shape, dtype=torch.float64, requires_grad=True)
    model(x)
    y = captured["y"]
    centre = tuple(n // 2 for n in y.shape[2:])
    y[(0, slice(None), *centre)].sum().backward()
    support = x.grad[0].abs().sum(0) > 0  # collapse channels
    sizes = []
    for ax in range(support.dim()):
        others = tuple(i for i in range(support.dim()) if i != ax)
        line = support.any(dim=others) if others else support
        idx = line.nonzero().flatten()
        sizes.append(int(idx.max() - idx.min() + 1))
    return sizes, centre, row


def expected_rf(row, centre, input_shape):
    """The analytic region of the centre unit, clipped to the input: centre = start + u*j, ± r/2."""
    out = []
    for a, u, n in zip(row.rf_out, centre, input_shape[1:]):
        c = a.start + u * a.j
        lo, hi = c - a.r / 2, c + a.r / 2  # continuous extent; pixel i spans [i, i+1)
        lo_px, hi_px = max(0, int(lo)), min(n - 1, int(hi) - 1 if hi == int(hi) else int(hi))
        out.append(hi_px - lo_px + 1)
    return out


SMALL = {
    "course table": ([1, 32, 32], [{"conv": {"out": 2, "k": 3, "s": s, "p": p}}
                                   for s, p in [(1, 1), (2, 0), (1, 0), (2, 1), (1, 1), (2, 0), (1, 0)]]),
    "dilated 1-D": ([1, 64], [{"conv": {"out": 2, "k": 3, "d": d, "p": 0}} for d in (1, 2, 4, 8)]),
    "3-D": ([1, 12, 16, 16], [{"conv": {"out": 2, "k": 3, "p": 0}}, {"maxpool": {"k": 2}},
                              {"conv": {"out": 2, "k": [1, 3, 3], "p": 0}}]),
    "spatially separable": ([1, 24, 24], [{"spatial_sep": {"out": 2, "k": 5, "p": 0}},
                                          {"conv": {"out": 2, "k": 3, "s": 2, "p": 0}}]),
    "even kernel, same": ([1, 20, 20], [{"conv": {"out": 2, "k": 4, "p": "same"}},
                                        {"conv": {"out": 2, "k": 2, "s": 2, "p": 0}}]),
    "residual": ([2, 16, 16], [{"residual": [{"conv": {"out": 2}}, {"conv": {"out": 2}}]},
                               {"residual": {"layers": [{"conv": {"out": 4, "s": 2}}, {"conv": {"out": 4}}]}}]),
    "dws + pools": ([3, 32, 32], [{"conv": {"out": 4, "bn": True, "act": "relu"}}, {"maxpool": {"k": 2}},
                                  {"dwsconv": {"out": 8, "bn": True, "act": "relu"}}, {"avgpool": {"k": 3, "s": 2}},
                                  {"conv": {"out": 8, "d": 2, "p": 2}}]),
}


@pytest.mark.parametrize("case", list(SMALL))
def test_gradient_support_equals_analytic_rf(case):
    shape, layers = SMALL[case]
    a = analyze_layers(shape, layers)
    sizes, centre, row = measured_rf(a)
    assert sizes == expected_rf(row, centre, a.input_shape)


def test_unclipped_case_matches_exactly():
    # A big enough input: the measured support is the analytic RF itself (course table: 45 > 32,
    # so use 7 layers on a 64 input instead, RF 45 fits).
    a = analyze_layers([1, 96, 96], SMALL["course table"][1])
    sizes, centre, row = measured_rf(a)
    assert sizes == [45, 45] == [int(x.r) for x in row.rf_out]


SEQUENTIAL_EXAMPLES = ["s7.yaml", "s7_strided.yaml", "course_rf_table.yaml", "lenet5.yaml", "vgg16.yaml",
                       "tcn1d.yaml", "resnet18.yaml", "conv3d_small.yaml"]


@pytest.mark.parametrize("name", SEQUENTIAL_EXAMPLES)
def test_examples_gradient_support(name):
    path = ROOT / "architectures" / name
    if not path.exists():
        pytest.fail(f"example {name} is missing")
    a = analyze_file(path)
    sizes, centre, row = measured_rf(a)
    assert sizes == expected_rf(row, centre, a.input_shape)


@pytest.mark.parametrize("layer", [
    {"convtranspose": {"out": 1, "k": 4, "s": 2, "p": 1}},  # the usual x2 upsampler: 2 inputs per output
    {"convtranspose": {"out": 1, "k": 2, "s": 2}},  # 1 input per output
    {"convtranspose": {"out": 1, "k": 3, "s": 2, "p": 1}},  # alternates between 1 and 2 inputs
    {"convtranspose": {"out": 1, "k": 5, "s": 3, "p": 2}},
    {"convtranspose": {"out": 1, "k": 2, "s": 2, "d": 3}},  # dilated: one input per output, not ceil(4/2) = 2
    {"convtranspose": {"out": 1, "k": 3, "s": 3, "d": 2}},
    {"upsample": {"scale": 2, "mode": "linear"}},
    {"upsample": {"scale": 3}},
])
def test_fractional_stride_layers_against_gradient_support(layer):
    # Per output unit, the inputs with non-zero gradient: outputs are not on a regular grid (outputs 2i and
    # 2i+1 of a k=2, s=2 transposed conv read the same input), so the analysis keeps each unit's exact span;
    # every unit's span, clipped to the input, is its gradient support, and the largest is the table's RF.
    a = analyze_layers([1, 12], [layer])
    model = structural(build_model(a))
    rf = a.layers[0].rf_out[0]
    sizes = []
    for o in range(a.output_shape[1]):
        x = torch.ones(1, 1, 12, dtype=torch.float64, requires_grad=True)
        model(x)[0, 0, o].backward()
        idx = x.grad[0, 0].nonzero().flatten()
        if not len(idx):  # a dilated transposed conv's output that no tap lands on: it reads no input
            assert ("d" in next(iter(layer.values()))), f"unit {o} reads nothing"
            continue
        lo, hi = rf.span(o)
        assert (max(0, lo), min(12, hi)) == (int(idx.min()), int(idx.max()) + 1), f"unit {o}"
        sizes.append(hi - lo)
    assert max(sizes) == rf.r


@pytest.mark.parametrize("n, layers", [
    (8, [{"adaptiveavgpool": 3}]),  # windows 0-3, 2-6, 5-8: sizes 3, 4, 3
    (8, [{"adaptiveavgpool": 3}, {"conv": {"out": 1, "k": 3, "p": 0}}]),  # one unit over all: 8, not 4 + 2*8/3
    (10, [{"adaptiveavgpool": 4}, {"conv": {"out": 1, "k": 2, "p": 0}}, {"maxpool": {"k": 2, "s": 1}}]),
    (13, [{"conv": {"out": 1, "k": 3, "s": 2, "p": 0}}, {"adaptiveavgpool": 4}, {"conv": {"out": 1, "k": 3, "p": 0}}]),
    (9, [{"adaptiveavgpool": 5}, {"upsample": {"scale": 2}}, {"conv": {"out": 1, "k": 3, "p": 0}}]),
    (9, [{"adaptiveavgpool": 4}, {"residual": [{"conv": {"out": 1, "k": 3}}]}]),  # the paths' union per unit
    # equal windows at equal steps are a plain window: 13 -> 6 is k 3 s 2, 7 -> 3 too; 2 -> 6 repeats positions
    (13, [{"adaptiveavgpool": 6}, {"conv": {"out": 1, "k": 3, "p": 0}}]),
    (7, [{"adaptiveavgpool": 3}, {"conv": {"out": 1, "k": 2, "p": 0}}]),
    (2, [{"adaptiveavgpool": 6}, {"conv": {"out": 1, "k": 3, "p": 0}}]),
    # ceil_mode: the last window runs past the input and PyTorch cuts it short (here to one conv output)
    (16, [{"conv": {"out": 1, "k": 3, "s": 2, "p": 0}}, {"maxpool": {"k": 2, "ceil": True}}]),
    (16, [{"conv": {"out": 1, "k": 3, "s": 2, "p": 0}}, {"maxpool": {"k": 2, "ceil": True}}, "gap"]),
    (8, [{"avgpool": {"k": 3, "s": 2, "p": 1, "ceil": True}}, {"conv": {"out": 1, "k": 3, "p": 0}}]),
    # After an upsampling, a conv with an even kernel: 4 outputs of a x2 upsampler read 2 or 3 inputs,
    # so the RF is 3, not the regular grid's 1 + 3*1/2 = 5/2.
    (8, [{"upsample": {"scale": 2}}, {"conv": {"out": 1, "k": 4, "p": 0}}]),
    (8, [{"convtranspose": {"out": 1, "k": 2, "s": 2}}, {"conv": {"out": 1, "k": 4, "p": 0}}]),
    (9, [{"convtranspose": {"out": 1, "k": 3, "s": 2}}, {"conv": {"out": 1, "k": 3, "p": 1}},
         {"avgpool": {"k": 2}}]),
    # A transposed conv whose RF alternates, then an adaptive pool 33 -> 5 (widest window: 8 outputs, which
    # read 5 inputs: RF 5, not 1 + 7*1/2 = 9/2).
    (16, [{"convtranspose": {"out": 1, "k": 3, "s": 2}}, {"adaptiveavgpool": 5}]),
    # Branches whose centres differ (padded before on one path, after on the other): output i reads
    # i-2..i on one and i..i+2 on the other, so the add's RF is their union, 5 (not the largest, 3); then 7.
    (20, [{"add": [[{"pad": {"before": 2, "after": 0}}, {"conv": {"out": 1, "k": 3, "p": 0}}],
                   [{"pad": {"before": 0, "after": 2}}, {"conv": {"out": 1, "k": 3, "p": 0}}]]},
          {"conv": {"out": 1, "k": 3}}]),
])
def test_after_an_irregular_adaptive_pool_every_units_rf_is_its_gradient_support(n, layers):
    # Adaptive windows of different sizes: no (r, j) describes the axis, so the analysis keeps each
    # unit's span; every unit's span, clipped to the input, must be exactly the inputs it depends on.
    a = analyze_layers([1, n], layers)
    model = structural(build_model(a))
    row = a.layers[-1]
    axis = row.rf_out[0]
    widths = []
    for u in range(axis.n):
        x = torch.ones(1, 1, n, dtype=torch.float64, requires_grad=True)
        y = model(x)
        (y[0, 0, u] if y.dim() == 3 else y[0, 0]).backward()  # a map, or one value per channel after gap
        idx = x.grad[0, 0].nonzero().flatten()
        lo, hi = axis.span(u)
        assert (max(0, lo), min(n, hi)) == (int(idx.min()), int(idx.max()) + 1), f"unit {u}"
        widths.append(hi - lo)
    assert axis.r == max(widths)


@pytest.mark.parametrize("n, m, k, s", [(13, 6, 3, 2), (7, 3, 3, 2), (9, 4, 3, 2)])
def test_an_adaptive_pool_with_equal_windows_at_equal_steps_is_that_window(n, m, k, s):
    # torch's windows floor(i*n/m)..ceil((i+1)*n/m): 13 -> 6 starts 0, 2, ..., 10, each 3 wide; by hand
    # r_out = 1 + (k-1)*1 and j_out = s exactly (not the average 13/6), with no note
    windows = [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]
    assert {b - a for a, b in windows} == {k} and {b[0] - a[0] for a, b in zip(windows, windows[1:])} == {s}
    a = analyze_layers([1, n], [{"adaptiveavgpool": m}])
    (axis,) = a.layers[0].rf_out
    assert (axis.r, axis.j) == (k, s) and a.layers[0].notes == [] and a.layers[0].facts.stride == (s,)
