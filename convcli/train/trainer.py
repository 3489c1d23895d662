"""`convcli train`: resolve the spec, config, device and data; train; write the run directory.

A fresh run and a resumed one share `Session` (model, loaders, optimizer, schedule, generator) and
`fit()` (the epoch loop). Resuming restores model, optimizer, schedule step, best accuracy and the RNG
states (the global torch RNG and the shuffle/augmentation generator) from `last.pt`, so on the CPU the
remaining epochs compute exactly what an uninterrupted run computes.

Extending a run (`--resume DIR --epochs M`, M larger than the saved total): the LR schedule is rebuilt for
M epochs and continues at the saved step. The LR therefore jumps to the value the M-epoch schedule has at
that step (onecycle/cosine: higher than where the shorter run ended, since the decay is now stretched over M
epochs) and then decays to the new end. There is no new warm-up, and the steps taken are not replayed.

Faults (issue 10; see docs/robustness.md): the run directory is locked for the run's life (`guard.RunLock`);
memory and disk are checked before the data loads; a non-finite loss or weights stop the run (exit 1) with
nothing non-finite saved; a failed write stops it (exit 2) keeping the last complete checkpoint. Ctrl-C or
SIGTERM during training stops after the current step and saves last.pt: mid-epoch it records the step and
the data generator's state at the epoch's start, and `--resume` draws that epoch's batches again up to the
step (same shuffle and augmentation), skips them and continues, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

import convcli
from convcli.errors import ConvcliError
from convcli.fingerprint import run_record
from convcli.train.config import (
    DEFAULT_LR,
    FIELDS,
    RESUME_OPTIONS,
    TrainConfig,
    build_config,
    coerce,
    resolve_spec_path,
)
from convcli.train.data import ImageData, load_data, local_path, saved_source
from convcli.train.device import Timer, amp_active, autocast, describe, resolve_device, use_channels_last
from convcli.train.distributed import SINGLE, Dist, user_command
from convcli.train.guard import (
    WRITE_MARGIN,
    Diverged,
    StopRequest,
    check_memory,
    check_output,
    checkpoint_bytes,
    fault_point,
    human_bytes,
)
from convcli.train.loader import EVAL_BATCH, DeviceLoader, channel_stats, match_channels, stratified_subset
from convcli.train.loop import (
    Lookahead,
    NonFiniteLoss,
    Schedule,
    dirac_init,
    eval_metrics,
    loss_limit,
    make_optimizer,
    merge_bn_stats,
    predict,
    recalibrate_bn,
    scale_logits,
    set_bn_momentum,
    train_epoch,
    whiten_first_conv,
)
from convcli.train.runs import RunWriter, WriteError, claim_run_dir, load_checkpoint

CHECKPOINT_FORMAT = "convcli-train-v1"
# Options added after runs were first saved, with the value that reproduces how those runs were trained.
LEGACY_DEFAULTS = {"alt_flip": False, "lookahead": False, "tta": False, "whiten": False}
WHITEN_IMAGES = 5000  # training images whose patches estimate the covariance for --whiten
TEST_SUBSET_SEED = 0  # the test subset does not depend on --seed, so `eval` can select the same images


@dataclass
class Session:
    cfg: TrainConfig
    spec_file: str  # the spec the model is built from (the run's copy when resuming)
    analysis: object
    device: torch.device
    model: torch.nn.Module  # the module whose state is saved
    step_model: torch.nn.Module  # what runs the steps: the model, DDP(model), or torch.compile of either
    eval_model: torch.nn.Module  # what evaluates: the model or torch.compile(model), never DDP (ranks differ)
    train_loader: DeviceLoader
    test_loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    generator: torch.Generator
    lookahead: Lookahead | None
    data: ImageData
    mean: list
    std: list
    params: int
    n_test: int  # test images over all ranks (each rank's loader holds its part)
    dist: Dist = SINGLE
    data_seconds: float = 0.0  # load_data + placing both splits on the device: until the data is ready


# --- setup ---------------------------------------------------------------------------------------

def check_spec_for_training(analysis, data: ImageData | None = None) -> None:
    spec, out = analysis.spec, tuple(analysis.output_shape)
    if len(out) != 1:
        raise ConvcliError(f"{spec.file}: the model's output is {list(out)}; training needs one score per "
                           "class (end the spec with e.g. `gap` and `linear: {out: CLASSES}`)")
    if data is None:
        return
    if out[0] != len(data.classes):
        names = ", ".join(data.classes[:12]) + (", ..." if len(data.classes) > 12 else "")
        raise ConvcliError(f"{spec.file}: the model outputs {out[0]} scores but the data ({data.source}) has "
                           f"{_plural(len(data.classes), 'class', 'classes')} ({names})")
    if len(spec.input) != 3 or tuple(spec.input[1:]) != tuple(data.image_shape[1:]):
        raise ConvcliError(f"{spec.file}: input {list(spec.input)} does not match the data's "
                           f"{data.image_shape[0]}x{data.image_shape[1]}x{data.image_shape[2]} images ({data.source})")


def place_split(images: torch.Tensor, labels: torch.Tensor, channels: int, device, where: str):
    images = match_channels(images, channels, where)
    return images.to(device), labels.to(device)


def make_session(cfg: TrainConfig, spec_file: str, analysis, device: torch.device, data: ImageData,
                 mean=None, std=None, dist: Dist = SINGLE) -> Session:
    from convcli.build import count_params
    from convcli.sources import build_for

    torch.manual_seed(cfg.seed)  # the model's initial weights depend on the seed only
    model = build_for(analysis).to(device)
    channels_last = use_channels_last(device, cfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    channels = analysis.spec.input[0]

    placing = time.perf_counter()
    train_idx = torch.arange(len(data.train_y))
    if cfg.subset is not None:
        if cfg.subset > len(train_idx):
            raise ConvcliError(f"--subset {cfg.subset}: the training set has only {len(train_idx)} images")
        train_idx = stratified_subset(data.train_y, cfg.subset, cfg.seed)
    test_idx = torch.arange(len(data.test_y))
    if cfg.test_subset is not None and cfg.test_subset > len(test_idx):
        raise ConvcliError(f"--test-subset {cfg.test_subset}: the test set has only {len(test_idx)} images")
    if cfg.test_subset is not None and cfg.test_subset < len(test_idx):
        test_idx = stratified_subset(data.test_y, cfg.test_subset, TEST_SUBSET_SEED)
    if mean is None:  # statistics of the whole training split (stored in the checkpoint for `eval`)
        mean, std = channel_stats(match_channels(data.train_x, channels, data.source))

    train_x, train_y = place_split(data.train_x[train_idx], data.train_y[train_idx], channels, device, data.source)
    test_x, test_y = place_split(data.test_x[test_idx], data.test_y[test_idx], channels, device, data.source)
    from convcli.train.distributed import check_batch

    check_batch(cfg.batch_size, dist, len(train_y))
    if dist.active and len(test_y) < dist.world:
        raise ConvcliError(f"{len(test_y)} test images cannot be split over {dist.world} processes: raise "
                           "--test-subset")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # the same stream on every rank
    train_loader = DeviceLoader(train_x, train_y, mean, std, cfg.batch_size, train=True, generator=generator,
                                translate=cfg.translate, flip=cfg.flip, alt_flip=cfg.alt_flip, cutout=cfg.cutout,
                                channels_last=channels_last, shard=dist.shard())
    test_loader = DeviceLoader(test_x, test_y, mean, std, EVAL_BATCH, channels_last=channels_last,
                               shard=dist.shard())
    data_seconds = data.seconds + time.perf_counter() - placing
    apply_model_options(model, cfg.to_dict())
    # initialisations, before the optimizer sees the weights; a resumed run loads its own weights over these
    if cfg.dirac:
        dirac_init(model)
    if cfg.whiten:  # after Dirac: the whitening filters replace the first conv's
        whiten_first_conv(model, train_loader.calibration_batches(WHITEN_IMAGES), freeze=cfg.freeze_whiten)
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.bn_scale, cfg.bn_bias_lr,
                               momentum=cfg.momentum, wd_all=cfg.wd_all)
    schedule = Schedule(cfg.schedule, cfg.epochs * len(train_loader))
    if cfg.compile and device.type != "cuda":  # inductor's C++ toolchain notes the missing CUDA runtime: expected
        import logging

        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    eval_model = torch.compile(model) if cfg.compile else model
    step_model = eval_model
    if dist.active:  # the same initial weights on every rank (same seed); DDP also broadcasts rank 0's
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        step_model = torch.compile(ddp) if cfg.compile else ddp
    lookahead = Lookahead(model) if cfg.lookahead else None
    return Session(cfg, spec_file, analysis, device, model, step_model, eval_model, train_loader, test_loader,
                   optimizer, schedule, generator, lookahead, data, list(mean), list(std), count_params(model)[0],
                   len(test_y), dist, data_seconds)


def apply_model_options(model: torch.nn.Module, options: dict) -> None:
    """The options that change what the model computes rather than how it is trained, from a config dict
    (`TrainConfig.to_dict()` or a checkpoint's, which may predate them); `eval` applies them too."""
    if options.get("logit_scale", 1.0) != 1.0:
        scale_logits(model, options["logit_scale"])
    if options.get("bn_momentum") is not None:
        set_bn_momentum(model, options["bn_momentum"])


def configure_backend(device: torch.device, cudnn_benchmark: bool = True) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.set_float32_matmul_precision("high")


# --- checkpoints ---------------------------------------------------------------------------------

def rng_state(s: Session) -> dict:
    state = {"torch": torch.get_rng_state(), "data": s.generator.get_state(), "device_type": s.device.type}
    if s.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(s: Session, state: dict) -> bool:
    """Restore the RNG states; False when the run moved to another device type, whose generator differs
    (training continues correctly, but its shuffles and augmentations no longer match an uninterrupted run)."""
    torch.set_rng_state(state["torch"])
    if state.get("device_type", s.device.type) != s.device.type:
        return False
    s.generator.set_state(state["data"])
    if s.device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    return True


def checkpoint_state(s: Session, epoch: int, best: dict, meta: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.schedule.state_dict(),
        "epoch": epoch,
        "rng": rng_state(s),
        "lookahead": s.lookahead.state_dict() if s.lookahead is not None else None,
        "config": s.cfg.to_dict(),
        "best_acc": best["acc"],
        "best_epoch": best["epoch"],
        "classes": list(s.data.classes),
        "mean": s.mean,
        "std": s.std,
        "input": list(s.analysis.spec.input),
        "spec_name": s.analysis.spec.name,
        **meta,
    }


# --- the epoch loop ------------------------------------------------------------------------------

def precise_bn(s: Session, ctx) -> None:
    """Recompute the BN statistics on cfg.precise_bn training images: each rank on its share of the
    batches, then combined, so every rank ends with what one process would compute."""
    batches = [0]

    def counted(it):
        for x in it:
            batches[0] += 1
            yield x

    recalibrate_bn(s.model, counted(s.train_loader.calibration_batches(s.cfg.precise_bn, s.dist.shard())), ctx)
    merge_bn_stats(s.model, batches[0], s.dist)


def nonfinite_tensors(s: Session) -> list[str]:
    """The model's floating-point tensors (weights, BN statistics) holding NaN or inf, named by the spec's
    layer path where the built model has one (`layers[0].seq[0].conv (BatchNorm2d.weight)`)."""
    bad = [k for k, v in s.model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return [_layer_name(s.model, k) for k in bad]


def _layer_name(model, key: str) -> str:
    """A state_dict key as the spec's row path: the deepest row whose module holds the tensor."""
    paths = getattr(model, "paths", None)
    if not paths:
        return key
    owners = {id(m): p for p, m in paths.items()}
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        try:
            module = model.get_submodule(".".join(parts[:n]))
        except AttributeError:
            continue
        if id(module) in owners:
            holder = module.get_submodule(".".join(parts[n:-1])) if len(parts) > n + 1 else module
            return f"{owners[id(module)]} ({type(holder).__name__}.{parts[-1]})"
    return key


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _batches(n: int) -> str:
    return "batch is" if n == 1 else f"{n} batches are"


def _kept(saved: str | None, run_dir: Path) -> str:
    return (f"last.pt still holds {saved}, the last good checkpoint" if saved
            else "no checkpoint had been written yet, so there is nothing to resume")


def fit(s: Session, writer: RunWriter, console: Console, start_epoch: int, best: dict, meta: dict,
        stop_after: int | None = None, stop: StopRequest | None = None, partial: dict | None = None,
        saved: str | None = None) -> dict:
    """Train epochs start_epoch+1 .. cfg.epochs; returns the summary (also written to summary.json).

    `partial` continues epoch start_epoch+1 from a mid-epoch checkpoint; `saved` says what last.pt holds
    (None: nothing yet). Stops: a non-finite loss or weights raise Diverged (exit 1; nothing non-finite is
    saved); a failed write raises a ConvcliError (exit 2; the last complete checkpoint stays); a stop asked
    by `stop` (Ctrl-C, SIGTERM) saves a resumable last.pt after the current step (mid-epoch: the epoch's
    data-generator state at its start and the step reached, so the resumed run replays the epoch's batches
    up to it and continues exactly), prints how to continue and raises KeyboardInterrupt."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cfg, device = s.cfg, s.device
    stop = stop or StopRequest()  # not entered: no signal handlers, never requested
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    limit = loss_limit(int(s.analysis.output_shape[0]))
    ctx = autocast(device, cfg.amp)
    wall0 = time.perf_counter()
    last = {}
    reason = None
    epoch = start_epoch
    steps = len(s.train_loader)
    pending: BaseException | None = None
    interrupted = None

    def should_stop() -> bool:  # agreed by all ranks: a signal may reach only some of them
        fault_point("step", s.schedule.step)
        return s.dist.any(stop.requested)

    def check_weights(where: str) -> None:
        bad = nonfinite_tensors(s)
        if s.dist.any(bool(bad)):
            raise Diverged(f"training diverged at {where}: "
                           + (f"{bad[0]} holds NaN or inf" if bad else "another rank's weights hold NaN or inf")
                           + (f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else "")
                           + f". Nothing non-finite was saved; {_kept(saved, writer.dir)}. Try a lower --lr "
                           f"(this run: {cfg.lr:g}).")

    try:
        stop.armed = True
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            timer = Timer(device)
            data_state = s.generator.get_state()  # the epoch's start: a mid-epoch checkpoint replays from here
            start = partial if partial and int(partial["epoch"]) == epoch else None
            if start and not s.dist.main:  # the saved sums are the whole run's: rank 0 carries them on
                start = {**start, "loss_sum": torch.zeros(()), "correct": torch.zeros((), dtype=torch.int64),
                         "seen": 0}
            with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=console,
                          transient=True, disable=not console.is_terminal) as progress:
                task = progress.add_task("train", total=len(s.train_loader), stats="",
                                         epoch=f"{epoch}/{cfg.epochs}")

                def show(step, st, task=task, progress=progress):
                    progress.update(task, completed=step, stats=f"loss {st['loss']:.3f} acc {100 * st['acc']:.1f}% "
                                    f"lr {st['lr']:.4g} {st['img_s']:,.0f} img/s")

                tr = train_epoch(s.step_model, s.train_loader, s.optimizer, s.schedule, loss_fn, ctx, timer, show,
                                 lookahead=s.lookahead, base_model=s.model, should_stop=should_stop, start=start,
                                 dist=s.dist, time_first_step=cfg.compile and epoch == start_epoch + 1,
                                 limit=limit)
            compiling = tr["first_step_seconds"]  # torch.compile compiles in the first step: not training time
            if compiling is not None:
                timer.seconds = max(timer.seconds - compiling, 0.0)
                meta["compile_seconds"] = meta.get("compile_seconds", 0.0) + compiling
            seconds = timer.seconds + (float(start["seconds"]) if start else 0.0)
            meta["train_seconds"] = meta.get("train_seconds", 0.0) + timer.seconds
            if tr["stopped_at"]:  # asked to stop mid-epoch: save where it stands
                step = int(tr["stopped_at"])
                check_weights(f"epoch {epoch}, step {step} of {steps}")
                elapsed = meta.get("total_seconds", 0.0) + time.perf_counter() - wall0
                state = checkpoint_state(s, epoch - 1, best, {**meta, "total_seconds": elapsed})
                state["rng"]["data"] = data_state
                state["partial"] = {"epoch": epoch, "step": step, "loss_sum": tr["loss_sum"],
                                    "correct": tr["correct"], "seen": tr["images"], "seconds": seconds}
                writer.checkpoint("last.pt", state)
                saved = f"epoch {epoch} up to step {step}"
                reason = f"interrupted at epoch {epoch}, step {step} of {steps}"
                interrupted = (f"{reason}: saved last.pt there; `convcli train --resume {writer.dir}` continues "
                               f"from step {step + 1} (the epoch's first {_batches(step)} drawn again and skipped)")
                break
            bn_timer, eval_timer = Timer(device), Timer(device)
            if cfg.precise_bn:
                with bn_timer:
                    precise_bn(s, ctx)
            else:  # each rank's moving averages saw its own half-batches: evaluate (and save) their mean
                merge_bn_stats(s.model, 1, s.dist, count=False)
            with eval_timer:
                te = eval_metrics(*predict(s.eval_model, s.test_loader, ctx, tta=cfg.tta,
                                           translate=cfg.tta_translate), dist=s.dist)
            row = {"epoch": epoch, "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
                   "test_loss": te["loss"], "test_acc": te["acc"], "lr": tr["lr"], "seconds": round(seconds, 3)}
            check_weights(f"the end of epoch {epoch} (step {steps} of {steps})")
            improved = te["acc"] > best["acc"]
            if improved:
                best.update(acc=te["acc"], epoch=epoch)
            writer.log_epoch(row)
            last = row  # recorded: the summary counts it even if printing the line fails
            elapsed = meta.get("total_seconds", 0.0) + time.perf_counter() - wall0
            state = checkpoint_state(s, epoch, best, {**meta, "total_seconds": elapsed})
            writer.checkpoint("last.pt", state)
            saved = f"epoch {epoch}"
            if improved:
                writer.checkpoint("best.pt", state)
            fault_point("epoch", epoch)
            console.print(
                f"epoch {epoch:>{len(str(cfg.epochs))}}/{cfg.epochs}  "
                f"train loss {tr['train_loss']:.4f} acc {100 * tr['train_acc']:5.2f}%  "
                f"test loss {te['loss']:.4f} acc {100 * te['acc']:5.2f}%  lr {tr['lr']:.4g}  "
                f"{(tr['images'] - (int(partial['seen']) if start else 0)) / max(timer.seconds, 1e-9):,.0f} img/s  "
                f"{timer.seconds:.1f}s  (+ "
                + " ".join([*([f"compile {compiling:.1f}s"] if compiling is not None else []),
                            *([f"precise BN {bn_timer.seconds:.1f}s"] if cfg.precise_bn else []),
                            f"eval{' TTA' if cfg.tta else ''} {eval_timer.seconds:.1f}s"]) + ")"
                + ("  [bold green]best[/]" if improved else ""), highlight=False)
            if cfg.target_acc is not None and te["acc"] >= cfg.target_acc:
                reason = f"reached the target accuracy {100 * cfg.target_acc:.2f}%"
                break
            if stop_after is not None and epoch >= stop_after and epoch < cfg.epochs:
                reason = f"stopped after epoch {epoch} (--stop-after)"
                break
            if s.dist.any(stop.requested) and epoch < cfg.epochs:
                reason = f"interrupted after epoch {epoch}"
                interrupted = f"{reason}: last.pt holds it; continue with: convcli train --resume {writer.dir}"
                break
        else:
            reason = f"completed {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    except NonFiniteLoss as exc:
        reason = f"diverged at epoch {epoch}, step {exc.step} of {steps}"
        became = (f"the training loss reached {exc.value:.4g}, over 100x both chance level ({limit / 100:.2f}) "
                  "and the epoch's first step's"
                  if math.isfinite(exc.value) else f"the training loss became {exc.value}")
        pending = Diverged(
            f"training diverged at epoch {epoch}, step {exc.step} of {steps} (global step "
            f"{(epoch - 1) * steps + exc.step}): {became} (lr {exc.lr:.4g}). The run "
            f"stopped; nothing from epoch {epoch} was saved"
            f"{' and nothing non-finite ever is' if not math.isfinite(exc.value) else ''}; "
            f"{_kept(saved, writer.dir)}. Try a lower --lr (this run: {cfg.lr:g}; e.g. {lower_lr(cfg):g}).")
    except Diverged as exc:
        reason = f"diverged in epoch {epoch}"
        pending = exc
    except WriteError as exc:
        reason = f"stopped in epoch {epoch}: cannot write {exc.path.name}"
        pending = ConvcliError(
            f"{exc} (while saving epoch {epoch}). The run stopped; {_kept(saved, writer.dir)}"
            + (f": free some space (or fix the directory), then continue with convcli train --resume {writer.dir}"
               if saved else "; free some space (or fix the directory) and start it again"))
    except KeyboardInterrupt as exc:  # a second Ctrl-C, or no handler could be installed
        reason = "interrupted"
        pending = exc
        console.print("interrupted, quitting without saving; "
                      + (f"last.pt holds {saved}: continue with: convcli train --resume {writer.dir}" if saved
                         else "no checkpoint had been written, so there is nothing to resume"), highlight=False)
    except BaseException as exc:
        reason = f"failed: {type(exc).__name__}"
        pending = exc
    stop.finishing = True  # a signal now waits for the summary and curves (a second or two), then quits
    meta["total_seconds"] = meta.get("total_seconds", 0.0) + time.perf_counter() - wall0
    summary = make_summary(s, writer, best, meta, epochs_done=last["epoch"] if last else start_epoch,
                           last=last, reason=reason)
    try:
        writer.summary(summary)
        if writer.read_metrics():
            writer.curves(s.analysis.name)
    except WriteError as exc:
        if pending is None:
            pending = ConvcliError(f"{exc}; {_kept(saved, writer.dir)}")
    stop.finishing = stop.armed = False
    if pending is not None:
        raise pending
    if not interrupted and stop.late and not summary["finished"]:  # Ctrl-C while the summary was written
        interrupted = ("interrupted: " + (f"last.pt holds {saved}; continue with: convcli train --resume "
                                          f"{writer.dir}" if saved else "no checkpoint had been written"))
    if interrupted:
        console.print(interrupted, highlight=False)
        raise KeyboardInterrupt
    return summary


def is_finished(cfg: TrainConfig, epochs_done: int, best_acc: float) -> bool:
    return epochs_done >= cfg.epochs or (cfg.target_acc is not None and best_acc >= cfg.target_acc)


def make_summary(s: Session, writer: RunWriter, best: dict, meta: dict, epochs_done: int, last: dict,
                 reason: str | None) -> dict:
    rows = writer.read_metrics()
    final = rows[-1] if rows else {}
    return {
        "spec": meta.get("spec_file"),
        "spec_path": meta.get("spec_path"),  # absolute: `inspect --runs` finds the run from anywhere
        "name": s.analysis.spec.name,
        "run_dir": str(writer.dir),
        "best_acc": best["acc"] if best["epoch"] else None,
        "best_epoch": best["epoch"] or None,
        "final_test_acc": float(final["test_acc"]) if final else None,
        "final_test_loss": float(final["test_loss"]) if final else None,
        "epochs_done": epochs_done,
        "epochs": s.cfg.epochs,
        "finished": is_finished(s.cfg, epochs_done, best["acc"]),
        "stop_reason": reason,
        "params": s.params,
        "train_seconds": round(meta.get("train_seconds", 0.0), 3),
        "total_seconds": round(meta.get("total_seconds", 0.0), 3),
        "compile_seconds": round(meta.get("compile_seconds", 0.0), 3),  # torch.compile's, not in train_seconds
        "command_seconds": round(time.perf_counter() - convcli.STARTED, 3),  # this invocation, from its start
        "data_seconds": round(s.data_seconds, 3),  # until the data was ready on the device (cached or decoded)
        "device": describe(s.device),
        "amp": amp_active(s.device, s.cfg.amp),
        "compile": s.cfg.compile,
        "data": s.data.source,
        "data_path": meta.get("data_path"),  # absolute: where it was read
        "n_train": len(s.train_loader.labels),
        "n_test": s.n_test,
        "data_n_test": len(s.data.test_y),  # the whole test split (n_test < this: a --test-subset run)
        "classes": list(s.data.classes),
        "seed": s.cfg.seed,
        "torch": str(torch.__version__),
        "test_subset": s.cfg.test_subset,
        **run_record(s.analysis),  # fingerprint + per-layer facts: `eval`, `inspect --run` match the network
    }


# --- entry points --------------------------------------------------------------------------------

def lower_lr(cfg: TrainConfig) -> float:
    """What to try after a divergence: a tenth, or the optimizer's default when the LR is far above it
    (a tenth of 1e6 diverges too)."""
    default = DEFAULT_LR.get(cfg.optimizer, 0.1)
    return default if cfg.lr > 10 * default else cfg.lr / 10


QUICK_TRY_STEPS = 30  # fewer optimizer steps in a whole run than this cannot learn much: say so


def quick_try_warning(cfg: TrainConfig, steps_per_epoch: int, n_train: int, n_classes: int = 0) -> str | None:
    """A quick try that cannot learn anything (`--subset 500` with batch 512 is one step an epoch) gets a
    warning with the fix; so does a subset with fewer images than classes."""
    if 0 < n_train < n_classes:
        return (f"warning: {n_train:,} training images for {n_classes} classes: some classes have none; "
                f"give --subset {10 * n_classes} or more")
    total = steps_per_epoch * cfg.epochs
    if total >= QUICK_TRY_STEPS:
        if cfg.batch_size > n_train > 0:  # the header says "batch N": say what a step really is
            return (f"note: batch {cfg.batch_size:,} is more than the {n_train:,} training images: each epoch is one "
                    f"step of {n_train:,}")
        return None
    batch = max(8, min(cfg.batch_size, 2 ** max(3, (n_train // 10).bit_length() - 1)))  # >= 10 steps, a power of 2
    # a smaller batch only where it gives more steps (5 images: batch 8 is still one step)
    smaller = f"--batch-size {batch}, " if batch < cfg.batch_size and n_train // batch > steps_per_epoch else ""
    return (f"warning: only {total} optimizer step{'s' if total != 1 else ''} in all ({n_train:,} images, batch "
            f"{cfg.batch_size}, {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}): too few to learn; try "
            f"{smaller}a larger --subset or more --epochs")


def _print_start(console: Console, s: Session, run_dir: Path, resumed_from: int | None = None) -> None:
    cfg = s.cfg
    warning = quick_try_warning(cfg, len(s.train_loader), len(s.train_loader.labels), len(s.data.classes))
    if warning:
        console.print(warning, style="yellow", highlight=False)
    console.print(f"spec: {s.spec_file} ({s.analysis.spec.name}, {s.params:,} params)", highlight=False)
    console.print(f"run: {run_dir}" + (f" (resuming after epoch {resumed_from})" if resumed_from else ""),
                  highlight=False)
    console.print(f"data: {s.data.source}: {len(s.train_loader.labels):,} train / {s.n_test:,} "
                  f"test images, {_plural(len(s.data.classes), 'class', 'classes')} (ready in {s.data_seconds:.1f}s"
                  f"{', from the cache' if s.data.cached else ', decoded and cached'}); device {describe(s.device)}"
                  f"{', bf16 autocast' if amp_active(s.device, cfg.amp) else ''}"
                  f"{', channels_last' if use_channels_last(s.device, cfg.channels_last) else ''}"
                  f"; {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
                  f"{', compiled' if cfg.compile else ''}", highlight=False)
    if s.dist.active:
        console.print(f"distributed: {s.dist.world} processes ({s.dist.backend}), "
                      f"{s.train_loader.local_batch} images per process per step", highlight=False)
    epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    console.print(f"{cfg.optimizer} lr {cfg.lr:g} wd {cfg.weight_decay:g} {cfg.schedule}, batch {cfg.batch_size}, "
                  f"{epochs} ({len(s.train_loader)} step{'s' if len(s.train_loader) != 1 else ''}"
                  f"{' each' if cfg.epochs != 1 else ''}), label smoothing {cfg.label_smoothing:g}, "
                  f"seed {cfg.seed}", highlight=False)
    aug = [f"translate {cfg.translate}" if cfg.translate else "",
           ("alternating flip" if cfg.alt_flip else "random flip") if cfg.flip else "",
           f"cutout {cfg.cutout}" if cfg.cutout else ""]
    extras = [", ".join(a for a in aug if a) or "no augmentation",
              ("frozen whitening first conv" if cfg.freeze_whiten else "whitened first conv") if cfg.whiten else "",
              "Dirac init" if cfg.dirac else "", f"logits x{cfg.logit_scale:g}" if cfg.logit_scale != 1 else "",
              f"momentum {cfg.momentum:g}" if cfg.optimizer == "sgd" and cfg.momentum != 0.9 else "",
              "weight decay on every parameter" if cfg.wd_all and cfg.weight_decay else "",
              "lookahead" if cfg.lookahead else "",
              "BN scales frozen" if not cfg.bn_scale else "",
              f"BN bias LR x{cfg.bn_bias_lr:g}" if cfg.bn_bias_lr != 1 else "",
              f"BN momentum {cfg.bn_momentum:g}" if cfg.bn_momentum is not None else "",
              f"precise BN on {min(cfg.precise_bn, len(s.train_loader.labels)):,} images" if cfg.precise_bn else "",
              ("flip + translate TTA (6 views)" if cfg.tta_translate else "flip TTA") if cfg.tta else ""]
    console.print("; ".join(e for e in extras if e), highlight=False)


def _print_end(console: Console, summary: dict, spec_file: str, run_dir: Path, resumed: bool = False) -> None:
    best = (f"best test accuracy {100 * summary['best_acc']:.2f}% at epoch {summary['best_epoch']}"
            if summary["best_acc"] is not None else "no epoch completed")
    # a resumed run's training times add up all its starts; the command's own time is this start's
    in_all = " over all the run's starts" if resumed else ""
    console.print(f"{summary['stop_reason'] or 'stopped'}: {best}; {summary['train_seconds']:.1f}s training "
                  f"({summary['total_seconds']:.1f}s from the first step with evaluations{in_all}; "
                  f"{summary['command_seconds']:.1f}s since {'this' if resumed else 'the'} command started)",
                  highlight=False)
    console.print(f"spec: {spec_file}", highlight=False)
    console.print(f"run: {run_dir}", highlight=False)


class RunConsole(Console):
    """The training console. When stdout closes (`convcli train ... | head`) the run goes on without it, its
    record being the run directory; rich's default would exit in the middle of an epoch's bookkeeping."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        try:
            sys.stderr.write("note: standard output was closed; training goes on (each epoch is in the run "
                             "directory's metrics.csv)\n")
            sys.stderr.flush()
        except OSError:  # `2>&1 | head`: stderr was the same pipe
            os.dup2(devnull, sys.stderr.fileno())


def train(spec: str | None, options: dict, recipe: str | None = None, out: str | None = None,
          resume: str | None = None, stop_after: int | None = None, console: Console | None = None,
          input_text: str | None = None) -> dict:
    """The `convcli train` command. `options` holds the command-line values (None: not given). SPEC may be a
    PyTorch model (`model.py:Net` with `input_text` "3,32,32"): it is traced for the analysis and trained
    as it is."""
    from convcli.train import distributed

    console = console or RunConsole(highlight=False, soft_wrap=True, emoji=False)
    dist = distributed.from_env()
    nproc = options.get("nproc")
    if resume and nproc is None and not distributed.in_launched_process():
        nproc, world = _saved_processes(Path(resume))
        if world > max(nproc or 1, 1):
            console.print(f"note: {resume} was trained by {world} processes started by torchrun; this resumes it as "
                          f"{nproc or 1} (same data order and augmentation; BN then sees whole batches). To "
                          f"continue on {world}, resume under torchrun: torchrun --nproc-per-node ... -m convcli "
                          f"train --resume {resume}", highlight=False)
    if nproc and nproc > 1 and not distributed.in_launched_process():
        return _launch(nproc, spec, options, recipe, out, resume, stop_after, input_text, console)
    if not dist.main:  # only rank 0 prints; the others' errors are rank 0's too (it reports them)
        console = Console(quiet=True)
    stop_watch = None
    try:
        if dist.active:
            distributed.check_process_count(options.get("nproc"))
            distributed.join(dist)
            stop_watch = distributed.watch_launcher()
        if resume:
            return _resume(resume, spec, options, recipe, out, stop_after, console, dist)
        return _train_fresh(spec, options, recipe, out, stop_after, console, input_text, dist)
    except ConvcliError as exc:
        if dist.main:
            raise
        raise SystemExit(exc.exit_code) from None
    finally:
        if stop_watch:
            stop_watch()
        distributed.shutdown(dist)


def _saved_processes(run_dir: Path) -> tuple[int | None, int]:
    """(--nproc, processes in all) a run was started with (its args.yaml), so that `--resume` continues it
    the same way: `--nproc` is relaunched; a torchrun run (nproc 1, world_size N) gets a note."""
    import yaml

    try:
        args = yaml.safe_load((run_dir / "args.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None, 1
    if not isinstance(args, dict):
        return None, 1
    nproc, world = args.get("nproc"), args.get("world_size")
    nproc = nproc if isinstance(nproc, int) and nproc > 0 else None
    return nproc, world if isinstance(world, int) and world > 0 else (nproc or 1)


def worker_argv(spec, options: dict, recipe, out, resume, stop_after, input_text) -> list[str]:
    """The `convcli train` command line each launched process runs: the same command, spelled out from the
    parsed values (so it does not depend on how this one was invoked)."""
    from convcli.train.config import OPTIONS

    argv = ["train"] + ([str(spec)] if spec else [])
    for flag, value in (("--input", input_text), ("--recipe", recipe), ("--out", out), ("--resume", resume),
                        ("--stop-after", stop_after)):
        if value is not None:
            argv += [flag, str(value)]
    for o in OPTIONS:
        value = options.get(o.name)
        if value is None:
            continue
        argv += [o.flag if value else "--no-" + o.flag[2:]] if o.kind is bool else [o.flag, str(value)]
    return argv


def _launch(nproc: int, spec, options: dict, recipe, out, resume, stop_after, input_text, console) -> dict:
    """`--nproc N`: check what can be checked once, here, then run N ranks of the same command."""
    from convcli.train import distributed

    if resume:  # refused, or nothing to train: said before any process starts
        check_resume_request(resume, options, recipe, out)
        note = finished_note(Path(resume), options)
        if note:
            console.print(note, highlight=False)
            return {"finished": True, "trained": False, "run_dir": resume}
    else:  # a bad spec or option is reported once, not by every rank
        _, _, cfg = _spec_and_config(spec, options, recipe, input_text)
        distributed.check_batch(cfg.batch_size, distributed.Dist(world=nproc))
        device = resolve_device(cfg.device)
        distributed.check_devices(device, nproc)
        cores = os.cpu_count() or 1
        if device.type == "cpu" and nproc > cores:
            console.print(f"warning: --nproc {nproc} on {cores} CPU core{'s' if cores != 1 else ''}: the processes "
                          f"share them and each step waits for the slowest; --nproc {cores} or fewer is faster",
                          highlight=False)
    # The run directory's problems (holds a run, locked by another process) are reported here, once.
    if resume or out:
        claim_run_dir(resume or out, resume=bool(resume)).release()
    console.print(f"launching {nproc} processes (torch.distributed elastic launcher, one node)", highlight=False)
    code = distributed.launch(nproc, worker_argv(spec, options, recipe, out, resume, stop_after, input_text))
    if code:
        raise SystemExit(code)
    return {"launched": nproc}


def _spec_and_config(spec, options: dict, recipe, input_text, notes: list[str] | None = None):
    """(spec file, analysis, config) of a new run, checked for training (`notes`: see build_config)."""
    from convcli.sources import is_model, load_analysis

    spec_file = spec if spec and is_model(spec) else resolve_spec_path(spec)
    analysis = load_analysis(spec_file, input_text)
    shape = tuple(analysis.spec.input)
    cfg = build_config(options, analysis.spec.train, analysis.spec.file, recipe, notes,
                       image_side=min(shape[1:]) if len(shape) == 3 else None)
    check_spec_for_training(analysis)
    return spec_file, analysis, cfg


def _train_fresh(spec, options: dict, recipe, out, stop_after, console: Console, input_text, dist: Dist) -> dict:
    from convcli.train import distributed

    notes: list[str] = []
    spec_file, analysis, cfg = _spec_and_config(spec, options, recipe, input_text, notes)
    for note in notes:
        console.print(note, highlight=False)
    claimed = None
    started = False
    try:
        with StopRequest(quiet=not dist.main) as stop:
            # Rank 0 creates and locks the run directory now: a second run into it is refused at once.
            claimed = distributed.on_main(dist, lambda: _claim(out, console), share=lambda c: None)
            device = distributed.rank_device(resolve_device(cfg.device), dist)  # a bad --device fails at once
            dist = distributed.init(dist, device)
            configure_backend(device, cfg.cudnn_benchmark)
            check_resources(analysis, cfg, device, claimed.path if claimed else None, fresh=True, dist=dist)
            out_dir = distributed.on_main(dist, lambda: claimed.path)  # every rank learns the run directory
            fault_point("data")
            data = load_data(cfg.data)
            check_spec_for_training(analysis, data)
            s = make_session(cfg, spec_file, analysis, device, data, dist=dist)
            started = True
            return _train_new(s, cfg, spec_file, analysis, data, device, Path(out_dir), console, stop_after, stop)
    except KeyboardInterrupt:
        if not started:
            console.print("interrupted before training started: nothing was saved, so there is nothing to resume; "
                          "run the same command again", highlight=False)
        raise
    finally:
        if claimed:
            claimed.release()


def _claim(out: str | None, console: Console, resume: bool = False):
    claimed = claim_run_dir(out, resume=resume)
    if claimed.note:
        console.print(claimed.note, highlight=False)
    return claimed


def check_resources(analysis, cfg: TrainConfig, device: torch.device, run_dir: Path | None, fresh: bool,
                    dist: Dist = SINGLE) -> None:
    """Before any data is loaded: the network must fit the device's memory, and the run directory must be
    writable with room for the checkpoints (exit 2 otherwise, with the estimate and the limit). In a
    distributed run rank 0 checks first and its verdict reaches every rank; each rank's memory holds its
    share of the batch, and only rank 0 writes."""
    from convcli.train.distributed import on_main

    batch = min(cfg.batch_size, cfg.subset) if cfg.subset else cfg.batch_size

    def check(run_dir):
        check_memory(analysis, device, max(1, batch // dist.world), cfg.optimizer, cfg.lookahead,
                     amp_active(device, cfg.amp), EVAL_BATCH)
        if run_dir is None:
            return
        one = checkpoint_bytes(analysis.params, cfg.optimizer, cfg.lookahead)
        if fresh:
            check_output(run_dir, 3 * one + WRITE_MARGIN, f"last.pt and best.pt ({human_bytes(one)} each) and the "
                         "temporary copy written before each rename")
        else:
            check_output(run_dir, one + WRITE_MARGIN, f"the new checkpoint ({human_bytes(one)}) written beside "
                         "the old one before the rename")

    on_main(dist, lambda: check(run_dir))
    if not dist.main:
        check(None)


def _absolute(spec_file) -> str | None:
    """The spec's absolute path (a FILE.py:NAME model keeps its :NAME), or None for a package.module:NAME."""
    text = str(spec_file)
    file, sep, name = text.rpartition(":") if not Path(text).exists() else (text, "", "")
    return str(Path(file).resolve()) + sep + name if file and Path(file).exists() else None


def _train_new(s: Session, cfg: TrainConfig, spec_file: str, analysis, data: ImageData, device: torch.device,
               run_dir: Path, console: Console, stop_after: int | None, stop: StopRequest) -> dict:
    writer = RunWriter(run_dir, enabled=s.dist.main)
    args = {"spec": str(spec_file), **cfg.to_dict(), "data_path": local_path(cfg.data),
            "input": list(analysis.spec.input), "run_dir": str(run_dir), "device_resolved": str(device),
            "world_size": s.dist.world,
            "params": s.params, "n_train": len(s.train_loader.labels), "n_test": len(s.test_loader.labels),
            "classes": list(data.classes), "torch": str(torch.__version__), "python": platform.python_version(),
            "command": user_command()}
    spec_copy = writer.start(spec_file, analysis.spec.text, args)
    meta = {"spec_file": str(spec_file), "spec_path": _absolute(spec_file), "spec_copy": spec_copy,
            **model_ref_meta(analysis), **run_record(analysis),
            "data_n_train": len(data.train_y), "data_n_test": len(data.test_y), "data_path": local_path(cfg.data),
            "data_digest": data.labels_digest(), "train_seconds": 0.0, "total_seconds": 0.0}
    _print_start(console, s, run_dir)
    summary = fit(s, writer, console, 0, {"acc": -1.0, "epoch": 0}, meta, stop_after, stop=stop)
    _print_end(console, summary, spec_file, run_dir)
    return summary


def model_ref_meta(analysis) -> dict:
    """For a PyTorch model: its reference and input, so resume and eval rebuild the same module."""
    from convcli.sources import is_model

    if not is_model(analysis.source):
        return {}
    return {"model_ref": analysis.source, "model_input": list(analysis.input_shape)}


def resume_analysis(ckpt: dict, spec_file: str):
    """The network a run trains, at the input it was trained on (a spec's own, or the --input it was given)."""
    from convcli.sources import load_analysis

    if ckpt.get("model_ref"):
        return load_analysis(ckpt["model_ref"], ",".join(map(str, ckpt["model_input"])))
    return load_analysis(spec_file, ",".join(map(str, ckpt["input"])) if ckpt.get("input") else None)


def data_difference(data: ImageData, ckpt: dict) -> str | None:
    """How `data` differs from the data a checkpoint was trained on (None: the same, as far as recorded)."""
    if list(data.classes) != list(ckpt["classes"]):
        return f"its classes are {', '.join(data.classes)}; the run's were {', '.join(ckpt['classes'])}"
    counts, saved = (len(data.train_y), len(data.test_y)), (ckpt.get("data_n_train"), ckpt.get("data_n_test"))
    if None not in saved and counts != saved:
        return (f"it has {counts[0]:,} training and {counts[1]:,} test images; the run's had {saved[0]:,} and "
                f"{saved[1]:,}")
    if ckpt.get("data_digest") not in (None, data.labels_digest()):
        return "the same classes and image counts, but other labels in another order"
    return None


def check_resume_request(run: str, options: dict, recipe: str | None, out: str | None) -> Path:
    """What `--resume RUN` can be refused for before anything starts (also before `--nproc` launches)."""
    run_dir = Path(run)
    if not (run_dir / "last.pt").is_file():
        if run_dir.is_file() and (run_dir.parent / "last.pt").is_file():
            raise ConvcliError(f"--resume {run}: a file; --resume takes the run directory (did you mean "
                               f"--resume {run_dir.parent}?)")
        if not run_dir.exists():
            raise ConvcliError(f"--resume {run}: no such directory (expected a run directory written by convcli "
                               "train, e.g. runs/NAME)")
        if (run_dir / "args.yaml").is_file():
            raise ConvcliError(f"--resume {run}: no last.pt there: the run saved no checkpoint (it diverged, failed "
                               "or was stopped before its first one), so there is nothing to resume; start it again "
                               f"with the same command and --out {run}")
        raise ConvcliError(f"--resume {run}: no last.pt there (expected a run directory written by convcli train)")
    given = sorted(k for k, v in options.items() if v is not None and k not in RESUME_OPTIONS)
    if given:  # the run's own values, repeated (its command with --resume added), change nothing
        saved = {**LEGACY_DEFAULTS, **load_checkpoint(run_dir / "last.pt").get("config", {})}
        given = [k for k in given if k not in saved or coerce(k, options[k]) != saved[k]]
    if given or recipe or out:
        names = [f"--{k.replace('_', '-')}" for k in given] + (["--recipe"] if recipe else []) + (
            ["--out"] if out else [])
        raise ConvcliError(f"--resume continues the run's saved config; {', '.join(names)} cannot change it "
                           f"(only {', '.join('--' + k.replace('_', '-') for k in RESUME_OPTIONS)} can)")
    return run_dir


def finished_note(run_dir: Path, options: dict, ckpt: dict | None = None) -> str | None:
    """"already finished ..." when resuming the run with these options has nothing to train, else None."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(run_dir / "last.pt")
    cfg = resume_config(ckpt, options)
    epochs_done, best = int(ckpt["epoch"]), {"acc": float(ckpt["best_acc"]), "epoch": int(ckpt["best_epoch"])}
    if not is_finished(cfg, epochs_done, best["acc"]):
        return None
    reached = cfg.target_acc is not None and best["acc"] >= cfg.target_acc
    how = (f"it reached its target accuracy ({100 * cfg.target_acc:.2f}%): pass a higher --target-acc to "
           f"train on" + (f", and --epochs N (more than {epochs_done})" if epochs_done >= cfg.epochs else "")
           if reached else f"pass --epochs N (more than {epochs_done}) to extend it")
    return (f"run {run_dir} is already finished ({epochs_done}/{cfg.epochs} epochs, best test accuracy "
            f"{100 * best['acc']:.2f}% at epoch {best['epoch']}); nothing to train: {how}.")


def resume_config(ckpt: dict, options: dict) -> TrainConfig:
    """The run's saved config with the options --resume may change."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConvcliError("last.pt: not a resumable convcli training checkpoint")
    saved = {**LEGACY_DEFAULTS, **{k: v for k, v in ckpt["config"].items() if k in FIELDS}}
    epochs = options.get("epochs")
    if epochs is not None and coerce("epochs", epochs) < saved["epochs"]:  # its LR schedule spans them all
        raise ConvcliError(f"--epochs {epochs}: the run was started for {saved['epochs']} epochs, and --resume can "
                           f"only extend it (--epochs more than {saved['epochs']}) or continue it (leave --epochs out)")
    for k in RESUME_OPTIONS:
        if options.get(k) is not None:
            saved[k] = coerce(k, options[k])
    return TrainConfig(**saved)


def _resume(run: str, spec: str | None, options: dict, recipe: str | None, out: str | None,
            stop_after: int | None, console: Console, dist: Dist = SINGLE) -> dict:
    from convcli.train import distributed

    run_dir = check_resume_request(run, options, recipe, out)
    # Rank 0 locks the run: no other process may write it meanwhile.
    claimed = distributed.on_main(dist, lambda: _claim(str(run_dir), console, resume=True), share=lambda c: None)
    started = False

    def begin():
        nonlocal started
        started = True

    try:
        with StopRequest(quiet=not dist.main) as stop:
            return _resume_locked(run_dir, spec, options, stop_after, console, stop, begin, dist)
    except KeyboardInterrupt:
        if not started:
            console.print("interrupted before training resumed: the run is unchanged; run the same command again",
                          highlight=False)
        raise
    finally:
        if claimed:
            claimed.release()


def _resume_locked(run_dir: Path, spec: str | None, options: dict, stop_after: int | None, console: Console,
                   stop: StopRequest, begin, dist: Dist = SINGLE) -> dict:
    from convcli.train import distributed

    run = str(run_dir)
    ckpt = load_checkpoint(run_dir / "last.pt")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConvcliError(f"{run_dir / 'last.pt'}: not a resumable convcli training checkpoint")
    cfg = resume_config(ckpt, options)
    epochs_done, best = int(ckpt["epoch"]), {"acc": float(ckpt["best_acc"]), "epoch": int(ckpt["best_epoch"])}
    spec_file = ckpt["model_ref"] if ckpt.get("model_ref") else str(run_dir / ckpt["spec_copy"])
    if spec:
        console.print(f"note: resuming uses the run's own spec copy {spec_file}; ignoring {spec}", highlight=False)
    note = finished_note(run_dir, options, ckpt)
    if note:
        console.print(note, highlight=False)
        return {"finished": True, "trained": False, "epochs_done": epochs_done, "run_dir": str(run_dir)}

    analysis = resume_analysis(ckpt, spec_file)
    from convcli.train.evaluation import check_fingerprint

    check_fingerprint(analysis, ckpt, spec_file, run_dir / "last.pt")
    device = distributed.rank_device(resolve_device(cfg.device), dist)
    dist = distributed.init(dist, device)
    configure_backend(device, cfg.cudnn_benchmark)
    check_resources(analysis, cfg, device, run_dir, fresh=False, dist=dist)
    fault_point("data")
    if options.get("data") is None:
        cfg.data = saved_source(ckpt["config"], ckpt)
        if cfg.data != "cifar10" and not Path(cfg.data).exists():
            given, where = ckpt["config"].get("data"), ckpt.get("data_path")
            raise ConvcliError(f"--resume {run}: the run's data {given} is no longer there"
                               + (f" ({where})" if where and where != given else "")
                               + "; pass --data PATH where it is now")
    data = load_data(cfg.data)
    check_spec_for_training(analysis, data)
    differs = data_difference(data, ckpt)
    if differs:
        raise ConvcliError(f"--resume {run}: the data {cfg.data} is not the data this run was trained on: {differs}")
    s = make_session(cfg, spec_file, analysis, device, data, ckpt["mean"], ckpt["std"], dist=dist)
    s.model.load_state_dict(ckpt["model"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.schedule.step = int(ckpt["scheduler"]["step"])  # total_steps is rebuilt for cfg.epochs (see module doc)
    s.train_loader.epoch = epochs_done
    if s.lookahead is not None and ckpt.get("lookahead"):
        s.lookahead.load_state_dict(ckpt["lookahead"])
    if not restore_rng(s, ckpt["rng"]):
        console.print(f"note: the run was trained on {ckpt['rng'].get('device_type')} and continues on "
                      f"{s.device.type}: the data order and augmentation start a new random stream", highlight=False)
    writer = RunWriter(run_dir, enabled=dist.main)
    writer.truncate_metrics(epochs_done)
    meta = {k: ckpt[k] for k in ("spec_file", "spec_path", "spec_copy", "model_ref", "model_input", "data_digest",
                                  "data_n_train",
                                  "data_n_test", "train_seconds", "total_seconds") if k in ckpt}
    meta.update(run_record(analysis), data_path=local_path(cfg.data))
    changed = {k: getattr(cfg, k) for k in RESUME_OPTIONS if getattr(cfg, k) != ckpt["config"].get(k)
               and (k != "data" or options.get("data") is not None)}  # not the same data found where it was
    if changed:  # args.yaml says what the run trains with now (the command line of each start is in the log)
        import yaml

        args = yaml.safe_load((run_dir / "args.yaml").read_text()) if (run_dir / "args.yaml").is_file() else {}
        writer.write_args({**(args if isinstance(args, dict) else {}), **changed,
                           **({"data_path": meta["data_path"]} if "data" in changed else {})})
    if cfg.epochs != ckpt["config"]["epochs"]:
        change = "extending" if cfg.epochs > ckpt["config"]["epochs"] else "shortening"
        console.print(f"{change} the run from {ckpt['config']['epochs']} to {cfg.epochs} epochs; the LR schedule "
                      f"is rebuilt for {cfg.epochs} epochs and continues at step {s.schedule.step}", highlight=False)
    partial = ckpt.get("partial")
    _print_start(console, s, run_dir, resumed_from=epochs_done)
    if partial:
        console.print(f"continuing epoch {partial['epoch']} after step {partial['step']} (where it was interrupted): "
                      f"its first {_batches(int(partial['step']))} drawn again and skipped", highlight=False)
    saved = f"epoch {partial['epoch']} up to step {partial['step']}" if partial else f"epoch {epochs_done}"
    begin()
    summary = fit(s, writer, console, epochs_done, best, meta, stop_after, stop=stop, partial=partial, saved=saved)
    _print_end(console, summary, spec_file, run_dir, resumed=True)
    return summary
