"""Every spec in architectures/ (found at test time, so new specs are covered automatically):
the model PyTorch builds from it must agree with the torch-free analysis, row by row.

The forward pass runs on zeros, batch 1, in eval mode under no_grad (`forward_shapes`), so BN
statistics are left alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convcli.build import build_from_file, count_params, forward_shapes

ARCH = Path(__file__).resolve().parent.parent / "architectures"
SPECS = sorted(ARCH.glob("*.yaml"))  # top level only: architectures/rules/ holds rule files, not models


def test_the_example_architectures_are_found():
    assert len(SPECS) >= 11, [p.name for p in SPECS]


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def built(request):
    """(model, analysis, per-row shapes from a real forward pass), built once per spec."""
    model, analysis = build_from_file(request.param)
    return model, analysis, forward_shapes(model, analysis.input_shape)


def test_forward_pass_gives_the_analysed_shape_at_every_row(built):
    model, analysis, shapes = built
    missing = [r.path for r in analysis.rows if r.path not in shapes]
    assert not missing, f"rows the forward pass never reached: {missing}"
    wrong = [(r.path, r.out_shape, shapes[r.path]) for r in analysis.rows if shapes[r.path] != r.out_shape]
    assert not wrong, "\n".join(f"{p}: analysed {a}, torch {t}" for p, a, t in wrong)


def test_forward_pass_gives_the_analysed_output_shape(built):
    model, analysis, shapes = built
    last_top_level = [r for r in analysis.rows if r.depth == 0][-1]
    assert shapes[last_top_level.path] == analysis.output_shape


def test_torch_parameter_count_equals_the_analysed_one(built):
    model, analysis, _ = built
    total, trainable = count_params(model)
    assert total == trainable == analysis.params


def test_forward_check_leaves_the_model_in_training_mode(built):
    model, _, _ = built
    assert model.training and all(m.training for m in model.modules())
