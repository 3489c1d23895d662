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
tensors and primitive containers, are written to a temporary file and renamed, and are read back with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import csv
import json
import os
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


def plan_run_dir(out: str | None, root: str = "runs", name: str = "train") -> Path:
    """The run directory a new run will use (checked now, created by `create_run_dir` once setup worked)."""
    if out is None:
        return increment_path(Path(root) / name)
    path = Path(out)
    if (path / "last.pt").exists():
        raise ConvcliError(f"--out {out}: already holds a run; continue it with --resume {out} "
                           "or choose another --out")
    if path.exists() and not path.is_dir():
        raise ConvcliError(f"--out {out}: exists and is not a directory")
    return path


def create_run_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvcliError(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
    return path


def atomic_write_bytes(path: Path, write) -> None:
    """`write(tmp_path)` then rename over `path`, so a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint or a plain state_dict, read with weights_only=True; problems are user errors."""
    path = Path(path)
    if not path.is_file():
        raise ConvcliError(f"{path}: no such checkpoint file")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
        (self.dir / name).write_text(spec_text, encoding="utf-8")
        self.write_args({**args, "spec_copy": name})
        with open(self.metrics_path, "w", newline="") as f:
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
        with open(self.metrics_path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep the rows up to the checkpoint's epoch (a crash may have logged a later epoch's row)."""
        if not self.enabled:
            return
        rows = [r for r in self.read_metrics() if int(r["epoch"]) <= epochs_done]
        with open(self.metrics_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRICS)
            w.writeheader()
            w.writerows(rows)

    def log_epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[k]) for k in METRICS])

    def checkpoint(self, name: str, state: dict) -> None:
        if self.enabled:
            save_checkpoint(self.dir / name, state)

    def summary(self, summary: dict) -> None:
        if not self.enabled:
            return
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write_bytes(self.dir / "summary.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def curves(self) -> None:
        if not self.enabled:
            return
        from convcli.train.plots import plot_curves

        plot_curves(self.read_metrics(), self.dir / "curves.png")


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)  # full precision: a resumed run can be compared row by row
    return str(v)
