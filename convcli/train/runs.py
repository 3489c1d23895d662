"""Run directories (ultralytics-style `runs/train`, `runs/train2`, ...) and everything written into them.

    runs/NAME/
      <spec>.yaml    copy of the architecture spec
      args.yaml      the fully resolved training config (plus spec, data, versions)
      metrics.csv    epoch, train_loss, train_acc, test_loss, test_acc, lr, seconds
      last.pt        model, optimizer, scheduler, epoch, RNG states, config (every epoch)
      best.pt        the same, at the best test accuracy so far
      curves.png     loss and accuracy per epoch
      summary.json   best accuracy and epoch, params, seconds, device

`RunWriter` holds all writing, so a distributed run can give it to rank 0 only. Checkpoints hold only
tensors and primitive containers, are written to a temporary file, synced and renamed (a crash or a full
disk never leaves a half-written checkpoint: the previous one stays), and are read back with
`torch.load(weights_only=True)`. A write that fails (full disk, read-only file system) raises `WriteError`
(exit 2) naming the file. `summary.json` is strict JSON: a non-finite number is written as null.

A new run claims its directory with `claim_run_dir` (created, then locked: see `guard.RunLock`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from convcli.errors import ConvcliError

METRICS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
FILES = ("args.yaml", "metrics.csv", "last.pt", "best.pt", "curves.png", "summary.json")


def increment_path(base: Path) -> Path:
    """base, base2, base3, ...: the first that does not exist."""
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}{n}").exists():
        n += 1
    return base.with_name(f"{base.name}{n}")


def create_run_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvcliError(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
    return path


@dataclass
class ClaimedRun:
    """A run directory this process holds the lock of (`release()` on every way out)."""

    path: Path
    lock: object  # guard.RunLock
    created: bool  # made by this process: removed again by `release()` when nothing was written into it
    note: str | None = None  # a stale lock was taken over

    def release(self) -> None:
        self.lock.release()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when empty


def claim_run_dir(out: str | None, root: str = "runs", name: str = "train", resume: bool = False) -> ClaimedRun:
    """Create (when needed) and lock the run directory: `--out` as given, else the first free runs/train,
    runs/train2, ... A directory another process holds is refused naming the holder; a new run (not
    `resume`) refuses one that already holds a run."""
    from convcli.train.guard import RunLock

    created = False
    if out is None:
        for _ in range(1000):
            path = increment_path(Path(root) / name)
            try:
                path.mkdir(parents=True)
                created = True
                break
            except FileExistsError:  # another run took that number in the meantime
                continue
            except OSError as exc:
                raise ConvcliError(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
        else:  # pragma: no cover
            raise ConvcliError(f"cannot find a free run directory under {root}")
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise ConvcliError(f"--out {out}: exists and is not a directory")
        created = not path.exists()
        create_run_dir(path)
    lock = RunLock(path)
    try:
        note = lock.acquire()
    except ConvcliError:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    claimed = ClaimedRun(path, lock, created, note)
    if not resume and (path / "last.pt").exists():
        claimed.release()
        raise ConvcliError(f"--out {out}: already holds a run; continue it with --resume {out} "
                           "or choose another --out")
    return claimed


class WriteError(ConvcliError):
    """Writing a run file failed (full disk, read-only file system, ...): exit 2, naming the file."""

    def __init__(self, path: Path, exc: OSError):
        self.path, self.reason = Path(path), exc.strerror or str(exc)
        super().__init__(f"cannot write {path}: {self.reason}")


def atomic_write_bytes(path: Path, write) -> None:
    """`write(tmp_path)`, sync, then rename over `path`, so a crash or a full disk never leaves a half-written
    file (the previous one stays). An OSError becomes `WriteError` naming `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


class _RecordingFile:
    """A file torch.save writes through, keeping the OSError a write raised: torch reports it as a bare
    RuntimeError ("unexpected pos ...")."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b):
        try:
            return self.f.write(b)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self):
        self.f.flush()


def _torch_save(state: dict, tmp: Path) -> None:
    with open(tmp, "wb") as f:
        rec = _RecordingFile(f)
        try:
            torch.save(state, rec)
        except RuntimeError:
            if rec.error is not None:
                raise rec.error from None
            raise


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write_bytes(path, lambda tmp: _torch_save(state, tmp))


def strict_json(value):
    """`value` with every non-finite float made None, so `json.dumps(allow_nan=False)` writes strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _what_file(head: bytes) -> str | None:
    """A plain word for a file that is not a PyTorch checkpoint, from its first bytes."""
    if not head:
        return "an empty file"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        return "an image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    if first.startswith(("name:", "input:", "layers:", "classes:", "blocks:", "train:", "rules:")) or first == "---":
        return "a YAML file (a spec? pass it as SPEC and the checkpoint as --weights)"
    return "a text file"


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint or a plain state_dict, read with weights_only=True; problems are user errors."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("best.pt", "last.pt") if (path / n).is_file()]
        hint = f"; did you mean {found[0]}?" if found else " (a run directory holds best.pt and last.pt)"
        raise ConvcliError(f"{path}: is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise ConvcliError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise ConvcliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    # torch.save writes a zip archive (PK..); the legacy format starts with a pickle (0x80, protocol).
    if not head.startswith(b"PK\x03\x04") and not head[:1] == b"\x80":
        what = _what_file(head)
        raise ConvcliError(f"{path}: cannot load: " + (f"this is {what}, " if what else "")
                           + "not a PyTorch checkpoint; pass a best.pt / last.pt written by convcli train, or a "
                           "state_dict saved with torch.save")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise ConvcliError(f"{path}: cannot load: the file holds Python objects besides tensors and plain "
                               "containers; convcli reads checkpoints with weights_only=True and never runs code "
                               "from one") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ConvcliError(f"{path}: cannot load as a weights-only checkpoint: {first}") from None
    if not isinstance(blob, dict):
        raise ConvcliError(f"{path}: not a checkpoint (expected a dict, got {type(blob).__name__})")
    if "model" not in blob:
        if blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
            return {"model": blob}  # a bare state_dict
        raise ConvcliError(f"{path}: not a convcli checkpoint (no 'model' entry)")
    return blob


class RunWriter:
    """Everything a run writes. With `enabled=False` (other ranks) every method is a no-op."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.dir, self.enabled = Path(run_dir), enabled

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.csv"

    def start(self, spec_file: str, spec_text: str, args: dict) -> str:
        """Copy the spec, write args.yaml and the metrics header; returns the spec copy's file name."""
        name = Path(spec_file).name
        if name in FILES or not name.endswith((".yaml", ".yml")):
            name = f"spec-{Path(name).stem}.yaml"
        if not self.enabled:
            return name
        with _writing(self.dir / name):
            (self.dir / name).write_text(spec_text, encoding="utf-8")
        self.write_args({**args, "spec_copy": name})
        with _writing(self.metrics_path), open(self.metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(METRICS)
        return name

    def write_args(self, args: dict) -> None:
        if not self.enabled:
            return
        import yaml

        text = yaml.safe_dump(args, sort_keys=False, default_flow_style=None)
        atomic_write_bytes(self.dir / "args.yaml", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path, newline="") as f:  # a row cut short by a crash is left out
            return [r for r in csv.DictReader(f) if None not in r.values() and str(r.get("epoch", "")).isdigit()]

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep the rows up to the checkpoint's epoch (a crash may have logged a later epoch's row)."""
        if not self.enabled:
            return
        rows = [r for r in self.read_metrics() if int(r["epoch"]) <= epochs_done]
        with _writing(self.metrics_path), open(self.metrics_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRICS)
            w.writeheader()
            w.writerows(rows)

    def log_epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        with _writing(self.metrics_path), open(self.metrics_path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[k]) for k in METRICS])

    def checkpoint(self, name: str, state: dict) -> None:
        if self.enabled:
            save_checkpoint(self.dir / name, state)

    def summary(self, summary: dict) -> None:
        if not self.enabled:
            return
        text = json.dumps(strict_json(summary), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(self.dir / "summary.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def curves(self, name: str | None = None) -> None:
        if not self.enabled:
            return
        from convcli.train.plots import plot_curves

        rows = self.read_metrics()
        best = max(rows, key=lambda r: float(r["test_acc"]), default=None)
        title = (f"{name or self.dir.name}: training curves; best test accuracy {100 * float(best['test_acc']):.2f}%"
                 f" (epoch {best['epoch']})") if best else None
        with _writing(self.dir / "curves.png"):
            plot_curves(rows, self.dir / "curves.png", title=title)


@contextlib.contextmanager
def _writing(path: Path):
    try:
        yield
    except OSError as exc:
        raise WriteError(path, exc) from None


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)  # full precision: a resumed run can be compared row by row
    return str(v)
