"""Data sources, decoded once into uint8 tensors and cached by content.

Sources:
- `cifar10`: torchvision's CIFAR-10, downloaded into the cache directory when missing.
- a directory in ImageFolder layout: `train/<class>/*.jpg` and `test/<class>/*.jpg` (directly, or inside
  a single top-level folder);
- a `.tar.gz` / `.tgz` / `.tar` of such a directory. Members are read in memory, never extracted, and an
  archive holding absolute paths, `..` components, links or special files is refused.

Input is bounded before it is read or decoded: only image files (by extension) are read; a file or
archive member over MAX_FILE_BYTES (by its header, before reading) and an archive or directory over
MAX_TOTAL_BYTES in all are refused; each image's width and height are read from its header and an image
over MAX_IMAGE_SIDE, or a dataset whose decoded pixels would not fit in memory, is refused before decoding.
An empty, corrupt or undecodable image is an error naming its file or archive member.

The cache is `$CONVCLI_CACHE` or `~/.cache/convcli`; a decoded dataset is `datasets/<key>.pt`, keyed by
the sha256 of the archive (or of the directory's file list with sizes and mtimes).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import tarfile
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from convcli.errors import ConvcliError

CACHE_FORMAT = "convcli-images-v1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")
MAX_FILE_BYTES = 16 << 20  # one image file or archive member
MAX_TOTAL_BYTES = 8 << 30  # an archive's members (by their headers) or a directory's images, in all
MAX_IMAGE_SIDE = 4096  # width and height, read from the header before decoding
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE  # also PIL's decompression-bomb limit while we decode


@dataclass
class ImageData:
    """Both splits as uint8 [N, C, H, W] images and int64 labels, on the CPU."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str
    cached: bool = False  # read from the decoded cache (else decoded now)
    seconds: float = 0.0  # how long load_data took

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def labels_digest(self) -> str:
        """The classes and both splits' labels in order: which dataset this is, wherever its file now lies
        (the pixels are left out: another JPEG decoder may differ in a last bit)."""
        h = hashlib.sha256("\n".join(self.classes).encode())
        for y in (self.train_y, self.test_y):
            h.update(y.to(torch.int64).numpy().tobytes())
        return h.hexdigest()


def local_path(source: str) -> str | None:
    """A data source's absolute path (None for cifar10, the download): a run records it, so resume and eval
    find the data from any directory."""
    return str(Path(source).resolve()) if source != "cifar10" and Path(source).exists() else None


def saved_source(config: dict, *records: dict) -> str:
    """Where a run's data is now: the first recorded absolute path (`data_path` of args.yaml, a checkpoint)
    that is still there, else the source as it was given."""
    found = (r.get("data_path") for r in records if isinstance(r, dict))
    return next((w for w in found if isinstance(w, str) and Path(w).exists()), config.get("data") or "cifar10")


def cache_dir() -> Path:
    return Path(os.environ.get("CONVCLI_CACHE") or Path.home() / ".cache" / "convcli")


def load_data(source: str) -> ImageData:
    """Load a data source by name or path (see the module docstring), timed: a second run reads the cache."""
    start = time.perf_counter()
    data = _load(source)
    data.seconds = time.perf_counter() - start
    return data


def _load(source: str) -> ImageData:
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
                                 list(blob["classes"]), source, cached=True)
        except Exception:  # a truncated or foreign file: decode again and overwrite it
            pass
    data = decode()
    data.source = source
    blob = {"format": CACHE_FORMAT, "train_x": data.train_x, "train_y": data.train_y,
            "test_x": data.test_x, "test_y": data.test_y, "classes": data.classes}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # an unwritable or full cache only costs speed (torch: RuntimeError)
        import sys

        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"warning: cannot write the data cache {path}: {first}", file=sys.stderr)
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


def _collect(files: dict[PurePosixPath, object], where: str) -> dict[str, list[tuple[str, str, object, str]]]:
    """{split: [(class, name, handle, member path)]} sorted by class then file name."""
    root = _split_root(list(files), where)
    n = len(root.parts)
    out: dict[str, list] = {s: [] for s in SPLITS}
    for name, handle in files.items():
        parts = name.parts[n:]
        hidden = parts and any(p.startswith(".") for p in parts[1:])  # .ipynb_checkpoints/, macOS ._x.jpg
        if len(parts) == 3 and parts[0] in SPLITS and parts[2].lower().endswith(IMAGE_SUFFIXES) and not hidden:
            out[parts[0]].append((parts[1], parts[2], handle, str(name)))
    for split in SPLITS:
        if not out[split]:
            raise ConvcliError(f"{where}: no images under {root / split}/<class>/")
        out[split].sort(key=lambda t: (t[0], t[1]))
    return out


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (the first SOFn segment), without decoding."""
    i, n = 2, len(b)
    while i + 9 <= n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", b[i + 5:i + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        i += 2 + ((b[i + 2] << 8) | b[i + 3])
    return None


def image_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, GIF or BMP (None: another format, or unreadable)."""
    if blob[:8] == b"\x89PNG\r\n\x1a\n" and blob[12:16] == b"IHDR" and len(blob) >= 24:
        return struct.unpack(">II", blob[16:24])
    if blob[:3] == b"\xff\xd8\xff":
        return _jpeg_size(blob)
    if blob[:6] in (b"GIF87a", b"GIF89a") and len(blob) >= 10:
        return struct.unpack("<HH", blob[6:10])
    if blob[:2] == b"BM" and len(blob) >= 26:
        width, height = struct.unpack("<ii", blob[18:26])
        return abs(width), abs(height)
    return None


def _header_size(blob: bytes, member: str, where: str) -> tuple[int, int]:
    """Width and height from the header (PIL reads other formats' headers lazily), checked against the
    limits before anything is decoded."""
    if not blob:
        raise ConvcliError(f"{where}: {member}: empty image file (0 bytes)")
    size = image_size(blob)
    if size is None:
        try:
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
            with Image.open(io.BytesIO(blob)) as im:  # reads the header only
                size = im.size
        except Exception as exc:
            raise ConvcliError(f"{where}: {member}: not a readable image ({exc})") from None
    width, height = size
    if width < 1 or height < 1 or width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ConvcliError(f"{where}: {member}: the image is {width}x{height} pixels (from its header); images of "
                           f"at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} are accepted")
    return width, height


def _check_decoded_size(sizes: list[tuple[int, int]], items, where: str) -> None:
    """The decoded images (RGB uint8, held twice while they are stacked) must fit in the available RAM."""
    from convcli.train.guard import available_ram, human_bytes

    need = 2 * 3 * sum(w * h for w, h in sizes)
    have = available_ram()
    if have is not None and need > have:
        raise ConvcliError(f"{where}: decoding {len(items):,} images needs about {human_bytes(need)} of memory, "
                           f"{human_bytes(have)} available")


def _to_tensors(items, read, classes: list[str], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    index = {c: i for i, c in enumerate(classes)}
    raw = [read(item[2]) for item in items]
    sizes = [_header_size(b, item[3], where) for b, item in zip(raw, items)]
    if len(set(sizes)) > 1:
        odd = next(i for i, sz in enumerate(sizes) if sz != sizes[0])
        raise ConvcliError(f"{where}: images differ in size ({items[0][3]} is {sizes[0][0]}x{sizes[0][1]}, "
                           f"{items[odd][3]} is {sizes[odd][0]}x{sizes[odd][1]}); resize them to one size")
    _check_decoded_size(sizes, items, where)
    blobs = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
    del raw
    images: list = [None] * len(items)
    jpegs = [i for i, item in enumerate(items) if item[1].lower().endswith((".jpg", ".jpeg"))]
    if jpegs:
        try:  # one batched call for the JPEGs (libjpeg-turbo), the rest one by one
            for i, img in zip(jpegs, decode_jpeg([blobs[i] for i in jpegs], mode=ImageReadMode.RGB)):
                images[i] = img
        except (RuntimeError, ValueError):  # one bad file fails the batch: decode one by one, naming it
            images = [None] * len(items)
    for i, img in enumerate(images):
        if img is None:
            images[i] = _decode_one(blobs[i], items[i], where, decode_image, ImageReadMode.RGB)
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) > 1:  # the headers agreed; a decoder that disagrees with its header
        first = tuple(images[0].shape)
        odd = next(i for i, img in enumerate(images) if tuple(img.shape) != first)
        raise ConvcliError(f"{where}: images differ in size ({items[0][3]} is {_hw(first)}, "
                           f"{items[odd][3]} is {_hw(images[odd].shape)}); resize them to one size")
    labels = torch.tensor([index[item[0]] for item in items], dtype=torch.int64)
    return torch.stack(images), labels


def _hw(shape) -> str:
    return f"{shape[-1]}x{shape[-2]}"


def _decode_one(blob, item, where, decode_image, mode):
    try:
        return decode_image(blob, mode=mode)
    except (RuntimeError, ValueError):
        pass
    try:  # formats torchvision cannot read (e.g. BMP)
        import numpy as np
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        arr = np.array(Image.open(io.BytesIO(blob.numpy().tobytes())).convert("RGB"))
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    except Exception as exc:
        reason = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))  # PIL names its buffer
        raise ConvcliError(f"{where}: {item[3]}: cannot decode the image: {reason}") from None


def _decode(files: dict, read, where: str) -> ImageData:
    split_items = _collect(files, where)
    classes = sorted({item[0] for item in split_items["train"]})
    unknown = sorted({item[0] for item in split_items["test"]} - set(classes))
    if unknown:
        raise ConvcliError(f"{where}: test classes with no training images: {', '.join(unknown)} "
                           f"(train/{unknown[0]}/ is missing or empty)")
    with warnings.catch_warnings():  # torchvision 0.29 warns on every decode that torchcodec will take over
        warnings.simplefilter("ignore", DeprecationWarning)
        train_x, train_y = _to_tensors(split_items["train"], read, classes, where)
        test_x, test_y = _to_tensors(split_items["test"], read, classes, where)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ConvcliError(f"{where}: train images are {_hw(train_x.shape)} but test images are {_hw(test_x.shape)}")
    return ImageData(train_x, train_y, test_x, test_y, classes, where)


def _too_big(name: str, size: int, where: str) -> ConvcliError:
    from convcli.train.guard import human_bytes

    return ConvcliError(f"{where}: {name} is {human_bytes(size)}; image files of at most "
                        f"{human_bytes(MAX_FILE_BYTES)} are read (refused before reading it)")


def _too_much(total: int, where: str) -> ConvcliError:
    from convcli.train.guard import human_bytes

    return ConvcliError(f"{where}: more than {human_bytes(MAX_TOTAL_BYTES)} in all ({human_bytes(total)} so far); "
                        "datasets are decoded into memory, so this is too large")


def _decode_directory(root: Path) -> ImageData:
    files = {}
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath, name)
            rel = PurePosixPath(p.relative_to(root).as_posix())
            if not name.lower().endswith(IMAGE_SUFFIXES) or not p.is_file():
                continue
            size = p.stat().st_size
            if size > MAX_FILE_BYTES:
                raise _too_big(str(rel), size, str(root))
            total += size
            if total > MAX_TOTAL_BYTES:
                raise _too_much(total, str(root))
            files[rel] = p
    return _decode(files, _read_file, str(root))


def _read_file(p: Path) -> bytes:
    with open(p, "rb") as f:
        return f.read(MAX_FILE_BYTES + 1)


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
    total = 0
    try:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:  # each member's size comes from its header, before its data is read or skipped
                _check_member(member, where)
                if not member.isfile():
                    continue
                if member.size > MAX_FILE_BYTES:  # an image too large, or data we would have to inflate to skip
                    raise _too_big(f"archive member {member.name!r}", member.size, where)
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    raise _too_much(total, where)
                if member.name.lower().endswith(IMAGE_SUFFIXES):  # other members are skipped unread
                    f = tf.extractfile(member)
                    files[PurePosixPath(member.name)] = f.read(MAX_FILE_BYTES + 1) if f else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ConvcliError(f"{where}: cannot read the archive: {exc}") from None
    return _decode(files, lambda b: b, where)


# --- torchvision CIFAR-10 ------------------------------------------------------------------------

def _load_cifar10() -> ImageData:
    from torchvision.datasets import CIFAR10

    root = cache_dir() / "cifar10"
    existed = root.exists()
    try:
        splits = [CIFAR10(str(root), train=t, download=True) for t in (True, False)]
    except Exception as exc:  # no network, a proxy, a full disk...
        if not existed and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # leave no empty cifar10/ behind to suggest a download happened
        raise ConvcliError(f"cannot download CIFAR-10 into {root}: {exc}; pass --data PATH to a local copy "
                           "(an ImageFolder directory or .tar.gz, e.g. ../shared/data/cifar10-jpeg.tar.gz)") from None
    tensors = []
    for ds in splits:
        tensors.append(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous())
        tensors.append(torch.tensor(ds.targets, dtype=torch.int64))
    return ImageData(*tensors, classes=list(splits[0].classes), source="cifar10")
