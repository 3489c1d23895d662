"""The dataset held on the device as uint8, served in batches: normalised per batch and, for training,
shuffled and augmented with batched tensor ops driven by one explicit `torch.Generator` (airbench's
CifarLoader, without a DataLoader). Saving that generator's state makes a resumed run draw the same
shuffles and augmentations as an uninterrupted one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convcli.errors import ConvcliError

EVAL_BATCH = 1000  # fixed so that `train` and `eval` compute test metrics on identical batches


# --- selection and statistics --------------------------------------------------------------------

def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices (ascending) of n images with the classes as balanced as possible, chosen by `seed`."""
    total = labels.numel()
    if n >= total:
        return torch.arange(total)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=g)
    shuffled = labels[perm]
    rank = torch.empty(total, dtype=torch.int64)
    for c in shuffled.unique():
        mask = shuffled == c
        rank[mask] = torch.arange(int(mask.sum()))
    order = torch.argsort(rank * total + torch.arange(total))  # round robin over the classes
    return perm[order[:n]].sort().values


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 [N, C, H, W] images on the 0-1 scale, exactly, from histograms."""
    values = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        m = (hist * values).sum() / hist.sum()
        var = (hist * (values - m) ** 2).sum() / hist.sum()
        mean.append(m.item())
        std.append(max(var.sqrt().item(), 1e-6))
    return mean, std


def match_channels(images: torch.Tensor, channels: int, where: str) -> torch.Tensor:
    """RGB data for a 1-channel spec becomes luminance (ITU-R 601); other mismatches are errors."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ConvcliError(f"{where}: the data has {have} channels but the spec's input has {channels}")


# --- batched augmentation ------------------------------------------------------------------------

def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_translate(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Reflect-pad by `pad` and crop back at a random offset per image, as one gather."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect").permute(0, 2, 3, 1)  # B, H+2p, W+2p, C
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), device=x.device, generator=g)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # B, H
    cols = dx[:, None] + torch.arange(w, device=x.device)  # B, W
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # B, C, H, W


def random_cutout(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Zero (the mean, after normalisation) a size×size square centred anywhere in each image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), device=x.device, generator=g) - size // 2
    cx = torch.randint(0, w, (b,), device=x.device, generator=g) - size // 2
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_y = (ys >= cy[:, None]) & (ys < cy[:, None] + size)  # B, H
    in_x = (xs >= cx[:, None]) & (xs < cx[:, None] + size)  # B, W
    return x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)


# --- the loader ----------------------------------------------------------------------------------

class DeviceLoader:
    """Batches of (normalised float images, labels) from uint8 images already on `device`.

    Training loaders shuffle every epoch and augment (translate, flip, cutout) with `generator`, and drop
    the last partial batch; evaluation loaders keep the order and every image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, batch_size: int, *,
                 train: bool = False, generator: torch.Generator | None = None, translate: int = 0,
                 flip: bool = False, alt_flip: bool = False, cutout: int = 0, channels_last: bool = False):
        self.images, self.labels = images, labels
        self.device = images.device
        c = images.shape[1]
        self.mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor(std, device=self.device, dtype=torch.float32).view(1, c, 1, 1)
        self.batch_size = min(batch_size, len(labels)) if train else batch_size
        self.train, self.generator = train, generator
        self.translate, self.flip, self.cutout = translate, flip, cutout
        self.channels_last = channels_last
        self.epoch = 0  # training epochs served so far (set on resume): the alternating flip's parity
        if train and generator is None:
            raise ValueError("a training loader needs a generator")
        # Alternating flip (airbench): each image gets one random bit, and is mirrored in the epochs where
        # bit XOR (epoch odd) is set: every image is seen both ways in every two epochs.
        self.alt_flip = bool(train and flip and alt_flip)
        self.flip_bits = (torch.rand(len(labels), device=self.device, generator=generator) < 0.5
                          if self.alt_flip else None)
        if translate and translate >= min(images.shape[-2:]):
            raise ConvcliError(f"translate: {translate} px must be smaller than the image ({images.shape[-1]} px)")

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self.train else len(self.labels)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255) - self.mean) / self.std

    def augment(self, x: torch.Tensor, idx=None) -> torch.Tensor:
        g = self.generator
        if self.translate:
            x = random_translate(x, self.translate, g)
        if self.alt_flip and idx is not None:
            mirror = self.flip_bits[idx] ^ bool(self.epoch % 2)
            x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
        elif self.flip:
            x = random_flip(x, g)
        if self.cutout:
            x = random_cutout(x, self.cutout, g)
        return x

    def calibration_batches(self, count: int):
        """`count` training images spread evenly over the set (no shuffling, no augmentation, no use of the
        generator), normalised, in evaluation-sized batches: the input for recomputing BN statistics."""
        n = len(self.labels)
        idx = torch.linspace(0, n - 1, min(count, n), device=self.device).round().long()
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for chunk in idx.split(EVAL_BATCH):
            yield self.normalise(self.images[chunk]).contiguous(memory_format=fmt)

    def __iter__(self):
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            order = None
        for i in range(len(self)):
            s = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[s] if order is not None else s
            x = self.normalise(self.images[idx])
            if self.train:
                x = self.augment(x, idx)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            yield x.contiguous(memory_format=fmt), self.labels[idx]
        if self.train:
            self.epoch += 1
