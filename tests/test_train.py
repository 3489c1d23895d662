"""`convcli train`: a short CPU run on the shared CIFAR-10 archive, its run directory, exact resume, the
data cache, option resolution, and the errors a user sees."""

from __future__ import annotations

import csv
import json
import shutil
import tarfile
import time

import pytest
import torch

from convcli.errors import ConvcliError, SpecError

pytest_plugins = ("conftest_data",)  # archive, data_cache, tiny_spec, short_run, trained_run, cli, cli_process

CHANCE = 0.10  # ten balanced classes
# Measured on 2 CPU cores (2,000 test images): 0.405, 0.405, 0.378 for seeds 0, 1, 2. Set with margin.
MIN_ACCURACY = 0.25


def metrics(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# --- a short run -------------------------------------------------------------------------------------

def test_short_run_learns_well_above_chance(trained_run, short_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["best_acc"] > MIN_ACCURACY > 2 * CHANCE
    assert summary["finished"] is True
    assert summary["epochs_done"] == short_run.epochs


def test_run_directory_holds_every_promised_file(trained_run, short_run):
    for name in ("tiny.yaml", "args.yaml", "metrics.csv", "best.pt", "last.pt", "curves.png", "summary.json"):
        assert (trained_run / name).stat().st_size > 0, name
    rows = metrics(trained_run)
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == list(range(1, short_run.epochs + 1))
    summary = json.loads((trained_run / "summary.json").read_text())
    for key in ("best_acc", "best_epoch", "params", "total_seconds", "device"):
        assert key in summary
    best = max(rows, key=lambda r: float(r["test_acc"]))
    assert summary["best_acc"] == float(best["test_acc"]) and summary["best_epoch"] == int(best["epoch"])


def test_args_yaml_records_the_resolved_config(trained_run, short_run):
    import yaml

    args = yaml.safe_load((trained_run / "args.yaml").read_text())
    assert (args["subset"], args["epochs"], args["batch_size"]) == (short_run.subset, short_run.epochs,
                                                                    short_run.batch_size)
    assert args["optimizer"] == "sgd" and args["lr"] == 0.1  # the sgd default, filled in


def test_checkpoints_load_weights_only_with_everything_needed_to_resume(trained_run, short_run):
    ckpt = torch.load(trained_run / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "epoch", "rng", "config"):
        assert key in ckpt
    assert ckpt["epoch"] == short_run.epochs
    assert set(ckpt["rng"]) >= {"torch", "data"}


def test_eval_of_best_checkpoint_reproduces_the_recorded_best_accuracy(trained_run, short_run, cli, tmp_path):
    summary = json.loads((trained_run / "summary.json").read_text())
    result = cli("eval", "--weights", trained_run / "best.pt", "--json", "--device", "cpu", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accuracy"] == summary["best_acc"]
    assert report["n"] == short_run.test_subset  # the run's test images


# --- resume ------------------------------------------------------------------------------------------

def test_resume_after_an_interruption_gives_the_same_metrics_as_an_uninterrupted_run(
        trained_run, short_run, tiny_spec, archive, cli, tmp_path):
    run = tmp_path / "interrupted"
    first = cli("train", tiny_spec, "--data", archive, *short_run.args, "--out", run, "--stop-after", "1")
    assert first.exit_code == 0, first.output
    assert len(metrics(run)) == 1
    assert json.loads((run / "summary.json").read_text())["finished"] is False

    resumed = cli("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output
    assert without_seconds(metrics(run)) == without_seconds(metrics(trained_run))


def test_resuming_a_finished_run_says_so_and_trains_nothing(trained_run, cli):
    before = (trained_run / "metrics.csv").read_text(), (trained_run / "last.pt").stat().st_mtime_ns
    result = cli("train", "--resume", trained_run)
    assert result.exit_code == 0
    assert "already finished" in result.output
    assert ((trained_run / "metrics.csv").read_text(), (trained_run / "last.pt").stat().st_mtime_ns) == before


def test_more_epochs_on_resume_extend_the_run(trained_run, short_run, cli, tmp_path):
    run = tmp_path / "extended"
    shutil.copytree(trained_run, run)
    epochs = short_run.epochs
    result = cli("train", "--resume", run, "--epochs", str(epochs + 1))
    assert result.exit_code == 0, result.output
    rows = metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 2))
    assert without_seconds(rows[:epochs]) == without_seconds(metrics(trained_run))
    steps_per_epoch = short_run.subset // short_run.batch_size
    assert torch.load(run / "last.pt", weights_only=True)["scheduler"]["total_steps"] == (epochs + 1) * steps_per_epoch


def test_resume_refuses_options_that_would_change_the_run(trained_run, cli):
    result = cli("train", "--resume", trained_run, "--lr", "0.5")
    assert isinstance(result.exception, ConvcliError)
    assert "--lr" in str(result.exception)



def test_resume_takes_the_runs_own_options_repeated_and_refuses_fewer_epochs(trained_run, short_run, cli, tmp_path):
    run = tmp_path / "again"
    shutil.copytree(trained_run, run)
    # The run's own command with --resume added changes nothing: not refused (here: finished, nothing to train).
    result = cli("train", "--resume", run, "--batch-size", str(short_run.batch_size), "--subset",
                 str(short_run.subset))
    assert result.exit_code == 0 and "already finished" in result.output, result.output
    # Fewer epochs than the run was started for: its LR schedule spans them all, so it is no "resume".
    result = cli("train", "--resume", run, "--epochs", str(short_run.epochs - 1))
    assert isinstance(result.exception, ConvcliError)
    assert f"started for {short_run.epochs} epochs" in str(result.exception)


def test_resume_of_a_missing_run_or_of_its_checkpoint_file_says_what_to_pass(trained_run, cli, tmp_path):
    result = cli("train", "--resume", trained_run / "last.pt")
    assert isinstance(result.exception, ConvcliError)
    assert f"did you mean --resume {trained_run}?" in str(result.exception)
    result = cli("train", "--resume", tmp_path / "nope")
    assert isinstance(result.exception, ConvcliError) and "no such directory" in str(result.exception)

# --- data --------------------------------------------------------------------------------------------

def test_second_load_of_the_archive_is_fast_and_identical(data_cache, archive):
    from convcli.train.data import load_data

    start = time.perf_counter()
    second = load_data(str(archive))
    seconds = time.perf_counter() - start
    first = data_cache["first"]
    assert seconds < data_cache["first_seconds"] / 5, (seconds, data_cache["first_seconds"])
    assert (first.cached, second.cached) == (False, True)  # what the run's "data:" line reports
    assert 0 < second.seconds <= seconds
    assert (len(first.train_y), len(first.test_y)) == (50_000, 10_000)
    assert first.classes == second.classes
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def test_archive_with_a_path_outside_its_folder_is_refused(tmp_path):
    from convcli.train.data import load_data

    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "x.jpg"
    payload.write_bytes(b"not really a jpeg")
    with tarfile.open(evil, "w:gz") as tf:
        tf.add(payload, arcname="data/train/cat/0.jpg")
        tf.add(payload, arcname="../escape.jpg")
    with pytest.raises(ConvcliError, match="refusing archive member '../escape.jpg'"):
        load_data(str(evil))


def test_stratified_subset_balances_the_classes():
    from convcli.train.loader import stratified_subset

    labels = torch.arange(10).repeat_interleave(100)  # 100 images of each of 10 classes
    idx = stratified_subset(labels, 250, seed=3)
    assert len(idx) == len(set(idx.tolist())) == 250
    counts = labels[idx].bincount(minlength=10)
    assert counts.max() - counts.min() <= 1
    assert torch.equal(idx, stratified_subset(labels, 250, seed=3))
    assert not torch.equal(idx, stratified_subset(labels, 250, seed=4))


def test_translate_returns_shifted_windows_of_the_reflect_padded_image():
    import torch.nn.functional as F

    from convcli.train.loader import translate

    x = torch.randn(16, 3, 8, 8)
    dy, dx = torch.randint(0, 5, (2, 16), generator=torch.Generator().manual_seed(0))
    out = translate(x, 2, dy, dx)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(16):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


# --- options -----------------------------------------------------------------------------------------

def test_command_line_beats_recipe_beats_spec_train_section(tmp_path):
    from convcli.train.config import build_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 0.02\nbatch-size: 32\nweight_decay: 1e-4\n")  # YAML reads 1e-4 as a string
    cfg = build_config({"batch_size": 16, "epochs": None}, {"epochs": 5, "lr": 0.05, "schedule": "cosine"},
                       "spec.yaml", str(recipe))
    assert (cfg.epochs, cfg.schedule) == (5, "cosine")  # from the spec
    assert (cfg.lr, cfg.weight_decay) == (0.02, 1e-4)  # the recipe over the spec
    assert cfg.batch_size == 16  # the command line over both


def test_unknown_option_in_the_spec_train_section_is_an_error_with_a_suggestion():
    from convcli.train.config import build_config

    with pytest.raises(SpecError, match="did you mean 'epochs'"):
        build_config({}, {"epoch": 3}, "spec.yaml", None)


def test_default_spec_comes_from_pyproject_then_convcli_yaml(tmp_path):
    from convcli.train.config import FALLBACK_SPEC, default_spec

    assert default_spec(tmp_path)[0] == FALLBACK_SPEC
    (tmp_path / "convcli.yaml").write_text("default_spec: nets/b.yaml\n")
    assert default_spec(tmp_path)[0] == "nets/b.yaml"
    (tmp_path / "pyproject.toml").write_text('[tool.convcli]\ndefault_spec = "nets/a.yaml"\n')
    assert default_spec(tmp_path)[0] == "nets/a.yaml"


@pytest.mark.parametrize("kind", ["onecycle", "cosine", "step"])
def test_lr_schedules_start_low_or_at_peak_and_end_low(kind):
    from convcli.train.loop import lr_factor

    total = 1000
    factors = [lr_factor(kind, s, total) for s in range(total)]
    assert max(factors) == pytest.approx(1.0, abs=1e-2)
    assert factors[-1] < 0.02
    peak = factors.index(max(factors))
    assert peak == {"onecycle": 250, "cosine": 50, "step": 0}[kind]


# --- errors ------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_exits_2_with_a_clear_message(tiny_spec, cli_process):
    result = cli_process("train", tiny_spec, "--device", "cuda")
    assert result.returncode == 2
    assert "--device cuda: CUDA is not available" in result.stderr
    assert "Traceback" not in result.stderr


# --- recipe pieces -----------------------------------------------------------------------------------

def test_alternating_flip_shows_every_image_both_ways_in_two_epochs():
    from convcli.train.loader import DeviceLoader

    n = 64
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, :, 0] = 255  # left column lit: a mirrored image has its right column lit instead
    labels = torch.arange(n)
    loader = DeviceLoader(images, labels, [0.5], [0.5], 16, train=True, generator=torch.Generator().manual_seed(0),
                          flip=True, alt_flip=True)

    def mirrored_per_label():
        out = {}
        for x, y in loader:
            for img, label in zip(x, y):
                out[int(label)] = bool(img[0, 0, -1] > img[0, 0, 0])
        return out

    first, second, third = mirrored_per_label(), mirrored_per_label(), mirrored_per_label()
    assert all(first[i] != second[i] for i in range(n))  # each image once each way over two epochs
    assert first == third
    assert 0 < sum(first.values()) < n  # the starting side is random per image


def test_lookahead_averages_every_fifth_step_and_ends_on_the_slow_weights():
    from torch import nn

    from convcli.train.loop import Lookahead

    model = nn.Linear(1, 1, bias=False)
    la = Lookahead(model)
    total = 12

    def step(i, weight):
        with torch.no_grad():
            model.weight.fill_(weight)
        la.after_step(model, i, total)
        return model.weight.item()

    assert step(4, 1.0) == 1.0  # not a multiple of 5: nothing happens
    assert step(5, 1.0) == 1.0  # the first sync: the slow copy starts here, as the weights
    # By hand: decay = 0.95^5 * (10/12)^3; slow = decay * 1 + (1 - decay) * 3, and the weight is reset to it.
    d10 = 0.95 ** 5 * (10 / 12) ** 3
    assert step(10, 3.0) == pytest.approx(d10 + 3 * (1 - d10))
    # The last step (12, not a multiple of 5) syncs too, at decay 0.95^5: steps 11-12 are not thrown away.
    slow = d10 + 3 * (1 - d10)
    assert step(12, 5.0) == pytest.approx(0.95 ** 5 * slow + (1 - 0.95 ** 5) * 5)


def test_lookahead_on_a_run_of_a_few_steps_keeps_the_trained_weights():
    from torch import nn

    from convcli.train.loop import Lookahead

    model = nn.Linear(1, 1, bias=False)
    la = Lookahead(model)
    with torch.no_grad():
        model.weight.fill_(2.0)  # "trained" in 3 steps
    la.after_step(model, 3, 3)
    assert model.weight.item() == 2.0  # not pulled back to the initial weight
    restored = Lookahead(model)
    restored.load_state_dict(la.state_dict())
    assert restored.state_dict()["weight"].item() == 2.0 and Lookahead(model).state_dict() == {}


def test_bf16_and_channels_last_follow_the_device():
    from convcli.train import device as dev

    cpu = torch.device("cpu")
    assert dev.amp_active(cpu, False) is False
    assert dev.amp_active(cpu, True) is dev.cpu_native_bf16()
    assert dev.use_channels_last(cpu, True) and not dev.use_channels_last(cpu, False)
    assert not dev.use_channels_last(torch.device("mps"), True)


def test_epoch_line_reports_precise_bn_and_eval_time(trained_run, short_run, tiny_spec, archive, cli, tmp_path):
    result = cli("train", tiny_spec, "--data", archive, *short_run.args, "--epochs", "1", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("epoch 1/1"))
    assert "precise BN" in line and "eval TTA" in line


def test_every_declared_option_is_a_command_line_option_a_config_field_and_a_checked_train_key(cli):
    from convcli.train.config import OPTIONS, TrainConfig, build_config

    help_text = cli("train", "--help").output
    defaults = TrainConfig()
    for o in OPTIONS:
        assert o.flag in help_text, o.flag
        assert getattr(defaults, o.name) == o.default
        if o.low is not None:  # a value just outside the declared range is refused, naming the key
            bad = o.low if o.low_open else o.low - 1
            with pytest.raises(SpecError, match=o.name):
                build_config({}, {o.name: o.kind(bad)}, "spec.yaml", None)
        if o.choices:
            with pytest.raises(SpecError, match=o.name):
                build_config({}, {o.name: "nonsense"}, "spec.yaml", None)


def test_whitening_init_decorrelates_the_first_convs_patches():
    import numpy as np
    import torch.nn.functional as F
    from torch import nn

    from convcli.train.loop import whiten_first_conv

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(3, 3, generator=g)  # correlated colour channels
    x = torch.einsum("ij,bjhw->bihw", mix, torch.randn(64, 3, 8, 8, generator=g))
    model = nn.Sequential(nn.Conv2d(3, 8, 2, bias=False), nn.ReLU())
    assert whiten_first_conv(model, [x[:32], x[32:]], eps=0.0)
    w = model[0].weight.detach().reshape(8, -1).double().numpy()
    assert np.allclose(w[:4], -w[4:])  # each filter with both signs
    # Reference covariance from numpy on the same 2x2 patches: the filters whiten it (W C W^T = I).
    patches = F.unfold(x, 2).transpose(1, 2).reshape(-1, 12).double().numpy()
    cov = np.cov(patches, rowvar=False)
    assert np.allclose(w[:4] @ cov @ w[:4].T, np.eye(4), atol=1e-6)
    # ...and they are its top eigenvectors: no other unit direction has more variance than the first.
    top = w[0] / np.linalg.norm(w[0])
    assert top @ cov @ top == pytest.approx(np.linalg.eigvalsh(cov)[-1])


def test_a_quick_try_that_cannot_learn_gets_a_warning_with_the_fix():
    from convcli.train.config import TrainConfig
    from convcli.train.trainer import quick_try_warning

    # --subset 500 with batch 512: ceil(500/512) = 1 step an epoch, 3 steps in 3 epochs.
    text = quick_try_warning(TrainConfig(batch_size=512, epochs=3), steps_per_epoch=1, n_train=500)
    # the suggestion: the largest power of two giving >= 10 steps an epoch, 500 // 10 = 50 -> 32
    assert "only 3 optimizer steps" in text and "--batch-size 32" in text
    assert quick_try_warning(TrainConfig(batch_size=64, epochs=3), steps_per_epoch=32, n_train=2000) is None
    # 40 images, batch 512, 1 epoch: batch 8 gives 5 steps, so it is suggested; 9 images: batch 8 is still 1 step
    assert "--batch-size 8" in quick_try_warning(TrainConfig(batch_size=512, epochs=1), 1, 40)
    assert "--batch-size" not in quick_try_warning(TrainConfig(batch_size=512, epochs=1), 1, 9)
    # 5 images for 10 classes: at least 5 classes have none
    assert "5 training images for 10 classes" in quick_try_warning(TrainConfig(batch_size=512, epochs=1), 1, 5, 10)
    # batch 1000 on 512 images over 100 epochs: enough steps, but a step is 512 images, not the 1,000 shown
    assert "each epoch is one step of 512" in quick_try_warning(TrainConfig(batch_size=1000, epochs=100), 1, 512)


def test_six_view_tta_weighs_the_unshifted_pair_half_and_each_diagonal_shift_a_quarter():
    """A 'network' that reads the top-left pixel, on a 4x4 image holding 0..15 (row-major), shift 1 px:
    image 0, mirror 3 (pair 1.5); shifted up-left the reflect padding puts x[1,1] = 5 there, and its mirror
    x[1,2] = 6 (pair 5.5); shifted down-right the corner is x[1,1] = 5 again, mirror x[1,2] = 6 (5.5).
    1.5/2 + 5.5/4 + 5.5/4 = 3.5. Without the shifts: 1.5; without TTA: 0."""
    import contextlib

    from convcli.train.loop import predict

    class Corner(torch.nn.Module):
        def forward(self, x):
            return x[:, :, 0, 0]

    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    batches = [(x, torch.tensor([0]))]
    ctx = contextlib.nullcontext()
    assert predict(Corner(), batches, ctx)[0].item() == 0.0
    assert predict(Corner(), batches, ctx, tta=True)[0].item() == 1.5
    assert predict(Corner(), batches, ctx, tta=True, translate=1)[0].item() == 3.5


def test_bn_tuned_for_short_runs_freezes_the_scales_and_boosts_the_bias_lr():
    """airbench's BN: scales frozen at 1 (not trained, not in the optimizer), biases at 64x the LR. One SGD
    step from zero momentum moves a BN bias by 64·lr·grad, a conv weight by lr·(grad + wd·w)·(1 + m) for
    Nesterov (first step: the update is g + m·g)."""
    from convcli.train.loop import Schedule, make_optimizer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, bias=False), torch.nn.BatchNorm2d(2))
    opt = make_optimizer(net, "sgd", 0.1, 0.0, bn_scale=False, bn_bias_lr=64)
    bn = net[1]
    assert not bn.weight.requires_grad
    assert all(bn.weight is not p for g in opt.param_groups for p in g["params"])
    schedule = Schedule("step", 10)  # factor 1 for the first half
    schedule.apply(opt)
    assert sorted(g["lr"] for g in opt.param_groups) == [0.1, pytest.approx(6.4)]
    before_w, before_b = net[0].weight.detach().clone(), bn.bias.detach().clone()
    net(torch.randn(4, 1, 5, 5)).pow(2).mean().backward()
    gw, gb = net[0].weight.grad.clone(), bn.bias.grad.clone()
    opt.step()
    assert torch.allclose(bn.bias, before_b - 6.4 * gb * 1.9, atol=1e-6)
    assert torch.allclose(net[0].weight, before_w - 0.1 * gw * 1.9, atol=1e-6)
    assert torch.equal(bn.weight, torch.ones(2))


def test_the_first_steps_time_is_measured_apart_when_asked():
    # torch.compile compiles in the first step; the trainer reports that step apart from the training time.
    import contextlib

    from convcli.train.device import Timer
    from convcli.train.loop import Schedule, train_epoch

    class Loader(list):
        device = torch.device("cpu")

    torch.manual_seed(0)
    batches = Loader([(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(3)])
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD([{"params": model.parameters(), "peak_lr": 0.1}], lr=0.1)
    timer = Timer(torch.device("cpu"))
    out = train_epoch(model, batches, optimizer, Schedule("onecycle", 3), torch.nn.CrossEntropyLoss(),
                      contextlib.nullcontext(), timer, time_first_step=True)
    assert 0 < out["first_step_seconds"] <= timer.seconds and out["images"] == 12
    timer2 = Timer(torch.device("cpu"))
    assert train_epoch(model, batches, optimizer, Schedule("onecycle", 3), torch.nn.CrossEntropyLoss(),
                       contextlib.nullcontext(), timer2)["first_step_seconds"] is None


def test_lookahead_restored_from_a_cpu_checkpoint_follows_the_model_to_its_device():
    """--resume loads checkpoints onto the CPU; the slow weights must join the model's device (a CUDA resume
    failed with 'found at least two devices' the first time it ran on a GPU). The meta device stands in for CUDA."""
    from torch import nn

    from convcli.train.loop import Lookahead

    model = nn.Linear(1, 1, bias=False, device="meta")
    restored = Lookahead(model)
    restored.load_state_dict({"weight": torch.ones(1, 1)})  # as read from last.pt with map_location="cpu"
    restored.after_step(model, 5, 10)
    assert restored.state_dict()["weight"].device == model.weight.device
