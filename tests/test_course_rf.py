"""The course's receptive-field arithmetic, worked by hand, then checked against the analysis."""

import pytest
from helpers import analyze_layers

from convcli.layers.geometry import eff_kernel, window_out

# The course's worked table: input 32, kernel 3 everywhere.
# Each row: n_in r_in j_in s p -> n_out r_out j_out
COURSE_TABLE = [
    (32, 1, 1, 1, 1, 32, 3, 1),
    (32, 3, 1, 2, 0, 15, 5, 2),
    (15, 5, 2, 1, 0, 13, 9, 2),
    (13, 9, 2, 2, 1, 7, 13, 4),
    (7, 13, 4, 1, 1, 7, 21, 4),
    (7, 21, 4, 2, 0, 3, 29, 8),
    (3, 29, 8, 1, 0, 1, 45, 8),
]


def test_output_size_formula_by_hand():
    # n_out = floor((n_in + 2p - k)/s) + 1
    assert window_out(32, 3, 2, 0, 0) == 15  # floor(29/2) + 1
    assert window_out(13, 3, 2, 1, 1) == 7  # floor(13/2) + 1
    assert window_out(3, 5, 1, 0, 0) is None  # the kernel does not fit


def test_dilated_kernel_span():
    assert eff_kernel(3, 1) == 3
    assert eff_kernel(3, 2) == 5  # d*(k-1)+1
    assert eff_kernel(5, 3) == 13


def test_course_worked_table_row_by_row():
    layers = [{"conv": {"out": 4, "k": 3, "s": s, "p": p}} for (_, _, _, s, p, *_) in COURSE_TABLE]
    a = analyze_layers([1, 32, 32], layers)
    assert len(a.layers) == len(COURSE_TABLE)
    for row, (n_in, r_in, j_in, _s, _p, n_out, r_out, j_out) in zip(a.layers, COURSE_TABLE):
        for axis_in, axis_out in zip(row.rf_in, row.rf_out):  # H and W agree
            assert (axis_in.n, axis_in.r, axis_in.j) == (n_in, r_in, j_in)
            assert (axis_out.n, axis_out.r, axis_out.j) == (n_out, r_out, j_out)
    assert a.output_shape == (4, 1, 1)


def test_dilation_grows_rf_not_size():
    # k=3, d=2 spans 5 px: r = 1 + (5-1)*1 = 5; with p=2 the size is kept.
    a = analyze_layers([1, 16, 16], [{"conv": {"out": 1, "k": 3, "d": 2, "p": 2}}])
    (h, w) = a.layers[0].rf_out
    assert (h.n, h.r, h.j) == (16, 5, 1)


def test_spatially_separable_has_per_axis_rf():
    # 5x1 then 1x5: H grows by 4 in the first conv, W by 4 in the second.
    a = analyze_layers([1, 20, 20], [{"spatial_sep": {"out": 2, "k": 5, "p": 0}}])
    first, second = a.layers
    assert [x.r for x in first.rf_out] == [5, 1]
    assert [x.r for x in second.rf_out] == [5, 5]
    assert first.out_shape == (2, 16, 20) and second.out_shape == (2, 16, 16)


def test_start_is_centre_of_first_rf():
    # Guide's convention: start_0 = 0.5; k=3, p=1: start_out = 0.5 + (1 - 1)*1 = 0.5.
    # k=3, s=2, p=0: start_out = 0.5 + (1 - 0)*1 = 1.5 (the first window covers pixels 0..2).
    a = analyze_layers([1, 9], [{"conv": {"out": 1, "k": 3, "p": 1}}, {"conv": {"out": 1, "k": 3, "s": 2, "p": 0}}])
    assert a.layers[0].rf_out[0].start == 0.5
    assert a.layers[1].rf_out[0].start == 1.5


def test_residual_rf_is_largest_path():
    # body: two 3x3 convs (RF 5); shortcut: identity (RF 1): the block's RF is 5 (Distill's max rule).
    a = analyze_layers([4, 8, 8], [{"residual": [{"conv": {"out": 4}}, {"conv": {"out": 4}}]}])
    assert [x.r for x in a.rf] == [5, 5]


def test_concat_rf_is_largest_branch():
    # 1x1 branch (RF 1), 5x5 branch (RF 5), 3x3 then 3x3 (RF 5), pooling branch 3x3 (RF 3): max 5.
    a = analyze_layers([4, 9, 9], [{"concat": [[{"conv": {"out": 2, "k": 1}}], [{"conv": {"out": 2, "k": 5}}],
                                               [{"conv": {"out": 2}}, {"conv": {"out": 2}}],
                                               [{"maxpool": {"k": 3, "s": 1, "p": 1}}]]}])
    assert a.output_shape == (10, 9, 9)
    assert [x.r for x in a.rf] == [5, 5]


def test_transposed_conv_upsampler_by_hand():
    # k=4, s=2, p=1 (the usual x2 upsampler): n_out = (5-1)*2 - 2 + 4 = 10; each output reads
    # ceil(4/2) = 2 inputs, so r_out = 1 + (2-1)*1 = 2; jump 1/2.
    a = analyze_layers([1, 5, 5], [{"convtranspose": {"out": 1, "k": 4, "s": 2, "p": 1}}])
    h = a.layers[0].rf_out[0]
    assert (h.n, h.r, h.j) == (10, 2, 0.5)


def test_gap_sees_the_whole_map():
    # 3 convs k=3 p=1 on 8 px: RF 7; GAP over 8 positions of jump 1: union 7 + (8-1)*1 = 14.
    a = analyze_layers([1, 8, 8], [{"conv": {"out": 2}}] * 3 + [{"gap": {}}])
    assert a.last_spatial_row().rf_out[0].r == 7
    assert a.rf[0].r == 14 and a.rf[0].glob


@pytest.mark.parametrize("k,s,p,n,expected", [(3, 1, 1, 32, 32), (3, 2, 1, 32, 16), (5, 1, 0, 32, 28),
                                              (2, 2, 0, 7, 3), (7, 2, 3, 224, 112)])
def test_output_sizes_match_formula(k, s, p, n, expected):
    a = analyze_layers([1, n, n], [{"conv": {"out": 1, "k": k, "s": s, "p": p}}])
    assert a.output_shape == (1, expected, expected)


@pytest.mark.parametrize("shape", [(9, 12), (41, 44)])
def test_a_ceil_pools_short_last_window_does_not_shrink_the_rf_elsewhere(shape):
    # By hand: maxpool k3 s2 -> r 3, j 2; transposed conv k3 s2 p1 -> an odd output reads 2 inputs: r 3 + 2 = 5,
    # j 1; conv k5 -> 9; conv k5 -> 13, on both axes. On W = 12 the ceil-mode pool cuts its last window
    # short (windows 0-2, ..., 8-10, then 10-11), which makes W irregular; the RF, which counts padding as
    # the map continued, is still 13 there, and on the larger map too.
    layers = [{"maxpool": {"k": 3, "s": 2, "ceil": True}},
              {"convtranspose": {"out": 2, "k": 3, "s": 2, "p": 1, "output_padding": 1}},
              {"conv": {"out": 2, "k": 5}}, {"conv": {"out": 2, "k": 5}}]
    a = analyze_layers([1, *shape], layers)
    assert [x.r for x in a.rf] == [13, 13]
