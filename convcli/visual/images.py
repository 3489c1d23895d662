"""Images for the pictures: a file, or `cifar10:INDEX` (an image of a dataset's test split), made into
the model's input (channels, size, normalisation)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from convcli.errors import ConvcliError

DATASET_REF = re.compile(r"^(?P<name>cifar10):(?P<index>\d+)$")


def load_image(ref, data: str | None = None):
    """(uint8 tensor [C, H, W], caption) for `ref`: an image file (PNG, JPEG, ...), or `cifar10:INDEX`, the
    INDEX-th image of the test split of `data` (a `--data` source: `cifar10`, an ImageFolder directory
    or a .tar.gz of one, as `convcli train` reads it; default `cifar10`). The caption names the image
    and, for a dataset image, its class."""
    text = str(ref)
    m = DATASET_REF.match(text)
    if m and not Path(text).exists():
        from convcli.train.data import load_data

        source = data or "cifar10"
        images = load_data(source)
        index, n = int(m.group("index")), len(images.test_y)
        if index >= n:
            raise ConvcliError(f"{text}: the test split of {source} has {n:,} images (0 to {n - 1})")
        label = images.classes[int(images.test_y[index])]
        return images.test_x[index].clone(), f"{text} ({label})"
    path = Path(text)
    if not path.is_file():
        raise ConvcliError(f"{text}: no such image file (or use cifar10:INDEX for a test image)")
    return _decode_file(path), path.name


def _decode_file(path: Path):
    import torch

    try:
        from torchvision.io import ImageReadMode, decode_image

        blob = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        with warnings.catch_warnings():  # torchvision 0.29 warns on every decode that torchcodec will take over
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(blob, mode=ImageReadMode.RGB)
    except Exception:
        pass
    try:
        import numpy as np
        from PIL import Image

        arr = np.array(Image.open(path).convert("RGB"))
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    except Exception as exc:
        raise ConvcliError(f"{path}: cannot read the image: {exc}") from None


def fit_image(image, input_shape):
    """uint8 [C, H, W] -> uint8 [C', H', W'] for a model taking `input_shape` (C', H', W'): RGB to
    luminance (ITU-R 601) or gray to RGB, then resized (bilinear, antialiased) when the size differs."""
    import torch
    import torch.nn.functional as F

    if len(input_shape) != 3:
        raise ConvcliError(f"pictures of images need a 2-D input (C, H, W); this model takes {list(input_shape)}")
    c, h, w = input_shape
    if image.dim() == 2:
        image = image[None]
    if image.shape[0] != c:
        if image.shape[0] == 3 and c == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
            image = (image.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        elif image.shape[0] == 1:
            image = image.expand(c, -1, -1)
        else:
            raise ConvcliError(f"the image has {image.shape[0]} channels but the model takes {c}")
    if tuple(image.shape[1:]) != (h, w):
        image = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", antialias=True,
                              align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return image.contiguous()


def normalise(images, mean=None, std=None):
    """uint8 [N, C, H, W] -> float32 on the 0-1 scale, minus `mean`, over `std` (per channel, the
    training set's, as a checkpoint stores them); without them each image is standardised by its own
    per-channel statistics."""
    import torch

    x = images.float() / 255
    c = x.shape[1]
    if mean is None or std is None:
        m = x.mean(dim=(2, 3), keepdim=True)
        s = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return (x - m) / s
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    if m.shape[1] != c:
        m, s = m.mean().view(1, 1, 1, 1), s.mean().view(1, 1, 1, 1)
    return (x - m) / s


def sample_batch(data: str | None, n: int, input_shape, mean=None, std=None):
    """`n` test images of `data`, evenly spread over the test split (so every class appears when the
    split is sorted by class), fitted and normalised: float32 [n, C, H, W]."""
    import torch

    from convcli.train.data import load_data

    images = load_data(data or "cifar10")
    total = len(images.test_y)
    n = max(1, min(n, total))
    idx = torch.linspace(0, total - 1, n).round().long()
    batch = torch.stack([fit_image(images.test_x[i], input_shape) for i in idx.tolist()])
    return normalise(batch, mean, std)


__all__ = ["load_image", "fit_image", "normalise", "sample_batch"]
