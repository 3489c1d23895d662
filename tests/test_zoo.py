"""The example architectures against independent references: torchvision's own models.

Every expected value here is computed from torchvision in the test (a fresh model with
`weights=None`, nothing downloaded) or read from torchvision's static weight metadata; none is
copied from convcli's output.

What torchvision's `meta["_ops"]` counts: GFLOPS in torchvision's docs, but the numbers are
giga multiply-accumulates of the conv and linear layers only, per 224x224 image (batch norm,
activations, pooling and residual adds are not counted). For all six models below, convcli's
MAC total (conv + linear weight MACs, see convcli/layers/conv.py) rounds to the same 3 decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from convcli.analysis import analyze_file
from convcli.build import build_from_file, count_params

ARCH = Path(__file__).resolve().parent.parent / "architectures"

# spec file stem -> how to build torchvision's reference model (random init, nothing downloaded)
TORCHVISION = {
    "alexnet": lambda: torchvision.models.alexnet(weights=None),
    "vgg16": lambda: torchvision.models.vgg16(weights=None),
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
    "googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False),
}
MODELS = sorted(TORCHVISION)

# Layer kinds whose output shapes are compared one by one, in execution order.
TORCH_KIND = {nn.Conv2d: "conv", nn.MaxPool2d: "maxpool", nn.Linear: "linear"}


@dataclass(frozen=True)
class Reference:
    params: int
    output_shape: tuple[int, ...]
    layer_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (kind, output shape) in execution order


@lru_cache(maxsize=None)
def torchvision_reference(name: str) -> Reference:
    """Parameter count and per-layer output shapes of torchvision's model (batch 1, 224x224, eval)."""
    model = TORCHVISION[name]().eval()
    params = sum(p.numel() for p in model.parameters())
    seen: list[tuple[str, tuple[int, ...]]] = []

    def record(kind):
        return lambda module, inputs, output: seen.append((kind, tuple(output.shape[1:])))

    hooks = [m.register_forward_hook(record(TORCH_KIND[type(m)])) for m in model.modules() if type(m) in TORCH_KIND]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    return Reference(params, tuple(out.shape[1:]), tuple(seen))


@lru_cache(maxsize=None)
def built_param_count(name: str) -> int:
    """torch's own count for the model convcli builds from the spec (the model is then dropped)."""
    model, _ = build_from_file(ARCH / f"{name}.yaml")
    return count_params(model)[0]


def analysed_layer_shapes(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    analysis = analyze_file(ARCH / f"{name}.yaml")
    kinds = {"conv": "conv", "pool": "maxpool", "linear": "linear"}
    return tuple((kinds[r.facts.op], r.out_shape) for r in analysis.layers
                 if r.facts.op in kinds and (r.facts.op != "pool" or r.facts.pool == "max"))


@pytest.mark.parametrize("name", MODELS)
def test_built_model_has_torchvisions_parameter_count(name):
    assert built_param_count(name) == torchvision_reference(name).params


@pytest.mark.parametrize("name", MODELS)
def test_analysed_parameter_count_equals_torchvisions(name):
    assert analyze_file(ARCH / f"{name}.yaml").params == torchvision_reference(name).params


@pytest.mark.parametrize("name", MODELS)
def test_analysed_output_shape_equals_torchvisions(name):
    analysis = analyze_file(ARCH / f"{name}.yaml")
    assert analysis.input_shape == (3, 224, 224)
    assert analysis.output_shape == torchvision_reference(name).output_shape == (1000,)


@pytest.mark.parametrize("name", MODELS)
def test_every_conv_pool_and_linear_shape_equals_torchvisions(name):
    """Conv, max-pool and linear outputs, one by one in execution order (a residual block runs its
    body before its projection shortcut in both; Inception branches run left to right in both)."""
    ours = analysed_layer_shapes(name)
    theirs = torchvision_reference(name).layer_shapes
    assert [kind for kind, _ in ours] == [kind for kind, _ in theirs]
    for i, (mine, ref) in enumerate(zip(ours, theirs)):
        assert mine == ref, f"layer {i} ({mine[0]}): convcli {mine[1]} != torchvision {ref[1]}"


@pytest.mark.parametrize("name", MODELS)
def test_macs_match_torchvisions_documented_ops(name):
    """torchvision's `_ops` (GMACs of conv + linear, 3 decimals) for every weight enum of the model."""
    macs = analyze_file(ARCH / f"{name}.yaml").macs
    for weights in torchvision.models.get_model_weights(name):
        assert macs / 1e9 == pytest.approx(weights.meta["_ops"], abs=5e-4), weights


def test_lenet5_matches_a_hand_written_torch_model():
    """LeNet-5 is not in torchvision: compare with the classic layers written directly in torch."""
    reference = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),      # C1, S2
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),     # C3, S4
        nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),      # C5
        nn.Linear(120, 84), nn.Tanh(),                        # F6
        nn.Linear(84, 10),                                    # output
    )
    model, analysis = build_from_file(ARCH / "lenet5.yaml")
    expected = sum(p.numel() for p in reference.parameters())
    assert count_params(model)[0] == analysis.params == expected
    with torch.no_grad():
        assert analysis.output_shape == tuple(reference(torch.zeros(1, 1, 32, 32)).shape[1:])
