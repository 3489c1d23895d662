"""Data sources, decoded once into uint8 tensors and cached by content.

Sources:
- `cifar10`: torchvision's CIFAR-10, downloaded into the cache directory when missing.
- a directory in ImageFolder layout: `train/<class>/*.jpg` and `test/<class>/*.jpg` (directly, or inside
  a single top-level folder);
- a `.tar.gz` / `.tgz` / `.tar` of such a directory. Members are read in memory, never extracted, and an
  archive holding absolute paths, `..` components, links or special files is refused.

The cache is `$CONVCLI_CACHE` or `~/.cache/convcli`; a decoded dataset is `datasets/<key>.pt`, keyed by
the sha256 of the archive (or of the directory's file list with sizes and mtimes).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from convcli.errors import ConvcliError

CACHE_FORMAT = "convcli-images-v1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")


@dataclass
class ImageData:
    """Both splits as uint8 [N, C, H, W] images and int64 labels, on the CPU."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def cache_dir() -> Path:
    return Path(os.environ.get("CONVCLI_CACHE") or Path.home() / ".cache" / "convcli")


def load_data(source: str) -> ImageData:
    """Load a data source by name or path (see the module docstring)."""
    if source == "cifar10":
        return _load_cifar10()
    path = Path(source).expanduser()
    if not path.exists():
        raise ConvcliError(f"--data {source}: no such file or directory "
                           "(expected cifar10, an ImageFolder directory or a .tar.gz of one)")
    if path.is_dir():
        key = _directory_key(path)
        return _cached(key, source, lambda: _decode_directory(path))
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        key = _file_key(path)
        return _cached(key, source, lambda: _decode_archive(path))
    raise ConvcliError(f"--data {source}: not a directory or a .tar.gz/.tgz/.tar archive")


# --- cache ---------------------------------------------------------------------------------------

def _file_key(path: Path) -> str:
    h = hashlib.sha256(CACHE_FORMAT.encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _directory_key(root: Path) -> str:
    h = hashlib.sha256(CACHE_FORMAT.encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cached(key: str, source: str, decode) -> ImageData:
    path = cache_dir() / "datasets" / f"{key[:32]}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if blob.get("format") == CACHE_FORMAT:
                return ImageData(blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"],
                                 list(blob["classes"]), source)
        except Exception:  # a truncated or foreign file: decode again and overwrite it
            pass
    data = decode()
    data.source = source
    blob = {"format": CACHE_FORMAT, "train_x": data.train_x, "train_y": data.train_y,
            "test_x": data.test_x, "test_y": data.test_y, "classes": data.classes}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError as exc:  # an unwritable cache only costs speed
        import sys

        print(f"warning: cannot write the data cache {path}: {exc}", file=sys.stderr)
    return data


# --- ImageFolder decoding ------------------------------------------------------------------------

def _split_root(names: list[PurePosixPath], where: str) -> PurePosixPath:
    """The folder holding train/ and test/: the top level, or a single top-level folder."""
    tops = {n.parts[0] for n in names if n.parts}
    if set(SPLITS) <= tops:
        return PurePosixPath()
    if len(tops) == 1:
        top = next(iter(tops))
        inner = {n.parts[1] for n in names if len(n.parts) > 1 and n.parts[0] == top}
        if set(SPLITS) <= inner:
            return PurePosixPath(top)
    raise ConvcliError(f"{where}: expected ImageFolder layout train/<class>/<image> and test/<class>/<image> "
                       f"(at the top or inside one top-level folder); found {', '.join(sorted(tops)) or 'nothing'}")


def _collect(files: dict[PurePosixPath, object], where: str) -> dict[str, list[tuple[str, str, object]]]:
    """{split: [(class, name, handle)]} sorted by class then file name."""
    root = _split_root(list(files), where)
    n = len(root.parts)
    out: dict[str, list] = {s: [] for s in SPLITS}
    for name, handle in files.items():
        parts = name.parts[n:]
        if len(parts) == 3 and parts[0] in SPLITS and parts[2].lower().endswith(IMAGE_SUFFIXES):
            out[parts[0]].append((parts[1], parts[2], handle))
    for split in SPLITS:
        if not out[split]:
            raise ConvcliError(f"{where}: no images under {root / split}/<class>/")
        out[split].sort(key=lambda t: (t[0], t[1]))
    return out


def _to_tensors(items, read, classes: list[str], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    index = {c: i for i, c in enumerate(classes)}
    blobs = [torch.frombuffer(bytearray(read(h)), dtype=torch.uint8) for _, _, h in items]
    images: list = [None] * len(items)
    jpegs = [i for i, (_, name, _) in enumerate(items) if name.lower().endswith((".jpg", ".jpeg"))]
    try:  # one batched call for the JPEGs (libjpeg-turbo), the rest one by one
        for i, img in zip(jpegs, decode_jpeg([blobs[i] for i in jpegs], mode=ImageReadMode.RGB)):
            images[i] = img
    except RuntimeError:
        pass
    for i, img in enumerate(images):
        if img is None:
            images[i] = _decode_one(blobs[i], items[i], where, decode_image, ImageReadMode.RGB)
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) > 1:
        first = tuple(images[0].shape)
        odd = next(i for i, img in enumerate(images) if tuple(img.shape) != first)
        raise ConvcliError(f"{where}: images differ in size ({items[0][1]} is {_hw(first)}, "
                           f"{items[odd][0]}/{items[odd][1]} is {_hw(images[odd].shape)}); resize them to one size")
    labels = torch.tensor([index[c] for c, _, _ in items], dtype=torch.int64)
    return torch.stack(images), labels


def _hw(shape) -> str:
    return f"{shape[-1]}x{shape[-2]}"


def _decode_one(blob, item, where, decode_image, mode):
    try:
        return decode_image(blob, mode=mode)
    except RuntimeError:
        pass
    try:  # formats torchvision cannot read (e.g. BMP)
        import numpy as np
        from PIL import Image

        arr = np.array(Image.open(io.BytesIO(blob.numpy().tobytes())).convert("RGB"))
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    except Exception as exc:
        raise ConvcliError(f"{where}: cannot decode {item[0]}/{item[1]}: {exc}") from None


def _decode(files: dict, read, where: str) -> ImageData:
    split_items = _collect(files, where)
    classes = sorted({c for c, _, _ in split_items["train"]})
    unknown = sorted({c for c, _, _ in split_items["test"]} - set(classes))
    if unknown:
        raise ConvcliError(f"{where}: test classes not in train/: {', '.join(unknown)}")
    with warnings.catch_warnings():  # torchvision 0.29 warns on every decode that torchcodec will take over
        warnings.simplefilter("ignore", DeprecationWarning)
        train_x, train_y = _to_tensors(split_items["train"], read, classes, where)
        test_x, test_y = _to_tensors(split_items["test"], read, classes, where)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ConvcliError(f"{where}: train images are {_hw(train_x.shape)} but test images are {_hw(test_x.shape)}")
    return ImageData(train_x, train_y, test_x, test_y, classes, where)


def _decode_directory(root: Path) -> ImageData:
    files = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath, name)
            files[PurePosixPath(p.relative_to(root).as_posix())] = p
    return _decode(files, lambda p: p.read_bytes(), str(root))


def _check_member(member: tarfile.TarInfo, where: str) -> None:
    """Refuse what a data archive has no business holding. Members are only read into memory, never
    written out, so these checks (stricter than tarfile's "data" filter, which allows internal links and
    strips a leading "/") are all the protection needed; the realpath-based filter would triple the time."""
    name = PurePosixPath(member.name)
    if member.name.startswith("/") or name.is_absolute() or ".." in name.parts:
        raise ConvcliError(f"{where}: refusing archive member {member.name!r} (absolute path or '..')")
    if member.issym() or member.islnk():
        raise ConvcliError(f"{where}: refusing archive member {member.name!r} (a link)")
    if not (member.isfile() or member.isdir()):
        raise ConvcliError(f"{where}: refusing archive member {member.name!r} (not a file or directory)")


def _decode_archive(path: Path) -> ImageData:
    where = str(path)
    files: dict[PurePosixPath, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:
                _check_member(member, where)
                if member.isfile():
                    f = tf.extractfile(member)
                    files[PurePosixPath(member.name)] = f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConvcliError(f"{where}: cannot read the archive: {exc}") from None
    return _decode(files, lambda b: b, where)


# --- torchvision CIFAR-10 ------------------------------------------------------------------------

def _load_cifar10() -> ImageData:
    from torchvision.datasets import CIFAR10

    root = cache_dir() / "cifar10"
    try:
        splits = [CIFAR10(str(root), train=t, download=True) for t in (True, False)]
    except Exception as exc:  # no network, a proxy, a full disk...
        raise ConvcliError(f"cannot download CIFAR-10 into {root}: {exc}; pass --data PATH to a local copy "
                           "(an ImageFolder directory or .tar.gz, e.g. ../shared/data/cifar10-jpeg.tar.gz)") from None
    tensors = []
    for ds in splits:
        tensors.append(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous())
        tensors.append(torch.tensor(ds.targets, dtype=torch.int64))
    return ImageData(*tensors, classes=list(splits[0].classes), source="cifar10")
