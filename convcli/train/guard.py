"""What keeps a training run from being lost or from taking the machine down (issue 10):

- `RunLock`: one process owns a run directory. A lock file (`train.lock`: PID, host, start time, command)
  held with `flock`, so the kernel releases it when the process dies however it dies; a second run into
  the same directory is refused naming the holder, and a lock file left by a dead process is taken over
  with a note.
- `check_output`: before any data is loaded, the run directory must be writable and have room for the
  checkpoints (`checkpoint_bytes` × 3: last.pt, best.pt and the temporary copy written before each rename).
- `check_memory`: parameters, gradients, optimizer state and activations estimated from the analysis, against
  the device's memory (CPU: MemAvailable; CUDA: free memory); a network that cannot fit is refused before
  anything is allocated.
- `StopRequest`: Ctrl-C (SIGINT) and SIGTERM during training ask the loop to stop after the current step,
  so a consistent, resumable checkpoint can be saved; a second signal quits at once. Before training
  starts (setup, data loading) a signal interrupts at once: there is nothing to save yet.
- `fault_point`: fault injection for the robustness tests (`CONVCLI_FAULT=SIGNAL@POINT`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from convcli.errors import ConvcliError

LOCK_NAME = "train.lock"
WRITE_MARGIN = 1 << 20  # metrics.csv, summary.json, args.yaml, curves.png
ACTIVATION_FACTOR = 2  # tensors autograd keeps per layer row (e.g. a conv's output for BN, BN's for the activation)
OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2}  # per-parameter state tensors (momentum; Adam's two moments)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# --- the run directory's lock -------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def describe_holder(info: dict) -> str:
    if not info:
        return "another process (its lock file is still being written)"
    if "unreadable" in info:
        return f"an unknown process (the lock file holds {info['unreadable']!r}, not convcli's record)"
    return (f"PID {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


class RunLock:
    """`train.lock` in a run directory, held for the life of the run (see the module doc)."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.fd: int | None = None

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "command": " ".join(["convcli", *sys.argv[1:]]) if sys.argv else "convcli"}

    @staticmethod
    def _parse(text: str) -> dict:
        try:
            info = json.loads(text) if text.strip() else {}
        except ValueError:
            info = None
        return info if isinstance(info, dict) else {"unreadable": text.strip()[:40]}

    def _cannot(self, exc: OSError) -> ConvcliError:
        return ConvcliError(f"{self.dir}: cannot write the run directory: {exc.strerror or exc}")

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over. Refuses (exit 2) a held one."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: exclusive creation and a PID check
            return self._acquire_without_flock()
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise self._cannot(exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                os.close(fd)
                raise ConvcliError(f"{self.dir} is in use by another `convcli train`: {describe_holder(holder)}; "
                                   f"wait for it to finish or choose another --out (lock file {self.path})") from None
            try:  # the holder before us may have unlinked the file between our open and our flock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = self._parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(self._info()) + "\n").encode(), 0)
            except OSError as exc:
                os.close(fd)
                raise self._cannot(exc) from None
            self.fd = fd
            if previous:  # nobody held the flock: the process that wrote it has ended (or was killed)
                return (f"note: took over the stale lock {self.path} of {describe_holder(previous)}: no process "
                        "holds it any more")
            return None
        raise ConvcliError(f"{self.path}: cannot take the lock (it keeps changing)")  # pragma: no cover

    def _acquire_without_flock(self) -> str | None:  # pragma: no cover - exercised on Windows only
        note = None
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    holder = self._parse(self.path.read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    holder = {}
                pid = holder.get("pid")
                if (holder.get("host") == socket.gethostname() and isinstance(pid, int)
                        and not _pid_alive(pid)):
                    note = (f"note: took over the stale lock {self.path} of {describe_holder(holder)}: that process "
                            "is no longer running")
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                    continue
                raise ConvcliError(f"{self.dir} is in use by another `convcli train`: {describe_holder(holder)}; "
                                   f"wait for it to finish or choose another --out (lock file {self.path})") from None
            except OSError as exc:
                raise self._cannot(exc) from None
            os.write(fd, (json.dumps(self._info()) + "\n").encode())
            self.fd = fd
            return note
        raise ConvcliError(f"{self.path}: cannot take the lock")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


# --- output: writable, room for the checkpoints ------------------------------------------------------

def checkpoint_bytes(params: int, optimizer: str, lookahead: bool) -> int:
    """About the size of one checkpoint: fp32 weights, the optimizer's state and the lookahead copy."""
    copies = 1 + OPTIMIZER_SLOTS.get(optimizer, 2) + (1 if lookahead else 0)
    return params * 4 * copies + (64 << 10)


def check_output(run_dir: Path, need: int, what: str) -> None:
    """The run directory takes a file and has `need` bytes free (refused with exit 2 otherwise)."""
    probe = run_dir / f".write-test.{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"convcli")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ConvcliError(f"{run_dir}: cannot write the run directory: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConvcliError(f"{run_dir}: not enough free space: {what} need about {human_bytes(need)}, "
                           f"the disk has {human_bytes(free)} free")


# --- memory ------------------------------------------------------------------------------------------

def available_ram() -> int | None:
    """Bytes of RAM available to a new allocation (psutil when installed, else /proc/meminfo MemAvailable)."""
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory(device) -> tuple[int, str] | None:
    """(bytes, where the number comes from) the training may use on `device`; None when unknown."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    if device.type == "cpu":
        ram = available_ram()
        return (ram, "of RAM available") if ram is not None else None
    return None


def memory_estimate(analysis, batch_size: int, optimizer: str, lookahead: bool, amp: bool,
                    eval_batch: int) -> dict:
    """Bytes for training the analysed network: parameters with their gradients, optimizer state and
    lookahead copy, plus the larger of the activations of a training batch (every layer row's output kept
    for the backward pass, ×ACTIVATION_FACTOR, and the gradients of the largest layer in flight) and of an
    evaluation batch (forward only, no graph kept: the largest layer's input and output).

    It is meant to refuse what cannot fit (a network 10× too large), not to predict the peak exactly: it
    ignores workspace and allocator slack, and a network near the limit may still run out of memory."""
    params = analysis.params
    param_bytes = params * 4 * (2 + OPTIMIZER_SLOTS.get(optimizer, 2) + (1 if lookahead else 0))
    elem = 2 if amp else 4
    layers = analysis.layers
    per_image = sum(math.prod(r.out_shape) for r in layers if r.out_shape)
    largest = max((math.prod(r.in_shape or (0,)) + math.prod(r.out_shape or (0,)) for r in layers), default=0)
    train_act = batch_size * (per_image * ACTIVATION_FACTOR + largest) * elem
    eval_act = eval_batch * largest * elem
    activations = max(train_act, eval_act)
    return {"total": param_bytes + activations, "params": param_bytes, "activations": activations,
            "batch": batch_size, "per_image": train_act // max(batch_size, 1)}


def check_memory(analysis, device, batch_size: int, optimizer: str, lookahead: bool, amp: bool,
                 eval_batch: int) -> dict:
    """Refuse (exit 2) a network whose estimated training memory exceeds what `device` has."""
    est = memory_estimate(analysis, batch_size, optimizer, lookahead, amp, eval_batch)
    have = available_memory(device)
    est["limit"] = have[0] if have else None
    if have and est["total"] > have[0]:
        hint = (f"; a smaller --batch-size shrinks the activations (about {human_bytes(est['per_image'])} per "
                "image)" if est["activations"] > est["params"] else "")
        raise ConvcliError(
            f"{analysis.spec.file if analysis.spec is not None else analysis.source}: this network does not fit "
            f"in memory for training on {device}: about {human_bytes(est['total'])} needed "
            f"({human_bytes(est['params'])} for {analysis.params:,} parameters with their gradients and optimizer "
            f"state, {human_bytes(est['activations'])} for the activations of a batch of {batch_size}), "
            f"{human_bytes(have[0])} {have[1]}{hint}")
    return est


# --- signals -----------------------------------------------------------------------------------------

class StopRequest:
    """SIGINT and SIGTERM while training (`armed`): the first asks the loop to stop after the current step
    (`requested`), a second one raises KeyboardInterrupt at once. While `finishing` (summary.json and
    curves.png after the last step, a second or two) a signal only marks the run `late`: it quits once they
    are written, saying what last.pt holds. Unarmed (setup, data loading) a signal raises KeyboardInterrupt
    at once. Handlers are installed only in the main thread and restored on exit."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, quiet: bool = False):
        self.quiet = quiet  # a distributed run's other ranks: rank 0 says it
        self.requested = False
        self.armed = False
        self.finishing = False
        self.late = False
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        if self.finishing:
            self.late = True
            if not self.quiet:
                sys.stderr.write(f"\n{signal.Signals(signum).name}: writing the summary, then quitting\n")
                sys.stderr.flush()
            return
        if not self.armed or self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self.quiet:
            return
        sys.stderr.write(f"\n{self.signal_name}: stopping after this training step (or this epoch's evaluation) to "
                         "save a resumable checkpoint "
                         "(press Ctrl-C again to quit at once without saving)\n")
        sys.stderr.flush()

    def __call__(self) -> bool:
        return self.requested


# --- fault injection (tests) -------------------------------------------------------------------------

def fault_point(point: str, n: int | None = None) -> None:
    """CONVCLI_FAULT=SIGNAL@POINT sends SIGNAL (INT, TERM, KILL) to this process when training reaches POINT:
    `data` (setup, before the data loads), `step:N` (after global step N), `epoch:N` (after epoch N's
    checkpoints are written). The robustness tests use it to interrupt a run at an exact place."""
    spec = os.environ.get("CONVCLI_FAULT")
    if not spec:
        return
    sig, _, at = spec.partition("@")
    if at == (point if n is None else f"{point}:{n}"):
        os.kill(os.getpid(), getattr(signal, "SIG" + sig.upper().removeprefix("SIG")))


class Diverged(ConvcliError):
    """Training produced a non-finite loss or weights: the run stops (exit 1), nothing non-finite is saved."""

    exit_code = 1
