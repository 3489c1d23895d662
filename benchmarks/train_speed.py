"""Training throughput, side by side on one network, device, batch size and number of steps:

  (a) convcli   convcli's own training path: the uint8 dataset resident on the device, batched translate +
                flip, the recipe's precision and memory format, `train_step` and lookahead;
  (b) plain     a loop written the way course notebooks do it: torchvision ImageFolder with per-sample
                RandomCrop / RandomHorizontalFlip / ToTensor / Normalize, a DataLoader with workers,
                fp32, default memory format;
  (c) ceiling   compute only: forward + backward + SGD step on one preallocated batch in a tight loop, in
                the fastest precision and memory format the device supports (bf16 autocast + channels_last
                on CUDA and on CPUs with native bf16; else fp32 + channels_last).

Prints images/s for each and, as its last two lines, `ratio convcli/plain: X` and `ratio convcli/ceiling: Y`.

    python benchmarks/train_speed.py --device cpu --steps 20 --threads 1
    python benchmarks/train_speed.py --device cuda --steps 200

Each measurement skips `--warmup` steps first and syncs the device before reading the clock; the three take
turns for `--repeats` rounds and each reports its median round (a shared machine's load hits all alike). The plain loop
needs the JPEG tree on disk: the archive is unpacked once into the convcli cache (not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tarfile
import time
from pathlib import Path

import torch  # noqa: TID253 (a script, not part of the CLI)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, steps: int, step) -> float:
    """images/s of `step()` (which returns the batch size) over `steps` steps."""
    sync(device)
    start = time.perf_counter()
    images = sum(step() for _ in range(steps))
    sync(device)
    return images / (time.perf_counter() - start)


def measure(device, steps: int, warmup: int, repeats: int, benches: dict) -> dict:
    """{name: [images/s per round]}: each step function warms up, then the measurements take turns for
    `repeats` rounds, so a load change on a shared machine hits all of them alike."""
    for step in benches.values():
        for _ in range(warmup):
            step()
    rates: dict = {name: [] for name in benches}
    for _ in range(repeats):
        for name, step in benches.items():
            rates[name].append(timed(device, steps, step))
    return rates


# --- (a) convcli ----------------------------------------------------------------------------------

def bench_convcli(spec: str, data: str, device: torch.device, batch: int, total_steps: int,
                  options: dict) -> tuple:
    from convcli.analysis import analyze_file
    from convcli.train.config import build_config
    from convcli.train.data import load_data
    from convcli.train.device import amp_active, autocast, use_channels_last
    from convcli.train.loop import train_step
    from convcli.train.trainer import configure_backend, make_session

    analysis = analyze_file(spec)
    cfg = build_config({"batch_size": batch, "device": str(device), "data": data, **options},
                       analysis.spec.train, analysis.spec.file, None)
    configure_backend(device)
    s = make_session(cfg, spec, analysis, device, load_data(data))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    ctx = autocast(device, cfg.amp)
    s.schedule.total_steps = max(s.schedule.total_steps, total_steps)
    batches = iter(())

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(s.train_loader)
            x, y = next(batches)
        train_step(s.step_model, s.optimizer, s.schedule, x, y, loss_fn, ctx)
        if s.lookahead is not None:
            s.lookahead.after_step(s.model, s.schedule.step, s.schedule.total_steps)
        return y.shape[0]

    how = (f"{'bf16' if amp_active(device, cfg.amp) else 'fp32'}"
           f"{' + channels_last' if use_channels_last(device, cfg.channels_last) else ''}"
           f"{' + compile' if cfg.compile else ''}{' + lookahead' if cfg.lookahead else ''}")
    return step, how


# --- (b) the notebook loop ------------------------------------------------------------------------

def unpacked(archive: Path) -> Path:
    """The archive unpacked once into the convcli cache; returns the folder holding train/ and test/."""
    from convcli.train.data import _file_key, cache_dir

    dest = cache_dir() / "unpacked" / _file_key(archive)[:16]
    done = dest / ".complete"
    if not done.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
        done.touch()
    for p in [dest, *sorted(dest.iterdir())]:
        if (p / "train").is_dir():
            return p
    raise SystemExit(f"{archive}: no train/ folder inside")


def bench_plain(spec: str, data: Path, device: torch.device, batch: int, workers: int):
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from convcli.analysis import analyze_file
    from convcli.build import build_model

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    dataset = ImageFolder(str(unpacked(data) / "train"), transform=transform)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(analyze_file(spec)).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    batches = iter(())

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return y.shape[0]

    return step


# --- (c) the compute ceiling ----------------------------------------------------------------------

def bench_ceiling(spec: str, device: torch.device, batch: int) -> tuple:
    from convcli.analysis import analyze_file
    from convcli.build import build_model
    from convcli.train.device import amp_active

    bf16 = amp_active(device, True)
    torch.manual_seed(0)
    model = build_model(analyze_file(spec)).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    x = torch.randn(batch, *analyze_file(spec).spec.input, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with ctx:
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return batch

    return step, f"{'bf16' if bf16 else 'fp32'} + channels_last"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "architectures" / "s7.yaml"))
    ap.add_argument("--data", default=os.environ.get("CONVCLI_SHARED_DATA") or str(DEFAULT_DATA),
                    help="the CIFAR-10 ImageFolder archive (.tar.gz)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each measurement reports its median round")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--no-amp", action="store_true", help="convcli path: fp32 instead of bf16 autocast")
    ap.add_argument("--no-channels-last", action="store_true", help="convcli path: default memory format")
    ap.add_argument("--compile", action="store_true", help="convcli path: torch.compile")
    ap.add_argument("--only", choices=("convcli", "plain", "ceiling"), action="append",
                    help="run only these measurements (repeatable; the ratio lines need all three)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    device = torch.device(args.device)
    from convcli.train.device import cpu_native_bf16, describe

    what = set(args.only or ("convcli", "plain", "ceiling"))
    cpu = platform.processor() or platform.machine()
    print(f"train_speed: {Path(args.spec).name}, batch {args.batch_size}, {args.repeats} rounds of {args.steps} steps "
          f"(+{args.warmup} warm-up), "
          f"device {describe(device)}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"cpu {cpu}{' (native bf16)' if cpu_native_bf16() else ''}, python {sys.version.split()[0]}", flush=True)
    benches, notes = {}, {}
    if "convcli" in what:
        options = {"amp": not args.no_amp, "channels_last": not args.no_channels_last, "compile": args.compile}
        benches["convcli"], how = bench_convcli(args.spec, args.data, device, args.batch_size,
                                                (args.steps * args.repeats + args.warmup), options)
        notes["convcli"] = f"{how}, device-resident data, batched augmentation"
    if "plain" in what:
        benches["plain"] = bench_plain(args.spec, Path(args.data), device, args.batch_size, args.workers)
        notes["plain"] = f"fp32, ImageFolder + per-sample transforms, DataLoader with {args.workers} workers"
    if "ceiling" in what:
        benches["ceiling"], how = bench_ceiling(args.spec, device, args.batch_size)
        notes["ceiling"] = f"{how}, one preallocated batch, no data"
    rates = measure(device, args.steps, args.warmup, args.repeats, benches)
    results = {name: statistics.median(r) for name, r in rates.items()}
    for label, name in (("(a)", "convcli"), ("(b)", "plain"), ("(c)", "ceiling")):
        if name in results:
            rounds = ", ".join(f"{r:,.0f}" for r in rates[name])
            print(f"{label} {name:<8} {results[name]:9,.0f} img/s   ({notes[name]}; rounds: {rounds})")
    if "convcli" in results and "plain" in results:
        print(f"ratio convcli/plain: {results['convcli'] / results['plain']:.2f}")
    if "convcli" in results and "ceiling" in results:
        print(f"ratio convcli/ceiling: {results['convcli'] / results['ceiling']:.2f}")


if __name__ == "__main__":
    main()
