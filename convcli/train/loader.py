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
# The random numbers are drawn for a whole (global) batch first and applied to a slice of it, so that a
# distributed run's ranks, sharing one generator, augment their shards exactly as one process would.

def translate(x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Reflect-pad by `pad` and crop back at offsets (dy, dx) in [0, 2·pad] per image, as one gather."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect").permute(0, 2, 3, 1)  # B, H+2p, W+2p, C
    rows = dy[:, None] + torch.arange(h, device=x.device)  # B, H
    cols = dx[:, None] + torch.arange(w, device=x.device)  # B, W
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # B, C, H, W


def mirror(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    return torch.where(which.view(-1, 1, 1, 1), x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero (the mean, after normalisation) a size×size square centred at (cy, cx) in each image."""
    _, _, h, w = x.shape
    cy, cx = cy - size // 2, cx - size // 2
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_y = (ys >= cy[:, None]) & (ys < cy[:, None] + size)  # B, H
    in_x = (xs >= cx[:, None]) & (xs < cx[:, None] + size)  # B, W
    return x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)


# --- the loader ----------------------------------------------------------------------------------

class DeviceLoader:
    """Batches of (normalised float images, labels) from uint8 images already on `device`.

    Training loaders shuffle every epoch and augment (translate, flip, cutout) with `generator`, and drop
    the last partial batch; evaluation loaders keep the order and every image. `shard=(i, n)`: a training
    loader yields slice i of n of every batch (batch_size is the global batch; every rank draws the same
    permutation and augmentation numbers); an evaluation loader serves the i-th of n contiguous parts."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, batch_size: int, *,
                 train: bool = False, generator: torch.Generator | None = None, translate: int = 0,
                 flip: bool = False, alt_flip: bool = False, cutout: int = 0, channels_last: bool = False,
                 shard: tuple[int, int] = (0, 1)):
        self.shard_index, self.shards = shard
        if not train and self.shards > 1:  # each rank evaluates its own part of the set
            part = torch.tensor_split(torch.arange(len(labels)), self.shards)[self.shard_index]
            images, labels = images[part.to(images.device)], labels[part.to(labels.device)]
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
        if train and self.batch_size % self.shards:
            raise ValueError(f"batch {self.batch_size} does not split into {self.shards} shards")
        # Alternating flip (airbench): each image gets one random bit, and is mirrored in the epochs where
        # bit XOR (epoch odd) is set: every image is seen both ways in every two epochs.
        self.alt_flip = bool(train and flip and alt_flip)
        self.flip_bits = (torch.rand(len(labels), device=self.device, generator=generator) < 0.5
                          if self.alt_flip else None)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self.train else len(self.labels)

    @property
    def local_batch(self) -> int:
        """Images this process computes per training step (the global batch over the shards)."""
        return self.batch_size // self.shards

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255) - self.mean) / self.std

    def draw(self, b: int) -> dict:
        """The augmentation's random numbers for a batch of b images, always in the same order (translate,
        flip, cutout), so that the generator's state after a batch does not depend on the shard."""
        g, dev, d = self.generator, self.device, {}
        h, w = self.images.shape[-2:]
        if self.translate:
            d["dy"], d["dx"] = torch.randint(0, 2 * self.translate + 1, (2, b), device=dev, generator=g)
        if self.flip and not self.alt_flip:
            d["flip"] = torch.rand(b, device=dev, generator=g) < 0.5
        if self.cutout:
            d["cy"] = torch.randint(0, h, (b,), device=dev, generator=g)
            d["cx"] = torch.randint(0, w, (b,), device=dev, generator=g)
        return d

    def augment(self, x: torch.Tensor, idx: torch.Tensor, d: dict) -> torch.Tensor:
        """Augment images x (dataset indices idx) with the numbers `d` drawn for exactly these images."""
        if self.translate:
            x = translate(x, self.translate, d["dy"], d["dx"])
        if self.alt_flip:
            x = mirror(x, self.flip_bits[idx] ^ bool(self.epoch % 2))
        elif self.flip:
            x = mirror(x, d["flip"])
        if self.cutout:
            x = cutout(x, self.cutout, d["cy"], d["cx"])
        return x

    def calibration_batches(self, count: int, shard: tuple[int, int] = (0, 1)):
        """`count` training images spread evenly over the set (no shuffling, no augmentation, no use of the
        generator), normalised, in evaluation-sized batches: the input for recomputing BN statistics.
        `shard=(i, n)`: every n-th of those batches, from the i-th (a rank's share)."""
        n = len(self.labels)
        idx = torch.linspace(0, n - 1, min(count, n), device=self.device).round().long()
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        index, shards = shard
        for chunk in idx.split(EVAL_BATCH)[index::shards]:
            yield self.normalise(self.images[chunk]).contiguous(memory_format=fmt)

    def __iter__(self):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if not self.train:
            for i in range(len(self)):
                s = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield self.normalise(self.images[s]).contiguous(memory_format=fmt), self.labels[s]
            return
        order = torch.randperm(len(self.labels), device=self.device, generator=self.generator)
        mine = slice(self.shard_index * self.local_batch, (self.shard_index + 1) * self.local_batch)
        for i in range(len(self)):
            draws = self.draw(self.batch_size)  # for the whole global batch; this shard keeps its slice
            idx = order[i * self.batch_size:(i + 1) * self.batch_size][mine]
            x = self.augment(self.normalise(self.images[idx]), idx, {k: v[mine] for k, v in draws.items()})
            yield x.contiguous(memory_format=fmt), self.labels[idx]
        self.epoch += 1
