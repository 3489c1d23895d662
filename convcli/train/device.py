"""The training device: `--device` resolution, the autocast context and a timer that waits for the device."""

from __future__ import annotations

import contextlib
import re
import time

import torch

from convcli.errors import ConvcliError
from convcli.train.config import unknown_device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> torch.device:
    """auto → cuda, else mps, else cpu. Asking for a device this machine lacks is a user error (exit 2)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise ConvcliError(f"--device {name}: CUDA is not available on this machine: {why}; "
                               "use --device cpu (or auto)")
        index = int(m.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise ConvcliError(f"--device {name}: there {'is' if count == 1 else 'are'} only {count} CUDA "
                               f"device{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    if name == "mps":
        if not _mps_available():
            raise ConvcliError("--device mps: Apple MPS is not available on this machine; use --device cpu (or auto)")
        return torch.device("mps")
    raise ConvcliError("--device: " + unknown_device(name))


def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast roughly doubles
    the speed of a training step. Without it, bf16 is emulated and slower than fp32."""
    flags = _cpu_flags()
    if flags is not None:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    try:  # not Linux: ask oneDNN
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_FLAGS: list = []


def _cpu_flags() -> set | None:
    if not _FLAGS:
        flags = None
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
        _FLAGS.append(flags)
    return _FLAGS[0]


def amp_active(device: torch.device, amp: bool) -> bool:
    """bf16 autocast runs on CUDA, and on CPUs with native bf16, when `amp` is on."""
    return bool(amp and (device.type == "cuda" or (device.type == "cpu" and cpu_native_bf16())))


def autocast(device: torch.device, amp: bool):
    """bf16 autocast where it pays (see `amp_active`), else a no-op (nanoGPT's one-liner)."""
    if amp_active(device, amp):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device, channels_last: bool) -> bool:
    """channels_last (NHWC) memory format on CUDA and CPU when asked for (MPS: left alone)."""
    return bool(channels_last and device.type in ("cuda", "cpu"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Timer:
    """Wall-clock seconds that include the device's queued work: `with timer: ...` adds to `timer.seconds`."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self._start = device, 0.0, None

    def __enter__(self):
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start
        self._start = None
        return False

    def sync(self) -> None:
        synchronize(self.device)

    def now(self) -> float:
        """Seconds so far inside the current `with` block (without syncing: for progress displays)."""
        return self.seconds + (time.perf_counter() - self._start if self._start is not None else 0.0)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
