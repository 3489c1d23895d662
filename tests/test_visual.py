"""convcli.visual: every picture is written at its size, and the numbers under it (RF boxes, the gradient
support, the 95% region of an ERF) match cases worked by hand in the comments."""

import io
import math
import tarfile
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import analyze_layers

from convcli.analysis import analyze, analyze_file
from convcli.build import build_model
from convcli.errors import ConvcliError
from convcli.sources import load_analysis
from convcli.torch_graph import trace_graph
from convcli.visual import (
    empirical_rf,
    find_row,
    load_image,
    mass_region,
    parse_unit,
    pixel_range,
    plot_erf,
    plot_filters,
    plot_rf,
    rf_box,
    rf_series,
    save_activations,
    show_rf,
)
from convcli.visual._figure import png_size
from convcli.visual.activations import activation_blocks
from convcli.visual.erf import effective_rf
from convcli.visual.filters import filter_images
from convcli.visual.structural import pool_as_average

ROOT = Path(__file__).resolve().parent.parent

# Two 3x3 convs (p=1) and a 2x2 max-pool on an 8x8 input, the pool labelled P, worked by hand with
# r_out = r_in + (k-1)*j_in, j_out = j_in*s, start_out = start_in + ((k-1)/2 - p)*j_in, start_0 = 0.5:
#   conv1: r=3, j=1, start = 0.5 + (1-1)*1 = 0.5
#   conv2: r=5, j=1, start = 0.5
#   pool : r = 5 + (2-1)*1 = 6, j = 2, start = 0.5 + (1/2 - 0)*1 = 1
# Unit u of the pool is centred at 1 + 2u, so unit (1, 1) at (3, 3): the box is [3-3, 3+3) = [0, 6) on both
# axes (pool unit 1 reads conv2 outputs 2..3, which read conv1 outputs 1..4, which read pixels 0..5).
# Unit (0, 0) is centred at 1: [-2, 4), two pixels of padding on each axis; inside the input, pixels 0..3.
SMALL = [{"conv": {"out": 2, "k": 3, "p": 1}}, {"conv": {"out": 2, "k": 3, "p": 1}},
         {"maxpool": {"k": 2, "name": "P"}}]


@pytest.fixture(scope="module")
def small():
    return analyze_layers([1, 8, 8], SMALL)


@pytest.fixture(scope="module")
def s7():
    return analyze_file(ROOT / "architectures" / "s7.yaml")


# --------------------------------------------------------------------------- the RF box


def test_rf_box_of_a_unit_worked_by_hand(small):
    pool = small.layers[-1]
    assert rf_box(small, pool, (1, 1)) == [(0, 6), (0, 6)]
    assert pixel_range(rf_box(small, pool, (1, 1)), small.input_shape) == [(0, 5), (0, 5)]
    # Unit (3, 2): centres 1 + 2*3 = 7 and 1 + 2*2 = 5; boxes [4, 10) (clipped: pixels 4..7) and [2, 8).
    assert rf_box(small, pool, (3, 2)) == [(4, 10), (2, 8)]
    assert pixel_range(rf_box(small, pool, (3, 2)), small.input_shape) == [(4, 7), (2, 7)]
    # Named by label or by path; the default unit is the centre one, (4//2, 4//2) = (2, 2): centre 5, [2, 8).
    assert find_row(small, "P") is pool and find_row(small, pool.path) is pool
    assert rf_box(small, "P") == [(2, 8), (2, 8)]
    # The first conv's unit (0, 5): centres 0.5 and 5.5, r = 3: [-1, 2) and [4, 7).
    assert rf_box(small, small.layers[0], (0, 5)) == [(Fraction(-1), Fraction(2)), (Fraction(4), Fraction(7))]


def test_rf_box_past_the_border(small):
    box = rf_box(small, "P", (0, 0))
    assert box == [(-2, 4), (-2, 4)]  # two pixels of padding before the input on each axis
    assert pixel_range(box, small.input_shape) == [(0, 3), (0, 3)]
    assert pixel_range(box, small.input_shape, clip=False) == [(-2, 3), (-2, 3)]


def test_rf_box_refuses_unknown_layers_and_units(small):
    with pytest.raises(ConvcliError, match="no layer 'Q'"):
        rf_box(small, "Q")
    with pytest.raises(ConvcliError, match="outside its 4×4 output map"):
        rf_box(small, "P", (4, 0))
    with pytest.raises(ConvcliError, match="2 coordinate"):
        rf_box(small, "P", (1,))
    assert parse_unit("3,5") == (3, 5) and parse_unit(None) is None
    with pytest.raises(ConvcliError):
        parse_unit("a,b")


def test_an_upsampled_unit_box_is_the_pixel_it_reads():
    # Nearest upsampling x3 on 12 pixels: output o reads input floor(o/3), so unit 4 reads pixel 1 exactly,
    # [1, 2) (a regular grid of step 1/3 would centre it at 1/2 + 4/3 = 11/6 instead).
    a = analyze_layers([1, 12], [{"upsample": {"scale": 3}}])
    box = rf_box(a, a.layers[0], (4,))
    assert box == [(Fraction(1), Fraction(2))]
    assert pixel_range(box, a.input_shape) == [(1, 1)]


def test_fractional_box_covers_the_pixels_whose_centre_is_inside():
    # [4/3, 7/3) holds one pixel centre, 1.5: pixel 1; [1/2, 3) holds 0.5, 1.5 and 2.5.
    assert pixel_range([(Fraction(4, 3), Fraction(7, 3))]) == [(1, 1)]
    assert pixel_range([(Fraction(1, 2), Fraction(3))]) == [(0, 2)]


# --------------------------------------------------------------------------- pictures: RF plot, RF box


def test_plot_rf_s7(tmp_path, s7):
    out = tmp_path / "rf.png"
    series = plot_rf(s7, out)
    # 16 leaf rows: 30*16 + 300 = 780 px, below the 1000 px minimum; height 750.
    assert png_size(out) == (1000, 750)
    # The RFs in architectures/s7.yaml's comments, worked by hand, then GAP and the linear layer.
    assert [v[0] for v in series.rf[:14]] == [3, 5, 6, 10, 14, 16, 24, 32, 32, 36, 68, 68, 84, 84]
    assert [v[0] for v in series.jump[:14]] == [1, 1, 2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8]
    assert series.downsampling == [2, 5, 9]  # the three max-pools
    assert series.first_global == 14 and series.final_rf == [84, 84] and series.input_size == [32, 32]
    assert series.names[0] == "C1[0].conv" and rf_series(s7) == series


def test_plot_rf_many_layers(tmp_path):
    # 40 convs 3x3 p=1: RF 1 + 2*40 = 81, jump 1; 30*40 + 300 = 1500 px wide.
    a = analyze_layers([1, 8, 8], [{"conv": {"out": 1, "k": 3, "p": 1}}] * 40)
    out = tmp_path / "rf40.png"
    series = plot_rf(a, out, threshold=44)
    assert png_size(out) == (1500, 750)
    assert series.rf[-1] == [81, 81] and series.downsampling == [] and series.first_global is None


def test_show_rf_on_an_image_file(tmp_path, small):
    image = tmp_path / "img.png"
    pixels = torch.arange(64, dtype=torch.uint8).view(1, 8, 8).expand(3, 8, 8).contiguous() * 4
    image.write_bytes(_encode(pixels, "PNG"))
    assert torch.equal(load_image(str(image))[0], pixels)
    out = tmp_path / "box.png"
    box = show_rf(small, str(image), "P", (0, 0), out)  # an RGB file for a 1-channel model: luminance
    assert box == [(-2, 4), (-2, 4)]
    assert png_size(out) == (720, 760)


def _encode(pixels, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buf, format=fmt)
    return buf.getvalue()


def _fake_dataset(tmp_path) -> Path:
    """An ImageFolder .tar.gz: test/cat/{a,b}.jpg and test/dog/c.jpg (train/ the same), flat 4x4 images of
    grey 40 (cat/a), 120 (cat/b), 200 (dog/c). Sorted by (class, name), index 2 is dog/c."""
    path = tmp_path / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for split in ("train", "test"):
            for cls, name, value in (("cat", "a", 40), ("cat", "b", 120), ("dog", "c", 200)):
                blob = _encode(torch.full((3, 4, 4), value, dtype=torch.uint8), "JPEG")
                info = tarfile.TarInfo(f"{split}/{cls}/{name}.jpg")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    return path


def test_dataset_image_by_index(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVCLI_CACHE", str(tmp_path / "cache"))
    data = _fake_dataset(tmp_path)
    pixels, caption = load_image("cifar10:2", str(data))
    assert abs(int(pixels[0, 0, 0]) - 200) <= 2 and caption == "cifar10:2 (dog)"  # JPEG: within 2 levels
    with pytest.raises(ConvcliError, match="has 3 images"):
        load_image("cifar10:3", str(data))
    a = analyze_layers([3, 8, 8], [{"conv": {"out": 2, "k": 3, "p": 1}}])
    out = tmp_path / "box.png"
    show_rf(a, "cifar10:0", a.layers[0].path, None, out, data=str(data))  # resized 4x4 -> 8x8
    assert png_size(out) == (720, 760)


# --------------------------------------------------------------------------- the gradient-support check


def test_empirical_rf_equals_the_analytic_rf_for_a_spec(small):
    # Centre units of the 8x8 maps (u = 4): conv1 centred at 4.5, [3, 6): 3 px; conv2 [2, 7): 5 px; the pool's
    # centre unit u = 2 is centred at 1 + 2*2 = 5, [2, 8): 6 px. All inside the input, so nothing is clipped.
    results = empirical_rf(small, build_model(small))
    assert [r.measured for r in results] == [[3, 3], [5, 5], [6, 6]]
    assert [r.measured_span[0] for r in results] == [(3, 5), (2, 6), (2, 7)]
    assert not any(r.mismatch for r in results)
    assert results[-1].label == "P"


def test_empirical_rf_clipped_and_global(s7):
    # s7 without weights given: the RF passes the 32 px input from C3's depthwise conv (RF 32 at unit 4 of 8:
    # centre 2 + 4*4 = 18, [2, 34) -> pixels 2..31, 30 px); after GAP every unit sees all 32 pixels.
    paths = ["layers[2].seq[1].dwsconv[0].depthwise", "layers[3].seq[1].dwsconv[1].pointwise", "layers[4].seq[0].gap"]
    results = {r.path: r for r in empirical_rf(s7, rows=[find_row(s7, p) for p in paths])}
    assert len(results) == 3 and not any(r.mismatch for r in results.values())
    depthwise = results["layers[2].seq[1].dwsconv[0].depthwise"]
    assert depthwise.analytic == [32, 32] and depthwise.measured == [30, 30] and depthwise.clipped
    assert results["layers[4].seq[0].gap"].measured == [32, 32]
    assert results["layers[3].seq[1].dwsconv[1].pointwise"].cell() == "32 (84 clipped)"


class SmallNet(nn.Module):
    """Functions and modules: F.relu, a conv called twice (shared weights), a residual add, F.max_pool2d, a
    dilated conv, torch.sigmoid, x.mean as GAP."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        y = F.relu(self.conv2(x))
        y = self.conv2(y)
        x = F.max_pool2d(x + y, 2)
        x = torch.sigmoid(self.conv3(x))
        return x.mean((2, 3))


def test_empirical_rf_equals_the_analytic_rf_for_a_module():
    # By hand, on a 24x24 input (j = 1, start 0.5 until the pool):
    #   conv1 3, relu 3, conv2 5, relu 5, conv2 again 7; add: the larger path, 7 (both centred at 0.5);
    #   max_pool2d k2: 7 + 1 = 8, j = 2, start 1; conv3 k_eff = 2*(3-1)+1 = 5: 8 + 4*2 = 16, start 1 + (2-2)*2 = 1;
    #   sigmoid 16; mean: every pixel, 24 inside the input.
    # Centre units: 24x24 maps at u = 12 (centre 12.5); 12x12 maps at u = 6 (centre 1 + 6*2 = 13, conv3's
    # box [5, 21)): all inside the input.
    model = SmallNet()
    a = analyze(trace_graph(model, (1, 24, 24), "SmallNet", "SmallNet"))
    results = {r.path: r for r in empirical_rf(a, model)}
    hand = {"conv1": 3, "relu": 3, "conv2": 5, "relu_1": 5, "conv2[call 2]": 7, "add": 7, "max_pool2d": 8,
            "conv3": 16, "sigmoid": 16, "mean": 24}
    assert {p: r.measured[0] for p, r in results.items()} == hand
    assert {p: r.analytic[0] for p, r in results.items() if p != "mean"} == {k: v for k, v in hand.items()
                                                                              if k != "mean"}
    assert not any(r.mismatch for r in results.values())
    assert results["conv3"].measured_span == [(5, 20), (5, 20)]
    # The model was copied, not changed.
    assert isinstance(model.conv1, nn.Conv2d) and model.conv1.weight.dtype == torch.float32


def test_pixels_no_real_unit_reads_are_not_expected():
    # 8 px, conv k3 s2 p0: floor((8-3)/2)+1 = 3 outputs reading pixels 0-2, 2-4, 4-6: pixel 7 is never read.
    # Then conv k5 p2 on those 3 units: the centre unit 1 reads units -1..3, two of them padding; the analysis
    # counts them as the map continued (RF 3 + 4*2 = 11, centre 1.5 + 1*2 = 3.5: [-2, 9)), and clipped to
    # the input that is pixels 0-7, but only 0-6 are reachable: 7 px, which is what the gradient reaches.
    a = analyze_layers([1, 8, 8], [{"conv": {"out": 2, "k": 3, "s": 2, "p": 0}}, {"conv": {"out": 2, "k": 5, "p": 2}}])
    last = empirical_rf(a)[-1]
    assert last.analytic == [11, 11] and last.measured == [7, 7] and last.measured_span == [(0, 6), (0, 6)]
    assert last.expected == [7, 7] and not last.mismatch and last.cell() == "7 (11 clipped)"


def test_a_wrong_analysis_is_flagged(small):
    # The model has 3x3 convs; the analysis claims 5x5 (p=2): conv1's centre unit would see 5 pixels, [2, 7),
    # but the gradient reaches 3, [3, 6).
    wrong = analyze_layers([1, 8, 8], [{"conv": {"out": 2, "k": 5, "p": 2}}, {"conv": {"out": 2, "k": 5, "p": 2}},
                                       {"maxpool": {"k": 2, "name": "P"}}])
    model = build_model(analyze_layers([1, 8, 8], SMALL))
    results = empirical_rf(wrong, model)
    assert [r.mismatch for r in results] == [True, True, True] and not any(r.notes for r in results)
    assert results[0].expected == [5, 5] and results[0].measured == [3, 3]
    assert results[0].cell() == "3 ≠ 5"


def test_broadcast_gate_mismatch_is_explained():
    # An SE gate gives every unit global context (the analysis shows the spatial path's RF, noted): the
    # gradient of the gated map reaches the whole 16x16 input, and the row says why.
    a = load_analysis(f"{ROOT}/tests/models/students.py:SharedSEResidual", "3,16,16")  # no model: built from the file
    mul = {r.path: r for r in empirical_rf(a)}["mul"]
    assert mul.differs and mul.measured == [16, 16] and mul.expected == [8, 8]
    assert mul.explained and not mul.mismatch and any("broadcast" in n for n in mul.notes)
    assert mul.cell() == "16 vs 8 (approximation)"


def test_an_upsampled_unit_is_checked_exactly():
    # Bilinear x2 upsampling on 8 pixels after a 3x3 conv p1: output o reads conv outputs (2o-1)//4 and the
    # next, so the centre unit 8 reads conv outputs 3 and 4, which read pixels 2..4 and 3..5: pixels 2..5,
    # RF 4. The analysis keeps each upsampled unit's exact span, so the check needs no approximation note.
    a = analyze_layers([1, 8], [{"conv": {"out": 1, "k": 3, "p": 1}}, {"upsample": {"scale": 2, "mode": "linear"}}])
    up = empirical_rf(a)[1]
    assert up.measured_span == [(2, 5)] and up.expected_span == [(2, 5)] and not up.differs
    assert up.notes == [] and up.cell() == "4"


def test_dilated_ceil_max_pool_as_average():
    # maxpool k3 d2 s2 p1 ceil on 15: k_eff 5, n_out = ceil((15+2-5)/2)+1 = 7; r = 5, j = 2, start =
    # 0.5 + (2-1) = 1.5; centre unit 3 at 7.5: [5, 10). Then a 3x3 conv p0: r = 5 + 2*2 = 9, start 3.5, n 5,
    # centre unit 2 at 7.5: [3, 12).
    for k, s, p, d, ceil in ((3, 2, 1, 2, True), (2, 2, 0, 1, True), (3, 3, 1, 1, False), (2, 1, 0, 3, False)):
        x = torch.randn(1, 2, 15, 15)
        assert pool_as_average(x, k, s, p, d, ceil).shape == F.max_pool2d(x, k, s, p, d, ceil).shape
    a = analyze_layers([1, 15, 15], [{"maxpool": {"k": 3, "s": 2, "p": 1, "d": 2, "ceil": True}},
                                     {"conv": {"out": 1, "k": 3, "p": 0}}])
    results = empirical_rf(a)
    assert [r.measured_span for r in results] == [[(5, 9)] * 2, [(3, 11)] * 2]
    assert not any(r.mismatch for r in results)


# --------------------------------------------------------------------------- the effective RF


def test_mass_region_uniform_squares():
    import numpy as np

    heat = np.zeros((32, 32))
    heat[11:21, 11:21] = 1.0  # a 10x10 square, pixels 11..20, centred on the boundary 16
    # Boxes grow from [15, 17) by one pixel a side: 2, 4, 6, 8 (64/100 of the mass), 10 (all of it).
    assert mass_region(heat, (16, 16)) == [(11, 21), (11, 21)]
    heat = np.zeros((32, 32))
    heat[12:21, 12:21] = 1.0  # 9x9, pixels 12..20, centred in pixel 16 (16.5): sides 1, 3, 5, 7 (49/81), 9
    assert mass_region(heat, (16.5, 16.5)) == [(12, 21), (12, 21)]
    # 95% of a 10-pixel line needs all 10 (9 pixels hold 90%): a 1-D map works the same.
    assert mass_region(np.ones(10), (5,)) == [(0, 10)]


def test_mass_region_gaussian():
    import numpy as np

    # A Gaussian with sigma 3 centred in pixel 32 (at 32.5), integrated over each pixel: a centred square of
    # odd side s = 2a holds erf(a / (3*sqrt(2)))^2 of the mass: s = 13 gives erf(6.5/4.243)^2 = 0.939,
    # s = 15 gives erf(7.5/4.243)^2 = 0.975, so the 95% square is 15x15.
    sigma = 3.0
    edges = np.arange(66) - 32.5
    cdf = np.array([0.5 * (1 + math.erf(e / (sigma * math.sqrt(2)))) for e in edges])
    line = np.diff(cdf)
    heat = np.outer(line, line)
    assert math.erf(6.5 / (sigma * math.sqrt(2))) ** 2 < 0.95 < math.erf(7.5 / (sigma * math.sqrt(2))) ** 2
    box = mass_region(heat, (32.5, 32.5))
    assert [hi - lo for lo, hi in box] == [15, 15] and box[0] == (25, 40)


def test_effective_rf_of_a_linear_conv(tmp_path):
    # One 3x3 conv, p=0, weights 1, on 9x9: the centre unit (3, 3) of the 7x7 output is centred at
    # start + 3*1 = 1.5 + 3 = 4.5 and reads pixels 3..5 with weight 1: a flat 3x3 heatmap, 95% region 3x3.
    a = analyze_layers([1, 9, 9], [{"conv": {"out": 1, "k": 3, "p": 0, "bias": False}}])
    model = build_model(a)
    with torch.no_grad():
        model.paths[a.layers[0].path].weight.fill_(1.0)
    images = torch.randn(5, 1, 9, 9)
    heat, region = effective_rf(model, images, a)
    expected = torch.zeros(9, 9, dtype=torch.float64)
    expected[3:6, 3:6] = 1
    assert torch.equal(torch.from_numpy(heat), expected) and region == (3, 3)


def test_plot_erf(tmp_path):
    model = build_model(analyze_layers([3, 8, 8], SMALL))
    a = analyze_layers([3, 8, 8], SMALL)
    out = tmp_path / "erf.png"
    result = plot_erf(a, out, model, torch.randn(4, 3, 8, 8), accuracy=0.5)
    assert png_size(out) == (600 * 2 + 120, 720)  # two panels: these weights and random ones
    assert result["layer"] == a.layers[-1].path and result["unit"] == [2, 2] and result["theoretical_rf"] == [6, 6]
    # Both nets see at most the theoretical 6x6 box [2, 8) of the centre unit: no gradient outside it.
    for panel in result["panels"]:
        heat = panel["heatmap"]
        assert heat[:2].sum() == 0 and heat[:, :2].sum() == 0 and heat[2:8, 2:8].sum() > 0
        assert max(panel["region95"]) <= 6
    out1 = tmp_path / "erf1.png"
    plot_erf(a, out1, model, torch.randn(2, 3, 8, 8), compare_random=False, layer="P")
    assert png_size(out1) == (720, 720)


# --------------------------------------------------------------------------- filters and feature maps


def test_filter_images_are_normalised_per_filter():
    w = torch.tensor([[[[-1.0, 1.0], [3.0, 1.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])  # 2 filters, 1 channel, 2x2
    imgs = filter_images(w)
    assert imgs.shape == (2, 2, 2)
    assert imgs[0].tolist() == [[0.0, 0.5], [1.0, 0.5]]  # (w + 1) / 4
    assert imgs[1].tolist() == [[0.5, 0.5], [0.5, 0.5]]  # a constant filter: flat grey
    rgb = filter_images(torch.randn(4, 3, 5, 5))
    assert rgb.shape == (4, 5, 5, 3) and rgb.min() == 0 and rgb.max() == 1


def test_plot_filters(tmp_path):
    a = analyze_layers([3, 8, 8], [{"conv": {"out": 8, "k": 5, "p": 2}}, {"conv": {"out": 4, "k": 3}}])
    out = tmp_path / "filters.png"
    assert plot_filters(build_model(a), out, a, accuracy=0.9) == [8, 3, 5, 5]
    # 8 filters: 4 columns (at least 4), 2 rows of 58 + 14 px, plus 150 px of titles; at least 640 wide.
    assert png_size(out) == (640, 2 * 72 + 150)


def test_plot_filters_of_a_module(tmp_path):
    model = SmallNet()
    out = tmp_path / "f.png"
    a = analyze(trace_graph(model, (1, 24, 24), "SmallNet", "SmallNet"))
    assert plot_filters(model, out, a) == [4, 1, 3, 3]
    assert png_size(out) == (640, 72 + 150)


def test_save_activations(tmp_path, small):
    a = analyze_layers([3, 16, 16], [{"seq": {"name": "B1", "layers": [{"conv": {"out": 4, "p": 1}},
                                                                         {"maxpool": {"k": 2}}]}},
                                     {"seq": {"name": "B2", "layers": [{"conv": {"out": 40, "p": 1}}, "gap"]}}])
    assert [r.label for r in activation_blocks(a)] == ["B1"]  # B2 ends in GAP: not a map
    files = save_activations(build_model(a), a, torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8), tmp_path)
    assert [f.name for f in files] == ["01_B1.png"]
    # The input and 4 channels: one row of 8 tiles of 100 px (+140), 114 px per row (+150).
    assert png_size(files[0]) == (8 * 100 + 140, 114 + 150)


def test_save_activations_of_a_module(tmp_path):
    # A model without blocks: one picture per conv layer (conv1, conv2 twice, conv3).
    model = SmallNet()
    a = analyze(trace_graph(model, (1, 24, 24), "SmallNet", "SmallNet"))
    files = save_activations(model, a, torch.zeros(1, 24, 24, dtype=torch.uint8), tmp_path, max_channels=2)
    assert [f.name for f in files] == ["01_conv1.png", "02_conv2.png", "03_conv2_call_2.png", "04_conv3.png"]
    assert all(png_size(f) == (940, 264) for f in files)


def test_one_dimensional_inputs():
    # A 1-D net: the RF numbers work on any rank (conv k5 on 20 samples: r 5, start 2.5, centre unit 8 of 16
    # at 10.5, [8, 13)); the image pictures say they need a 2-D input.
    a = analyze_layers([1, 20], [{"conv": {"out": 2, "k": 5}}])
    assert rf_box(a, a.layers[0]) == [(8, 13)]
    assert [r.measured_span for r in empirical_rf(a)] == [[(8, 12)]]
    heat, region = effective_rf(build_model(a), torch.randn(3, 1, 20), a)
    assert heat.shape == (20,) and heat[:8].sum() == 0 and heat[13:].sum() == 0 and region[0] <= 5
    with pytest.raises(ConvcliError, match="2-D"):
        plot_erf(a, "unused.png", build_model(a), torch.randn(1, 1, 20))
    with pytest.raises(ConvcliError, match="2-D"):
        show_rf(a, torch.zeros(1, 20, dtype=torch.uint8), a.layers[0].path)


def test_a_unit_narrower_than_the_widest_says_so_not_clipped():
    # After a k=3, s=2 transposed conv units read 1 or 2 inputs: the table shows the widest (2); the centre
    # unit's own span (1 here) is what the gradient check compares, and the cell names the widest.
    from convcli.visual.empirical import EmpiricalRF

    e = EmpiricalRF(path="t", label=None, unit=(12,), analytic=[2], expected=[1], measured=[1],
                    expected_span=[(6, 6)], measured_span=[(6, 6)], unit_rf=[1])
    assert not e.differs and e.cell() == "1 (widest unit: 2)"
    a = analyze_layers([1, 12], [{"convtranspose": {"out": 1, "k": 3, "s": 2}}])
    row = empirical_rf(a)[0]
    assert row.analytic == [2] and not row.mismatch and row.unit_rf == row.expected
