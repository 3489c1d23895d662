"""Optimizer, learning-rate schedule, and the train/eval epochs.

The per-step work is `train_step(model, optimizer, schedule, x, y, ...)`, which knows nothing of data
loading or I/O, so a DistributedDataParallel-wrapped model can be passed in unchanged later.

LR schedule: the multiplier of the peak LR is a pure function of (step, total_steps), evaluated before
each optimizer step. Its whole state is the step counter, so a resumed run rebuilds it from the
checkpoint; `--epochs` larger on resume rebuilds it for the new total and continues from the saved step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from convcli.train.device import Timer

WARMUP = {"onecycle": 0.25, "cosine": 0.05, "airbench": 0.23}
START_FACTOR = {"onecycle": 0.1, "cosine": 0.1, "airbench": 0.2}  # where the warm-up starts, x the peak LR
END_FACTOR = {"onecycle": 0.0, "airbench": 0.07}  # where the linear decay ends
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --- optimizer and schedule ----------------------------------------------------------------------

def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, bn_scale: bool = True,
                   bn_bias_lr: float = 1.0, momentum: float = 0.9, wd_all: bool = False) -> torch.optim.Optimizer:
    """Weight decay on weights (conv kernels, linear matrices) only, not on biases and norm parameters, unless
    `wd_all` (airbench decays every parameter). BN tuned for short runs (airbench): `bn_scale=False` freezes
    every BatchNorm scale at its value (1 when fresh), and the BN biases get `bn_bias_lr` times the LR (each
    group keeps its own peak for the schedule) and, with `wd_all`, 1/`bn_bias_lr` of the decay, so that every
    parameter shrinks by the same fraction per step, as airbench's decoupled decay does. Frozen parameters
    (requires_grad False) stay out. `momentum` is SGD's (Nesterov)."""
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.affine]
    if not bn_scale:
        for m in norms:
            m.weight.requires_grad_(False)
    bn_biases = {id(m.bias) for m in norms} if bn_bias_lr != 1.0 else set()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if (p.ndim > 1 or wd_all) and id(p) not in bn_biases]
    no_decay = [p for p in params if p.ndim <= 1 and not wd_all and id(p) not in bn_biases]
    boosted = [p for p in params if id(p) in bn_biases]
    groups = [{"params": decay, "weight_decay": weight_decay, "peak_lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "peak_lr": lr},
              {"params": boosted, "weight_decay": weight_decay / bn_bias_lr if wd_all else 0.0,
               "peak_lr": lr * bn_bias_lr}]
    groups = [g for g in groups if g["params"]]
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    elif name == "adam":
        opt = torch.optim.Adam(groups, lr=lr)
    elif name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr)
    else:  # the config is validated before this point
        raise ValueError(f"unknown optimizer {name!r}")
    return opt


def lr_factor(kind: str, step: int, total: int) -> float:
    """Multiplier of the peak LR at `step` (0-based) of `total` steps."""
    t = step / max(total, 1)
    if kind == "step":  # ×0.1 at 50 % and again at 75 % of training
        return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01
    warm, start = WARMUP[kind], START_FACTOR[kind]
    if t < warm:
        return start + (1 - start) * t / warm
    rest = (t - warm) / (1 - warm)
    if kind in END_FACTOR:  # linear up, then linear down (Page's and airbench's triangles)
        end = END_FACTOR[kind]
        return max(end, 1 - (1 - end) * rest)
    return 0.5 * (1 + math.cos(math.pi * min(rest, 1.0)))  # cosine


class Schedule:
    """Sets each param group's lr to peak_lr × lr_factor(step) before every optimizer step."""

    def __init__(self, kind: str, total_steps: int, step: int = 0):
        self.kind, self.total_steps, self.step = kind, total_steps, step

    def factor(self) -> float:
        return lr_factor(self.kind, self.step, self.total_steps)

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        f = self.factor()
        for g in optimizer.param_groups:
            g["lr"] = g["peak_lr"] * f
        return optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"kind": self.kind, "total_steps": self.total_steps, "step": self.step}


# --- patch-whitening initialisation --------------------------------------------------------------

@torch.no_grad()
def whiten_first_conv(model: nn.Module, batches, eps: float = 5e-4, freeze: bool = False) -> bool:
    """Initialise the first convolution as a patch-whitening filter bank (Page's ResNet-9 series, airbench):
    the top eigenvectors of the covariance of its input patches, scaled by 1/sqrt(eigenvalue + eps), each
    used with both signs (so a following ReLU/GELU keeps both halves). The weights stay trainable unless
    `freeze` (airbench keeps them fixed; a bias still trains). Returns
    False (and changes nothing) when the first conv is grouped or has more than twice as many outputs as
    its patches have dimensions."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.groups != 1:
        return False
    kh, kw = conv.kernel_size
    dim = conv.in_channels * kh * kw
    if conv.out_channels > 2 * dim:
        return False
    gram = torch.zeros(dim, dim, dtype=torch.float64)
    total = torch.zeros(dim, dtype=torch.float64)
    n = 0
    for x in batches:  # accumulate sum(p p^T) and sum(p) over every patch position
        p = F.unfold(x.float(), (kh, kw), dilation=conv.dilation, stride=conv.stride).transpose(1, 2)
        p = p.reshape(-1, dim).double().cpu()
        gram += p.T @ p
        total += p.sum(0)
        n += p.shape[0]
    if n < 2:
        return False
    mean = total / n
    cov = (gram - n * torch.outer(mean, mean)) / (n - 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    half = (conv.out_channels + 1) // 2
    filters = (vectors[:, :half] / (values[:half].clamp_min(0) + eps).sqrt()).T  # half, dim
    weight = torch.cat([filters, -filters])[:conv.out_channels]
    conv.weight.copy_(weight.view_as(conv.weight).to(conv.weight.dtype))
    conv.weight.requires_grad_(not freeze)
    return True


@torch.no_grad()
def dirac_init(model: nn.Module) -> int:
    """airbench's Dirac init: in every convolution with at least as many outputs as inputs, the first
    in_channels filters become the identity (a 1 at the kernel's centre on their own input channel), so each
    block starts close to passing its input through; the other filters keep their random init. In a
    depthwise conv it is the first filter of each channel's group. Other grouped convs are left alone.
    Returns how many convolutions changed."""
    changed = 0
    for m in model.modules():
        if not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or m.out_channels < m.in_channels:
            continue
        if m.groups == 1:
            nn.init.dirac_(m.weight[:m.in_channels])
        elif m.groups == m.in_channels:
            first = m.weight.view(m.groups, -1, *m.weight.shape[1:])[:, 0]  # groups x 1 x *kernel
            first.zero_()
            first[(slice(None), 0, *(k // 2 for k in first.shape[2:]))] = 1
        else:
            continue
        changed += 1
    return changed


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Every BatchNorm's running-statistics momentum, torch's convention: new = (1 - m)·old + m·batch."""
    for m in model.modules():
        if isinstance(m, BATCH_NORMS):
            m.momentum = momentum


def scale_logits(model: nn.Module, scale: float):
    """Multiply the model's output by `scale` (airbench: 1/9), in training and at test alike. A forward
    hook, so the weights and their names are those of the plain model; returns the hook's handle."""
    return model.register_forward_hook(lambda _module, _inputs, out: out * scale)


# --- lookahead ---------------------------------------------------------------------------------------

class Lookahead:
    """Lookahead on the weights (Zhang et al. 2019, as airbench uses it): every `every` steps the slow copy
    moves towards the weights, `slow = decay * slow + (1 - decay) * weights`, and the weights are reset to it.
    decay ramps up as 0.95^5 * (step/total)^3, so it does nothing early and averages strongly late. The last
    step syncs too, so the run ends on the slow copy with every step in it (airbench drops the steps after
    the last multiple of 5). The slow copy starts as the weights at the first sync, not at initialisation:
    identical for long runs (the first decay is ~0), and a run of a few steps does not end near its initial
    weights. Floating-point buffers (BN statistics) are averaged too."""

    EVERY = 5
    DECAY = 0.95 ** 5

    def __init__(self, model: nn.Module):
        self.slow: dict | None = None  # set at the first sync
        # where the model lives: a checkpoint read onto the CPU is placed there once, at load
        self.device = next(iter(model.state_dict().values()), torch.empty(0)).device

    def decay(self, step: int, total: int) -> float:
        return self.DECAY * min(step / max(total, 1), 1.0) ** 3

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        """Call after optimizer step number `step` (1-based) of `total`."""
        if step % self.EVERY and step < total:
            return
        state = model.state_dict()
        if self.slow is None:
            self.slow = {k: v.detach().clone() for k, v in state.items() if v.is_floating_point()}
            return
        decay = self.decay(step, total)
        for k, slow in self.slow.items():
            slow.lerp_(state[k], 1 - decay)
            state[k].copy_(slow)

    def state_dict(self) -> dict:
        return dict(self.slow or {})

    def load_state_dict(self, state: dict) -> None:
        self.slow = {k: v.detach().to(self.device, copy=True) for k, v in state.items()} if state else None


# --- steps and epochs ----------------------------------------------------------------------------

def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule, x: torch.Tensor,
               y: torch.Tensor, loss_fn: Callable, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns (summed loss, correct count) as device tensors, without syncing."""
    schedule.apply(optimizer)
    with autocast:
        logits = model(x)
        loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step += 1
    return loss.detach() * y.shape[0], (logits.detach().argmax(1) == y).sum()


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite (or, with a limit, blew past it) at `step` (1-based, within
    the epoch); `value` is that step's mean loss."""

    def __init__(self, step: int, value: float, lr: float):
        self.step, self.value, self.lr = step, value, lr
        super().__init__(f"the training loss became {value:.4g} at step {step} (lr {lr:.4g})")


def loss_limit(n_classes: int) -> float:
    """A batch's mean cross-entropy past which training has blown up: 100x chance level (ln C, 2.30 for 10
    classes), i.e. the right class scored ~230 logits below the best on average. A diverging run passes it
    long before its loss overflows to inf (--lr 50 on s7: 2.9e7 in epoch 1, with accuracy at chance).
    train_epoch also allows 100x the loss of its own first step: weights that start with large logits
    (--logit-scale 1000: 278 before any step) have not diverged."""
    return 100 * math.log(max(n_classes, 2))


def train_epoch(model, loader, optimizer, schedule: Schedule, loss_fn, autocast, timer: Timer,
                on_progress: Callable[[int, dict], None] | None = None, updates: int = 20,
                lookahead: Lookahead | None = None, base_model: nn.Module | None = None,
                should_stop: Callable[[], bool] | None = None, start: dict | None = None, dist=None,
                time_first_step: bool = False, limit: float | None = None) -> dict:
    """One pass over the training loader. `on_progress(step, stats)` is called about `updates` times
    (each call syncs the device once to read the running loss/accuracy). `lookahead` acts on `base_model`
    (the uncompiled module holding the weights; default `model`).

    A non-finite loss (or a batch's mean loss above `limit`, see loss_limit) raises NonFiniteLoss naming
    the first step it appeared at (each step records it on
    the device; it is read at every progress update and at the end, so at most an update's worth of steps
    run on before the check). `should_stop()` is asked after every step: True ends the epoch there, and
    the result's `stopped_at` is the number of steps done. `start` continues an epoch ended that way, from
    {"step", "loss_sum", "correct", "seen"}, the loader's generator having been restored to the epoch's
    start: the batches already trained on are drawn again (same shuffle, same augmentation) and skipped.

    `dist` (a distributed run's `Dist`): the non-finite check is decided over all ranks, and the returned
    loss, accuracy and image count are those of the global batches (summed over the ranks).

    `time_first_step`: the result's `first_step_seconds` is the first step's time (with torch.compile, the
    compilation happens there: the caller reports it apart from the training time)."""
    model.train()
    device = loader.device
    first = int(start["step"]) if start else 0
    loss_sum = start["loss_sum"].to(device) if start else torch.zeros((), device=device)
    correct = start["correct"].to(device) if start else torch.zeros((), device=device, dtype=torch.int64)
    seen = int(start["seen"]) if start else 0
    bad = torch.zeros((), device=device, dtype=torch.int64)  # the first step with a non-finite loss (0: none)
    bad_value = torch.zeros((), device=device)  # that step's mean loss
    ceiling = None  # the loss past which this epoch has blown up (see loss_limit)
    steps = len(loader)
    every = max(1, steps // updates)
    lr = optimizer.param_groups[0]["lr"]
    stopped = None

    def check():
        first_bad = int(bad.item())
        if dist is not None and dist.active:  # every rank stops together, or none does
            seen_bad = torch.stack([bad, (bad > 0).long()])
            dist.all_sum(seen_bad)
            total, ranks = (int(v) for v in seen_bad.tolist())
            first_bad = first_bad or (total // ranks if ranks else 0)
        if first_bad:
            raise NonFiniteLoss(first_bad, bad_value.item() if int(bad.item()) else float("nan"), lr)

    with timer:
        batches = enumerate(loader, 1)
        for _ in range(first):
            next(batches)
        first_step_seconds = None
        for i, (x, y) in batches:
            t0 = timer.now() if time_first_step and first_step_seconds is None else None
            loss, ok = train_step(model, optimizer, schedule, x, y, loss_fn, autocast)
            if t0 is not None:
                timer.sync()
                first_step_seconds = timer.now() - t0
            mean = loss / y.shape[0]
            if limit is not None and ceiling is None:  # this call's first step: the reference
                ceiling = torch.clamp(100 * mean.detach().float(), min=limit)
            blown = ~torch.isfinite(mean) if limit is None else ~(mean <= ceiling)  # NaN <= x is False too
            new_bad = (bad == 0) & blown
            bad_value = torch.where(new_bad, mean.float(), bad_value)
            bad = torch.where(new_bad, i, bad)
            if lookahead is not None:
                lookahead.after_step(base_model or model, schedule.step, schedule.total_steps)
            lr = optimizer.param_groups[0]["lr"]  # the LR this step used
            loss_sum += loss
            correct += ok
            seen += y.shape[0]
            if on_progress and (i % every == 0 or i == steps):
                check()
                on_progress(i, {"loss": loss_sum.item() / seen, "acc": correct.item() / seen, "lr": lr,
                                "img_s": seen / max(timer.now(), 1e-9)})
            if should_stop is not None and should_stop() and i < steps:
                stopped = i
                break
    check()
    total_loss, total_correct, total_seen = loss_sum.clone(), correct.clone(), seen
    if dist is not None and dist.active:
        count = torch.tensor(seen, device=device, dtype=torch.int64)
        dist.all_sum(total_loss, total_correct, count)
        total_seen = int(count.item())
    n = max(total_seen, 1)
    return {"train_loss": total_loss.item() / n, "train_acc": total_correct.item() / n, "lr": lr,
            "images": total_seen, "stopped_at": stopped, "loss_sum": total_loss.detach().cpu(),
            "correct": total_correct.detach().cpu(), "first_step_seconds": first_step_seconds}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, autocast) -> bool:
    """Precise BN (Wu & Johnson, "Rethinking Batch in BatchNorm", 2021; pycls): replace the BN running
    statistics by their average over `batches` under the current weights. The exponential moving average
    lags the weights, badly so in short runs (a 27-step run of s7 tested at 11% with EMA statistics and
    31% with recomputed ones). BN layers run in train mode, everything else (dropout) in eval mode, so the
    statistics are those of the network as it is evaluated. Returns False when the model has no BN."""
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
    if not norms:
        return False
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        for x in batches:
            with autocast:
                model(x)
    finally:
        for m in norms:
            m.momentum = momenta[m]
        for m, mode in modes.items():
            m.training = mode
    return True


@torch.no_grad()
def merge_bn_stats(model: nn.Module, batches: int, dist, count: bool = True) -> None:
    """After `recalibrate_bn` on each rank's share of the calibration batches (`batches` of them here):
    every rank gets the statistics one process would have computed from all of them. Precise BN's cumulative
    average weighs each batch equally, so the ranks' averages are combined weighted by their batch counts.
    `batches=1, count=False`: the plain average of the ranks' moving averages (no precise BN)."""
    if not dist.active:
        return
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
    if not norms:
        return
    device = norms[0].running_mean.device
    flat = torch.cat([torch.cat([m.running_mean.double(), m.running_var.double()]) for m in norms]) * batches
    total = torch.tensor([float(batches)], dtype=torch.float64, device=device)
    dist.all_sum(flat, total)
    flat /= max(total.item(), 1.0)
    offset = 0
    for m in norms:
        c = m.running_mean.numel()
        m.running_mean.copy_(flat[offset:offset + c])
        m.running_var.copy_(flat[offset + c:offset + 2 * c])
        if count:
            m.num_batches_tracked.fill_(int(total.item()))
        offset += 2 * c


@torch.no_grad()
def predict(model: nn.Module, loader, autocast, tta: bool = False,
            translate: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits as float32, labels) for the whole loader in eval mode. `tta` averages each image with its
    mirror; `translate` > 0 (with tta) adds two diagonal shifts by ±translate px, reflect-padded, each with
    its mirror, weighted 1/4 each against 1/2 for the unshifted pair (airbench's 6-view TTA)."""
    was_training = model.training
    model.eval()
    outs, labels = [], []
    fmt = torch.channels_last if getattr(loader, "channels_last", False) else torch.contiguous_format

    def mirrored(x):
        return (model(x).float() + model(x.flip(-1)).float()) / 2

    try:
        for x, y in loader:
            with autocast:
                if not tta:
                    logits = model(x).float()
                elif not translate:
                    logits = mirrored(x)
                else:
                    t, (h, w) = translate, x.shape[-2:]
                    padded = F.pad(x, (t, t, t, t), mode="reflect")
                    up_left = padded[..., :h, :w].contiguous(memory_format=fmt)
                    down_right = padded[..., 2 * t:2 * t + h, 2 * t:2 * t + w].contiguous(memory_format=fmt)
                    logits = mirrored(x) / 2 + (mirrored(up_left) + mirrored(down_right)) / 4
            outs.append(logits)
            labels.append(y)
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(labels)


def eval_metrics(logits: torch.Tensor, labels: torch.Tensor, dist=None) -> dict:
    """Plain cross-entropy (no label smoothing) and accuracy; with a distributed run's `dist`, over the
    test images of all ranks (each passes the logits of its own part)."""
    sums = torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                        (logits.argmax(1) == labels).sum().double(),
                        torch.tensor(labels.numel(), dtype=torch.float64, device=labels.device)])
    if dist is not None and dist.active:
        dist.all_sum(sums)
    loss, correct, n = sums.tolist()
    return {"loss": loss / max(n, 1), "acc": int(correct) / max(int(n), 1)}
