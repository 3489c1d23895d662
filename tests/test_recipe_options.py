"""The airbench recipe's pieces as `convcli train` options: SGD momentum, weight decay on every parameter,
Dirac init, a frozen whitening layer, BN momentum, a logit scale and airbench's LR schedule. Each is
checked against a value worked by hand (one SGD step, one BN update, an identity convolution)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from convcli.errors import ConvcliError

pytest_plugins = ("conftest_data",)


# --- the optimizer -----------------------------------------------------------------------------------

def test_one_nesterov_step_from_rest_moves_a_weight_by_lr_times_grad_times_one_plus_momentum():
    """From zero momentum Nesterov's first update is g + m·g: with lr 0.1 and m 0.85, 0.185·g."""
    from convcli.train.loop import make_optimizer

    w = nn.Linear(2, 1, bias=False)
    w.weight.data = torch.tensor([[1.0, -2.0]])
    opt = make_optimizer(w, "sgd", 0.1, 0.0, momentum=0.85)
    w(torch.tensor([[3.0, 4.0]])).sum().backward()  # d/dw = the input, (3, 4)
    opt.step()
    assert w.weight.tolist() == [[pytest.approx(1.0 - 0.185 * 3), pytest.approx(-2.0 - 0.185 * 4)]]


def test_weight_decay_on_every_parameter_shrinks_each_by_the_same_fraction_bn_biases_included():
    """With no gradient, one step shrinks p by lr·wd·(1 + m)·p. The BN bias has 64x the LR and 1/64 of the
    decay, so it shrinks by the same fraction as the conv weight; without wd_all the biases do not decay."""
    from convcli.train.loop import Schedule, make_optimizer

    def one_step(wd_all):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 2, 3, bias=True), nn.BatchNorm2d(2))
        with torch.no_grad():
            net[1].bias.fill_(0.5)
        before = {k: v.detach().clone() for k, v in net.named_parameters()}
        opt = make_optimizer(net, "sgd", 0.1, 0.01, bn_scale=False, bn_bias_lr=64, momentum=0.9, wd_all=wd_all)
        Schedule("step", 10).apply(opt)  # each group at its peak: 0.1, and 6.4 for the BN biases
        (0 * net(torch.randn(2, 1, 4, 4))).sum().backward()
        opt.step()
        return before, dict(net.named_parameters())

    shrink = 1 - 0.1 * 0.01 * 1.9
    before, after = one_step(wd_all=True)
    for name in ("0.weight", "0.bias", "1.bias"):
        assert torch.allclose(after[name], before[name] * shrink, atol=1e-7), name
    before, after = one_step(wd_all=False)
    assert torch.allclose(after["0.weight"], before["0.weight"] * shrink, atol=1e-7)
    assert torch.equal(after["0.bias"], before["0.bias"]) and torch.equal(after["1.bias"], before["1.bias"])


# --- initialisation ----------------------------------------------------------------------------------

def test_dirac_init_makes_the_first_in_channels_outputs_copy_the_input():
    """A 3x3 conv (padding 1, 3 -> 8 channels) after Dirac init: outputs 0..2 are the input channels; the
    other five filters keep their random init. A depthwise conv (4 -> 8, two filters per channel) passes
    channel g through at output 2g. A conv with fewer outputs than inputs is left alone."""
    from convcli.train.loop import dirac_init

    torch.manual_seed(0)
    net = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1, bias=False),
                         nn.Conv2d(4, 8, 3, padding=1, groups=4, bias=False),
                         nn.Conv2d(8, 4, 1, bias=False)])
    untouched = [net[0].weight[3:].clone(), net[1].weight[1::2].clone(), net[2].weight.clone()]
    assert dirac_init(net) == 2
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(net[0](x)[:, :3], x)
    y = torch.randn(2, 4, 6, 6)
    assert torch.equal(net[1](y)[:, 0::2], y)
    assert torch.equal(net[0].weight[3:], untouched[0]) and torch.equal(net[1].weight[1::2], untouched[1])
    assert torch.equal(net[2].weight, untouched[2])


def test_a_frozen_whitening_layer_keeps_its_filters_and_trains_its_bias():
    from convcli.train.loop import make_optimizer, whiten_first_conv

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 24, 2, bias=True), nn.GELU(), nn.Flatten(), nn.LazyLinear(10))
    x = torch.randn(64, 3, 8, 8)
    net(x)
    assert whiten_first_conv(net, [x], freeze=True)
    whitened, bias = net[0].weight.detach().clone(), net[0].bias.detach().clone()
    opt = make_optimizer(net, "sgd", 0.1, 5e-4)
    nn.functional.cross_entropy(net(x), torch.randint(0, 10, (64,))).backward()
    opt.step()
    assert not net[0].weight.requires_grad and torch.equal(net[0].weight, whitened)
    assert not torch.equal(net[0].bias, bias)


def test_freeze_whiten_without_whiten_is_an_error_naming_the_fix():
    from convcli.train.config import build_config

    with pytest.raises(ConvcliError, match=r"needs whiten \(--whiten\)"):
        build_config({"freeze_whiten": True}, None, "spec.yaml", None)
    assert build_config({"freeze_whiten": True, "whiten": True}, None, "spec.yaml", None).freeze_whiten


# --- BatchNorm, logits and the schedule ----------------------------------------------------------------

def test_bn_momentum_weighs_the_new_batch_by_m():
    """From running mean 0, one training batch with mean 2 leaves m·2: 0.8 for airbench's 0.4."""
    from convcli.train.loop import set_bn_momentum

    bn = nn.BatchNorm2d(1)
    set_bn_momentum(nn.Sequential(bn), 0.4)
    bn(torch.full((4, 1, 2, 2), 2.0))
    assert bn.running_mean.item() == pytest.approx(0.8)


def test_the_logit_scale_multiplies_the_output_and_leaves_the_weights_names_alone():
    from convcli.train.loop import scale_logits

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(2, 4)
    plain = net(x)
    keys = list(net.state_dict())
    scale_logits(net, 1 / 9)
    assert torch.allclose(net(x), plain / 9)
    assert list(net.state_dict()) == keys


def test_airbench_schedule_climbs_from_a_fifth_to_the_peak_at_23_percent_then_falls_to_seven_hundredths():
    from convcli.train.loop import lr_factor

    total = 1000
    assert lr_factor("airbench", 0, total) == pytest.approx(0.2)
    assert lr_factor("airbench", 115, total) == pytest.approx(0.2 + 0.8 * 0.5)  # half-way up
    assert lr_factor("airbench", 230, total) == pytest.approx(1.0)
    assert lr_factor("airbench", 615, total) == pytest.approx(1 - 0.93 * 0.5)  # half-way down
    assert lr_factor("airbench", 1000, total) == pytest.approx(0.07)


# --- a run with them ---------------------------------------------------------------------------------

def test_a_run_with_the_airbench_options_says_so_and_eval_reproduces_its_test_loss(
        data_cache, archive, tiny_spec, cli, tmp_path):
    """The logit scale changes the loss, so `eval` must apply the one the run was trained with."""
    run = tmp_path / "run"
    result = cli("train", tiny_spec, "--data", archive, "--subset", 512, "--test-subset", 256, "--epochs", 1,
                 "--batch-size", 64, "--precise-bn", 0, "--no-tta", "--momentum", 0.85, "--wd-all", "--dirac",
                 "--whiten", "--freeze-whiten", "--bn-momentum", 0.4, "--logit-scale", 0.25, "--schedule",
                 "airbench", "--device", "cpu", "--out", run)
    assert result.exit_code == 0, result.output + repr(result.exception)
    for words in ("frozen whitening first conv", "Dirac init", "logits x0.25", "momentum 0.85",
                  "weight decay on every parameter", "BN momentum 0.4", "airbench"):
        assert words in result.output
    with open(run / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    report = cli("eval", "--weights", run / "last.pt", "--json", "--device", "cpu", "--out", tmp_path / "eval")
    assert report.exit_code == 0, report.output
    evaluated = json.loads(report.output)
    assert evaluated["accuracy"] == pytest.approx(float(last["test_acc"]), abs=1e-6)
    assert evaluated["loss"] == pytest.approx(float(last["test_loss"]), rel=1e-4)


def test_the_shipped_airbench_recipe_turns_airbenchs_published_numbers_into_mean_loss_ones():
    """airbench: lr 11.5 and wd 0.0153 per 1024 examples of a summed loss, momentum 0.85, i.e. divided by its
    kilostep scale 1024·(1 + 1/(1 - 0.85)). Per mean-loss step: lr = 11.5/7.667 = 1.5, and a weight shrinks
    by 0.0153/7.667 = 0.001996 = lr·wd, so wd = 1.33e-3."""
    from conftest_data import ROOT

    from convcli.train.config import load_recipe

    recipe = load_recipe(str(ROOT / "recipes" / "airbench.yaml"))
    scale = 1 + 1 / (1 - 0.85)
    assert recipe["momentum"] == 0.85 and recipe["batch_size"] == 1024
    assert recipe["lr"] == pytest.approx(11.5 / scale, rel=1e-3)
    assert recipe["lr"] * recipe["weight_decay"] == pytest.approx(0.0153 / scale, rel=1e-2)
    assert recipe["logit_scale"] == pytest.approx(1 / 9, rel=1e-3)
    assert recipe["bn_bias_lr"] == 64 and recipe["bn_momentum"] == pytest.approx(1 - 0.6)
    assert recipe["freeze_whiten"] and recipe["dirac"] and recipe["wd_all"] and not recipe["bn_scale"]


@pytest.mark.parametrize("name, value, says", [
    ("target_acc", 150, "expected a number in (0, 1] (or a percentage up to 100), got 150"),
    ("tta_translate", 5, "expected a number of pixels in [0, 4], got 5"),
])
def test_an_out_of_range_option_says_what_was_given(name, value, says):
    from convcli.errors import ConvcliError
    from convcli.train.config import coerce

    with pytest.raises(ConvcliError) as exc:
        coerce(name, value)
    assert says in str(exc.value)


# --- how the options combine -------------------------------------------------------------------------

def spec_train(tmp_path, text: str):
    """A spec's `train:` section as the spec loader reads it (with its lines)."""
    from convcli.yamlio import load_yaml

    path = tmp_path / "net.yaml"
    path.write_text(text)
    return load_yaml(text, str(path))["train"], str(path)


def test_a_conflict_set_in_the_spec_is_reported_at_its_line(tmp_path):
    from convcli.errors import SpecError
    from convcli.train.config import build_config

    train, path = spec_train(tmp_path, "name: n\ntrain:\n  lr: 0.4\n  freeze_whiten: true\n")
    with pytest.raises(SpecError, match=r"net\.yaml:4: train: freeze_whiten"):
        build_config({}, train, path, None)
    with pytest.raises(ConvcliError, match="--tta-translate") as exc:  # on the command line: the flags
        build_config({"tta": False, "tta_translate": 2}, None, "spec.yaml", None)
    assert not isinstance(exc.value, SpecError)


def test_no_flip_records_no_alternating_flip():
    from convcli.train.config import build_config

    assert build_config({"flip": False}, None, "spec.yaml", None).alt_flip is False
    assert build_config({}, None, "spec.yaml", None).alt_flip is True


@pytest.mark.parametrize("train, cli, lr, wd, noted", [
    ("  lr: 0.4\n  weight_decay: 1.5e-3\n", {"optimizer": "adam"}, 1e-3, 0.0, True),  # sgd's values, not Adam's
    ("  lr: 0.4\n", {"optimizer": "sgd"}, 0.4, 5e-4, False),  # the same optimizer: the spec's lr stands
    ("  optimizer: adam\n  lr: 3e-4\n", {}, 3e-4, 0.0, False),  # set together
    ("  lr: 0.4\n", {"optimizer": "adamw", "lr": 0.002}, 0.002, 0.05, False),  # the command line's own lr
])
def test_an_optimizer_chosen_above_the_lr_gets_its_own_defaults(train, cli, lr, wd, noted, tmp_path):
    from convcli.train.config import build_config

    section, path = spec_train(tmp_path, "name: n\ntrain:\n" + train)
    notes: list[str] = []
    cfg = build_config(cli, section, path, None, notes)
    assert (cfg.lr, cfg.weight_decay) == (lr, wd)
    assert bool(notes) == noted and all("adam" in n for n in notes)


def test_an_unknown_device_in_the_spec_is_reported_at_its_line(tmp_path):
    from convcli.train.config import build_config

    train, path = spec_train(tmp_path, "name: n\ntrain:\n  device: tpu\n")
    with pytest.raises(ConvcliError, match=r"net\.yaml:3: .*unknown device 'tpu'.*did you mean 'cpu'"):
        build_config({}, train, path, None)
    assert build_config({"device": "cuda:1"}, None, path, None).device == "cuda:1"  # checked when used


@pytest.mark.parametrize("text, says", [
    ("trian:\n  lr: 0.1\n", r"r\.yaml:1: unknown section 'trian'(.|\n)*did you mean 'train'"),
    ("learning_rate: 0.1\n", r"unknown training option 'learning_rate'(.|\n)*did you mean 'lr'"),
    ("train:\n  lr: 0.1\nepochs: 3\n", r"r\.yaml:3: 'epochs' beside the train section"),
    ("name: n\ninput: [3, 8, 8]\nlayers: []\n", "this is a spec"),
    ("", "holds no training options"),
])
def test_recipe_mistakes_say_what_to_write(text, says, tmp_path):
    from convcli.train.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConvcliError, match=says):
        load_recipe(str(path))


def test_a_recipe_written_as_a_train_section_is_read(tmp_path):
    from convcli.train.config import load_recipe_with_lines

    path = tmp_path / "r.yaml"
    path.write_text("train:\n  lr: 0.2\n  batch-size: 256\n")
    options, lines = load_recipe_with_lines(str(path))
    assert options == {"lr": 0.2, "batch_size": 256} and lines == {"lr": 2, "batch_size": 3}


def test_switching_an_option_off_above_its_refinement_switches_that_off_too(tmp_path):
    from convcli.train.config import build_config

    train, path = spec_train(tmp_path, "name: n\ntrain:\n  whiten: true\n  freeze_whiten: true\n  tta_translate: 2\n")
    notes: list[str] = []
    cfg = build_config({"whiten": False, "tta": False}, train, path, None, notes)
    assert (cfg.whiten, cfg.freeze_whiten, cfg.tta, cfg.tta_translate) == (False, False, False, 0)
    assert len(notes) == 2


def test_an_option_name_in_other_case_is_suggested(tmp_path):
    from convcli.train.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("Lr: 0.1\n")
    with pytest.raises(ConvcliError, match="did you mean 'lr'"):
        load_recipe(str(path))


def test_augmentation_as_large_as_the_image_is_refused_at_its_line(tmp_path):
    from convcli.errors import SpecError
    from convcli.train.config import build_config

    train, path = spec_train(tmp_path, "name: n\ntrain:\n  lr: 0.4\n  cutout: 40\n")
    with pytest.raises(SpecError, match=r"net\.yaml:4: train: cutout: 40 px must be smaller than the image \(32"):
        build_config({}, train, path, None, image_side=32)
    with pytest.raises(ConvcliError, match="translate: 32 px"):
        build_config({"translate": 32}, None, path, None, image_side=32)
    assert build_config({"cutout": 31}, None, path, None, image_side=32).cutout == 31


def test_cudnn_benchmark_is_an_option_that_reaches_the_backend(tmp_path):
    """On by default (the fastest steps); --no-cudnn-benchmark or `cudnn_benchmark: false` in a spec's train
    section turns cuDNN's per-shape algorithm timing off, which the first epoch otherwise pays for."""
    from convcli.train.config import build_config
    from convcli.train.trainer import configure_backend

    train, path = spec_train(tmp_path, "name: n\ntrain:\n  cudnn_benchmark: false\n")
    assert build_config({}, None, path, None).cudnn_benchmark is True
    assert build_config({}, train, path, None).cudnn_benchmark is False
    before = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    try:
        configure_backend(torch.device("cuda"), False)  # sets flags only: runs without a GPU
        assert torch.backends.cudnn.benchmark is False
        configure_backend(torch.device("cuda"), True)
        assert torch.backends.cudnn.benchmark is True
    finally:  # global flags: leave them as the other tests expect
        torch.backends.cudnn.benchmark = before[0]
        torch.set_float32_matmul_precision(before[1])


def test_nproc_in_a_train_section_or_a_recipe_is_refused_at_its_line(tmp_path):
    """--nproc is how a machine runs the training: a spec or recipe holding it was trained by one process and
    then resumed by several."""
    from convcli.train.config import build_config

    train, path = spec_train(tmp_path, "name: n\ntrain:\n  epochs: 2\n  nproc: 2\n")
    with pytest.raises(ConvcliError, match=r"net\.yaml:4: .*'nproc' is how a machine runs the training"):
        build_config({}, train, path, None)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 0.1\nnproc: 2\n")
    with pytest.raises(ConvcliError, match=r"(?s)recipe\.yaml:2: .*--nproc N on the command line"):
        build_config({}, None, path, str(recipe))
    assert build_config({"nproc": 2}, None, path, None).nproc == 2


def test_a_gpu_is_cuda_for_train_and_eval_alike():
    from convcli.train.config import coerce
    from convcli.train.device import resolve_device

    for ask in (lambda: coerce("device", "gpu"), lambda: resolve_device("gpu")):
        with pytest.raises(ConvcliError, match="did you mean 'cuda'"):
            ask()


def test_a_typo_gets_the_near_best_suggestions_only():
    from convcli.errors import did_you_mean

    assert did_you_mean("epocs", ["epochs", "nproc", "lr"]) == "'epochs'"  # nproc shares p, o, c: 0.6
    assert did_you_mean("relu", ["relu6", "relu", "gelu"]) == "'relu' or 'relu6'"  # gelu: 0.75 against 1.0
