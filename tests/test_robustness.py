"""Fault tests for the training and data side of issue 10, done for real on the CPU: two runs into one
directory, a stale lock, divergence, a read-only and a full output directory, Ctrl-C (SIGINT) at several
points and SIGKILL mid-epoch in a subprocess followed by --resume, bounded archives and images, a network
too large for memory, hostile archives and pickled checkpoints.

They train the tiny spec on a small PNG-only ImageFolder archive made here (10 classes, 320 training and
100 test images: 5 steps of 64 per epoch), so they need no shared data and run in well under a minute.
Interruptions at exact places use `CONVCLI_FAULT=SIGNAL@POINT` (the process sends itself a real signal when
training reaches POINT; see convcli/train/guard.py `fault_point`). docs/robustness.md lists every case."""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import pytest
import torch

from convcli.errors import ConvcliError

pytest_plugins = ("conftest_data",)  # tiny_spec, cli, cli_process

STEPS = 5  # steps per epoch: 320 images, batch 64
FAST = ["--epochs", "2", "--batch-size", "64", "--device", "cpu", "--seed", "0"]


# --- fixtures ----------------------------------------------------------------------------------------

def write_png_tree(root: Path, train: int = 32, test: int = 10, classes: int = 10) -> None:
    """An ImageFolder of 32x32 RGB PNGs: class c is a colour with noise (learnable, not trivially)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            base = np.array([25 * c, 255 - 25 * c, (80 * c) % 256], dtype=np.int16)
            for i in range(n):
                img = np.clip(base + rng.integers(-90, 90, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def png_data(tmp_path_factory):
    """A PNG-only dataset as a .tar.gz, and a throw-away data cache for this module's runs."""
    root = tmp_path_factory.mktemp("pngdata")
    write_png_tree(root / "data")
    archive = root / "png.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root / "data", arcname="data")
    before = os.environ.get("CONVCLI_CACHE")
    os.environ["CONVCLI_CACHE"] = str(root / "cache")
    yield archive
    if before is None:
        os.environ.pop("CONVCLI_CACHE", None)
    else:
        os.environ["CONVCLI_CACHE"] = before


@pytest.fixture(scope="module")
def reference(png_data, tiny_spec, tmp_path_factory):
    """One uninterrupted 2-epoch run (in this process): what every interrupted-and-resumed run must equal."""
    from conftest_data import invoke

    run = tmp_path_factory.mktemp("reference") / "run"
    result = invoke("train", tiny_spec, "--data", png_data, *FAST, "--out", run)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"{path.name}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def all_finite(ckpt: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values() if v.is_floating_point())


def train_process(tiny_spec, png_data, out, *extra, fault: str | None = None, background: bool = False):
    """`python -m convcli train` in a fresh process (optionally with CONVCLI_FAULT)."""
    from conftest_data import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CONVCLI_FAULT", None)
    if fault:
        env["CONVCLI_FAULT"] = fault
    cmd = [sys.executable, "-m", "convcli", "train", str(tiny_spec), "--data", str(png_data), *FAST, "--out", str(out),
           *map(str, extra)]
    if background:
        log = open(Path(out).parent / f"{Path(out).name}.log", "w")  # noqa: SIM115 - closed by the caller
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, text=True), log
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A small tmpfs at `path` when this machine lets us mount one (root in a container), else None."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        yield None
        return
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(where: Path) -> Path:
    filler = where / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


# --- 1. one process per run directory ----------------------------------------------------------------

def test_a_second_run_into_a_held_directory_is_refused_naming_the_holder(tiny_spec, png_data, cli, tmp_path):
    run = tmp_path / "shared"
    first, log = train_process(tiny_spec, png_data, run, "--epochs", "500", background=True)
    try:
        lock = run / "train.lock"
        deadline = time.time() + 120
        while not (lock.is_file() and lock.read_text().strip()) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert lock.is_file(), "the first run never took the lock"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname() and holder["started"]

        second = cli("train", tiny_spec, "--data", png_data, *FAST, "--out", run)
        assert isinstance(second.exception, ConvcliError) and second.exception.exit_code == 2
        message = str(second.exception)
        assert "in use by another `convcli train`" in message and f"PID {first.pid}" in message
        assert first.poll() is None  # the holder is untouched

        first.send_signal(signal.SIGINT)  # Ctrl-C at whatever point it reached: saves and releases
        assert first.wait(timeout=120) == 130
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    output = (tmp_path / "shared.log").read_text()
    assert "Traceback" not in output
    assert not lock.exists()  # released
    if (run / "last.pt").exists():  # it had reached a step: the checkpoint is resumable
        assert "convcli train --resume" in output
        assert torch.load(run / "last.pt", weights_only=True)["format"] == "convcli-train-v1"
    else:
        assert "nothing to resume" in output


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tiny_spec, png_data, cli, tmp_path):
    run = tmp_path / "stale"
    run.mkdir()
    pid = dead_pid()
    (run / "train.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                "started": "2026-01-01 00:00:00 +0000", "command": "convcli train"}))
    result = cli("train", tiny_spec, "--data", png_data, *FAST, "--epochs", "1", "--out", run)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"took over the stale lock {run / 'train.lock'} of PID {pid}" in result.output
    assert "no process holds it any more" in result.output
    assert not (run / "train.lock").exists()  # released at the end
    assert strict_json(run / "summary.json")["finished"] is True


def test_an_unreadable_lock_file_is_described_as_such():
    from convcli.train.guard import RunLock, describe_holder

    assert describe_holder(RunLock._parse("garbage{")) == \
        "an unknown process (the lock file holds 'garbage{', not convcli's record)"


def test_the_lock_is_released_when_setup_fails_and_an_empty_new_directory_is_removed(tiny_spec, cli, tmp_path):
    run = tmp_path / "never"
    result = cli("train", tiny_spec, "--data", tmp_path / "missing.tar.gz", *FAST, "--out", run)
    assert isinstance(result.exception, ConvcliError) and "no such file" in str(result.exception)
    assert not run.exists()


# --- 2. divergence -----------------------------------------------------------------------------------

def test_a_huge_lr_stops_the_run_with_exit_1_naming_epoch_and_step(tiny_spec, png_data, tmp_path):
    run = tmp_path / "nan"
    done = train_process(tiny_spec, png_data, run, "--lr", "1e6")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "training diverged at" in done.stderr and "epoch 1" in done.stderr and "step " in done.stderr
    assert "lower --lr" in done.stderr and "Traceback" not in done.stderr
    assert "e.g. 0.1)" in done.stderr  # SGD's default, not a tenth of 1e6 (which diverges too)
    for name in ("best.pt", "last.pt"):  # nothing non-finite is ever saved
        if (run / name).exists():
            assert all_finite(torch.load(run / name, weights_only=True))
    summary = strict_json(run / "summary.json")
    assert summary["finished"] is False and summary["stop_reason"].startswith("diverged")


def test_weights_turning_non_finite_mid_run_keep_the_last_good_checkpoint(tiny_spec, png_data, cli, tmp_path,
                                                                          monkeypatch):
    """A step after a good epoch 1 makes a weight infinite (as an overflowing update would): the next step's
    loss is NaN, the run stops naming epoch 2 and its step, and last.pt/best.pt still hold epoch 1."""
    from convcli.train import loop

    real = loop.train_step

    def poisoned(model, optimizer, schedule, *args, **kwargs):
        out = real(model, optimizer, schedule, *args, **kwargs)
        if schedule.step == STEPS + 2:  # epoch 2, step 2
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))
        return out

    monkeypatch.setattr(loop, "train_step", poisoned)
    run = tmp_path / "poisoned"
    result = cli("train", tiny_spec, "--data", png_data, *FAST, "--out", run)
    exc = result.exception
    assert isinstance(exc, ConvcliError) and exc.exit_code == 1, result.output + repr(exc)
    assert f"training diverged at epoch 2, step 3 of {STEPS}" in str(exc)
    assert "last.pt still holds epoch 1" in str(exc)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        assert ckpt["epoch"] == 1 and all_finite(ckpt)
    summary = strict_json(run / "summary.json")
    assert summary["epochs_done"] == 1 and summary["finished"] is False


@pytest.mark.parametrize("option", [("--lr", "inf"), ("--lr", "nan"), ("--weight-decay", "nan"),
                                    ("--label-smoothing", "nan"), ("--target-acc", "nan")])
def test_non_finite_options_are_refused_at_the_edge(option, tiny_spec, cli, tmp_path):
    result = cli("train", tiny_spec, *option, "--out", tmp_path / "run")
    assert isinstance(result.exception, ConvcliError), result.output
    assert f"{option[0]}: expected a finite number" in str(result.exception)
    assert not (tmp_path / "run").exists()


def test_summary_json_is_strict_with_non_finite_values_written_as_null(tmp_path):
    from convcli.train.runs import RunWriter

    RunWriter(tmp_path).summary({"loss": float("nan"), "nested": [float("inf"), 1.5], "ok": 2})
    assert strict_json(tmp_path / "summary.json") == {"loss": None, "nested": [None, 1.5], "ok": 2}


def test_eval_json_of_weights_with_nan_is_strict_json(reference, cli, tmp_path):
    ckpt = torch.load(reference / "best.pt", weights_only=True)
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][first].fill_(float("nan"))
    weights = tmp_path / "nan.pt"
    torch.save(ckpt, weights)
    result = cli("eval", reference / "tiny.yaml", "--weights", weights, "--json", "--device", "cpu",
                 "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(result.output, parse_constant=lambda name: pytest.fail(f"non-standard JSON {name}"))
    assert report["loss"] is None


# --- 3. the output directory -------------------------------------------------------------------------

def chmod_protects(directory: Path) -> bool:
    """Whether mode 0o500 really stops this process writing into `directory` (not for root, as a rule)."""
    try:
        (directory / "probe").write_text("x")
    except OSError:
        return True
    (directory / "probe").unlink()
    return False


def test_a_read_only_output_directory_is_refused_before_training(tiny_spec, png_data, cli, tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    try:
        if chmod_protects(target):
            context = contextlib.nullcontext(target)
        else:  # root ignores the mode bits: a read-only mount is the real thing
            target.chmod(0o700)
            context = tmpfs(target, "1m", read_only=True)
        with context as mounted:
            if mounted is None:
                pytest.skip("chmod cannot make a directory read-only here (root) and no tmpfs can be mounted")
            for out in (target, target / "run"):
                start = time.perf_counter()
                result = cli("train", tiny_spec, "--data", png_data, *FAST, "--out", out)
                assert isinstance(result.exception, ConvcliError) and result.exception.exit_code == 2
                message = str(result.exception)
                assert "cannot" in message and ("Read-only file system" in message or "Permission denied" in message)
                assert time.perf_counter() - start < 10
    finally:
        target.chmod(0o700)


def test_a_full_disk_is_refused_before_training_with_the_space_needed(tiny_spec, png_data, cli, tmp_path):
    with tmpfs(tmp_path / "small", "256k") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (the mid-run test simulates a full disk instead)")
        result = cli("train", tiny_spec, "--data", png_data, *FAST, "--out", disk / "run")
        assert isinstance(result.exception, ConvcliError) and result.exception.exit_code == 2
        message = str(result.exception)
        assert "not enough free space" in message and "last.pt and best.pt" in message and "free" in message
        assert not (disk / "run").exists()


def test_the_disk_filling_up_mid_run_exits_2_and_keeps_the_last_checkpoint(tiny_spec, png_data, cli, reference,
                                                                           tmp_path, monkeypatch):
    """Epoch 1 is saved; then the disk fills (a real tmpfs filled to the last byte where mount works, else
    the checkpoint writer fails half-way with ENOSPC). Exit 2 with the file and the reason, last.pt still
    holds epoch 1 and no temporary file is left; after freeing space --resume finishes the run exactly."""
    from convcli.train import runs

    with tmpfs(tmp_path / "disk", "16m") as disk:
        root = disk or tmp_path / "disk"
        run = root / "run"
        filler = []
        if disk is not None:
            real_checkpoint = runs.RunWriter.checkpoint

            def checkpoint(self, name, state):
                real_checkpoint(self, name, state)
                if name == "best.pt" and state["epoch"] == 1:
                    filler.append(fill_disk(disk))

            monkeypatch.setattr(runs.RunWriter, "checkpoint", checkpoint)
        else:
            real_save = runs._torch_save
            calls = []

            def half_written(state, tmp):
                calls.append(tmp)
                if len(calls) == 3:  # epoch 2's last.pt
                    tmp.write_bytes(b"PK\x03\x04 half a checkpoint")
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                real_save(state, tmp)

            monkeypatch.setattr(runs, "_torch_save", half_written)
        result = cli("train", tiny_spec, "--data", png_data, *FAST, "--out", run)
        exc = result.exception
        assert isinstance(exc, ConvcliError) and exc.exit_code == 2, result.output + repr(exc)
        message = str(exc)
        assert "No space left on device" in message and "last.pt still holds epoch 1" in message
        assert f"--resume {run}" in message
        ckpt = torch.load(run / "last.pt", weights_only=True)
        assert ckpt["epoch"] == 1 and all_finite(ckpt)
        assert not list(run.glob(".*.tmp")) and not (run / "train.lock").exists()

        monkeypatch.undo()
        for f in filler:
            f.unlink()
        resumed = cli("train", "--resume", run)
        assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
        assert metrics(run) == metrics(reference)


# --- 4. Ctrl-C and SIGKILL ---------------------------------------------------------------------------

def test_sigint_while_loading_data_says_there_is_nothing_to_resume(tiny_spec, png_data, tmp_path):
    run = tmp_path / "early"
    done = train_process(tiny_spec, png_data, run, fault="INT@data")
    assert done.returncode == 130, done.stdout + done.stderr
    assert "nothing to resume" in done.stdout and "Traceback" not in done.stderr
    assert not run.exists()  # created for this run, empty, removed with its lock


@pytest.mark.parametrize("fault, said", [
    ("INT@step:3", "interrupted at epoch 1, step 3 of 5"),  # mid-epoch, in the first epoch
    ("INT@epoch:1", "interrupted after epoch 1"),  # between epochs
    ("TERM@step:7", "interrupted at epoch 2, step 2 of 5"),  # SIGTERM (a scheduler's preemption), mid-epoch
])
def test_sigint_saves_a_checkpoint_that_resumes_to_the_uninterrupted_result(fault, said, tiny_spec, png_data, cli,
                                                                           reference, tmp_path):
    run = tmp_path / "interrupted"
    done = train_process(tiny_spec, png_data, run, fault=fault)
    assert done.returncode == 130, done.stdout + done.stderr
    assert said in done.stdout and f"convcli train --resume {run}" in done.stdout
    assert "Traceback" not in done.stderr and not (run / "train.lock").exists()
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert all_finite(ckpt)
    summary = strict_json(run / "summary.json")
    assert summary["finished"] is False and summary["stop_reason"].startswith("interrupted")

    resumed = cli("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    assert metrics(run) == metrics(reference)
    assert strict_json(run / "summary.json")["finished"] is True


def test_a_second_sigint_quits_at_once():
    from convcli.train.guard import StopRequest

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the test runner was started in the background
    with StopRequest() as stop:
        with pytest.raises(KeyboardInterrupt):  # unarmed (setup): at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        stop.armed = True
        os.kill(os.getpid(), signal.SIGINT)  # training: asks to stop after the step
        time.sleep(0.01)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # again: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny_spec, png_data, cli, reference, tmp_path):
    run = tmp_path / "killed"
    done = train_process(tiny_spec, png_data, run, fault="KILL@step:7")  # epoch 2, step 2
    assert done.returncode == -signal.SIGKILL
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1  # what survived: epoch 1
    assert (run / "train.lock").exists()  # a dead process's lock ...

    resumed = cli("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    assert "took over the stale lock" in resumed.output  # ... is taken over
    assert metrics(run) == metrics(reference)


# --- 5. bounded data ---------------------------------------------------------------------------------

def huge_member_archive(path: Path, name: str, size: int) -> None:
    """A .tar.gz whose one member is `size` bytes of zeros, made of concatenated gzip members (each 64 MiB
    of zeros, compressed once): 4 GiB of member in about 4 MB of file, written in a fraction of a second."""
    chunk = 1 << 26
    assert size % chunk == 0
    info = tarfile.TarInfo(name)
    info.size = size
    zeros = gzip.compress(bytes(chunk), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(size // chunk):
            f.write(zeros)
        f.write(gzip.compress(bytes(1024)))  # the end-of-archive blocks


@pytest.mark.parametrize("name", ["data/train/cat/huge.jpg", "data/notes.bin"])
def test_an_archive_member_of_gigabytes_is_refused_from_its_header(name, tmp_path):
    from convcli.train.data import load_data

    archive = tmp_path / "bomb.tar.gz"
    huge_member_archive(archive, name, 4 << 30)
    assert archive.stat().st_size < 8 << 20
    start = time.perf_counter()
    with pytest.raises(ConvcliError, match=rf"archive member '{name}' is 4\.0 GiB; .* at most 16\.0 MiB"):
        load_data(str(archive))
    assert time.perf_counter() - start < 5  # inflating 4 GiB would take far longer


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height zeros (its IDAT is repeated full-flushed deflate blocks)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)
    rows = 1000
    assert height % rows == 0
    block = row * rows
    comp = zlib.compressobj(9)
    head = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block, adler)
    idat = head + head[2:] * (height // rows - 1) + b"\x03\x00" + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_png_of_40000_by_40000_pixels_is_refused_from_its_header(tmp_path):
    from convcli.train.data import load_data

    root = tmp_path / "bomb"
    write_png_tree(root, train=1, test=1, classes=2)
    blob = huge_png(40000, 40000)
    assert len(blob) < 1 << 20
    (root / "train" / "c0" / "0.png").write_bytes(blob)
    start = time.perf_counter()
    with pytest.raises(ConvcliError, match=r"train/c0/0\.png: the image is 40000x40000 pixels \(from its header\)"):
        load_data(str(root))
    assert time.perf_counter() - start < 5


def test_a_png_only_dataset_trains(reference):
    summary = strict_json(reference / "summary.json")
    assert summary["finished"] is True and summary["n_train"] == 320 and summary["n_test"] == 100
    assert summary["best_acc"] > 0.2  # well above chance (0.1)


@pytest.mark.parametrize("content, said", [(b"", "empty image file (0 bytes)"),
                                            (b"this is not a jpeg at all", "not a readable image")])
def test_an_empty_or_corrupt_image_names_its_archive_member(content, said, tmp_path):
    from convcli.train.data import load_data

    root = tmp_path / "tree"
    write_png_tree(root / "data", train=2, test=1, classes=2)
    (root / "data" / "train" / "c1" / "broken.jpg").write_bytes(content)
    archive = tmp_path / "broken.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root / "data", arcname="data")
    with pytest.raises(ConvcliError, match=r"broken\.tar\.gz: data/train/c1/broken\.jpg: " + re.escape(said)):
        load_data(str(archive))


def test_a_network_too_large_for_memory_is_refused_with_the_estimate(png_data, cli, tmp_path):
    spec = tmp_path / "huge.yaml"
    spec.write_text("name: huge\ninput: [3, 32, 32]\nclasses: 10\nlayers:\n"
                    "  - conv: {out: 1000000, k: 3, p: 1}\n  - gap: {}\n  - linear: {out: 10}\n")
    start = time.perf_counter()
    result = cli("train", spec, "--data", png_data, *FAST, "--out", tmp_path / "run")
    exc = result.exception
    assert isinstance(exc, ConvcliError) and exc.exit_code == 2, result.output + repr(exc)
    message = str(exc)
    assert "does not fit in memory for training on cpu" in message
    assert "needed" in message and "available" in message and "38,000,010 parameters" in message
    assert time.perf_counter() - start < 10  # refused from the analysis, before allocating
    assert not (tmp_path / "run").exists()


def test_a_conv_beyond_the_registry_caps_is_a_spec_error(cli, tmp_path):
    spec = tmp_path / "huger.yaml"
    spec.write_text("name: huger\ninput: [3, 32, 32]\nclasses: 10\nlayers:\n"
                    "  - conv: {out: 100000000, k: 3, p: 1}\n  - gap: {}\n  - linear: {out: 10}\n")
    result = cli("train", spec, "--out", tmp_path / "run")
    assert isinstance(result.exception, ConvcliError) and result.exception.exit_code == 2


@pytest.mark.parametrize("content, said", [
    ("hello\nthis is just text\n", "cannot load: this is a text file, not a PyTorch checkpoint"),
    ("name: tiny\ninput: [3, 32, 32]\nlayers: []\n", "cannot load: this is a YAML file (a spec? pass it as SPEC"),
])
def test_eval_weights_that_are_not_a_checkpoint_get_a_plain_message(content, said, tiny_spec, cli, tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_text(content)
    result = cli("eval", tiny_spec, "--weights", weights)
    assert isinstance(result.exception, ConvcliError) and result.exception.exit_code == 2
    message = str(result.exception)
    assert said in message
    assert "weights_only" not in message and "105" not in message and "101" not in message


# --- 6. hostile archives and pickled checkpoints -----------------------------------------------------

class Payload:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickled_checkpoint_never_runs_code(legacy, tiny_spec, cli, tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker)}, weights, _use_new_zipfile_serialization=not legacy)
    result = cli("eval", tiny_spec, "--weights", weights)
    assert isinstance(result.exception, ConvcliError)
    assert "never runs code" in str(result.exception) or "cannot load" in str(result.exception)
    assert not marker.exists()

    run = tmp_path / "run"  # the same file as a run's last.pt: --resume refuses it too
    run.mkdir()
    shutil.copy(weights, run / "last.pt")
    result = cli("train", "--resume", run)
    assert isinstance(result.exception, ConvcliError)
    assert not marker.exists()


def _hostile(kind: str, outside: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo("data/train/cat/0.jpg")
    if kind == "absolute":
        info.name = str(outside / "0.jpg")
    elif kind == "dotdot":
        info.name = "data/../../escape.jpg"
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
    elif kind == "device":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device", "fifo"])
def test_a_hostile_archive_member_is_refused_and_nothing_escapes(kind, tmp_path):
    from convcli.train.data import load_data

    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tmp_path / "hostile.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        ok = tarfile.TarInfo("data/train/cat/1.jpg")
        ok.size = 4
        tf.addfile(ok, io.BytesIO(b"data"))
        info = _hostile(kind, outside)
        if info.isfile():
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        else:
            tf.addfile(info)
    with pytest.raises(ConvcliError, match="refusing archive member"):
        load_data(str(archive))
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.jpg").exists()



def test_hidden_folders_and_files_are_not_classes_or_images(tmp_path, monkeypatch):
    # Jupyter's .ipynb_checkpoints/ and macOS's ._x.png sit beside real data; neither is a class or an image.
    from convcli.train.data import load_data

    monkeypatch.setenv("CONVCLI_CACHE", str(tmp_path / "cache"))
    write_png_tree(tmp_path / "data", train=2, test=1, classes=3)
    train = tmp_path / "data" / "train"
    (train / ".ipynb_checkpoints").mkdir()
    shutil.copy(train / "c0" / "0.png", train / ".ipynb_checkpoints" / "0.png")
    (train / "c1" / "._0.png").write_bytes(b"AppleDouble, not a PNG")
    data = load_data(str(tmp_path / "data"))
    assert data.classes == ["c0", "c1", "c2"] and len(data.train_y) == 6


def test_a_class_with_no_training_images_is_named_as_such(tmp_path, monkeypatch):
    from convcli.train.data import load_data

    monkeypatch.setenv("CONVCLI_CACHE", str(tmp_path / "cache"))
    write_png_tree(tmp_path / "data", train=2, test=1, classes=3)
    for f in (tmp_path / "data" / "train" / "c2").iterdir():
        f.unlink()
    with pytest.raises(ConvcliError, match=r"test classes with no training images: c2 \(train/c2/ is missing or empty"):
        load_data(str(tmp_path / "data"))


# --- 6. a run outlives its terminal and its data's old path --------------------------------------------

def test_a_moved_archive_is_found_from_anywhere_or_named_with_the_fix(tiny_spec, png_data, cli, reference, tmp_path,
                                                                      monkeypatch):
    """The run records its data's absolute path: a relative --data resumes from another directory; once the
    archive moves, resume says so and takes --data where it is now (the same labels), and eval follows."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    shutil.copy(png_data, here / "png.tar.gz")
    run = tmp_path / "run"
    monkeypatch.chdir(here)
    first = cli("train", tiny_spec, "--data", "png.tar.gz", *FAST, "--out", run, "--stop-after", "1")
    assert first.exit_code == 0, first.output + repr(first.exception)
    monkeypatch.chdir(tmp_path)  # elsewhere: png.tar.gz means nothing here
    shutil.move(here / "png.tar.gz", there / "png.tar.gz")
    moved = cli("train", "--resume", run)
    assert isinstance(moved.exception, ConvcliError) and "no longer there" in str(moved.exception)
    assert "--data" in str(moved.exception)
    resumed = cli("train", "--resume", run, "--data", there / "png.tar.gz")
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    assert metrics(run) == metrics(reference)
    import yaml

    assert yaml.safe_load((run / "args.yaml").read_text())["data_path"] == str(there / "png.tar.gz")
    evaluated = cli("eval", "--weights", run / "best.pt", "--out", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output + repr(evaluated.exception)


def test_other_data_is_not_taken_for_the_runs_own(tiny_spec, png_data, cli, tmp_path):
    other = tmp_path / "other"
    write_png_tree(other / "data", train=33)  # one more image a class: other labels
    run = tmp_path / "run"
    assert cli("train", tiny_spec, "--data", png_data, *FAST, "--out", run, "--stop-after", "1").exit_code == 0
    result = cli("train", "--resume", run, "--data", other / "data")
    assert isinstance(result.exception, ConvcliError) and "not the data this run was trained on" in str(
        result.exception)
    assert "it has 330 training and 100 test images; the run's had 320 and 100" in str(result.exception)
    # eval finds the run's data by its record: when that is other data, it says so (--data evaluates on it)
    import yaml

    args = yaml.safe_load((run / "args.yaml").read_text())
    (run / "args.yaml").write_text(yaml.safe_dump({**args, "data_path": str(other / "data")}))
    refused = cli("eval", "--weights", run / "last.pt", "--out", tmp_path / "eval")
    assert isinstance(refused.exception, ConvcliError) and "not the data" in str(refused.exception)
    asked = cli("eval", "--weights", run / "last.pt", "--data", other / "data", "--out", tmp_path / "eval")
    assert asked.exit_code == 0, asked.output + repr(asked.exception)


def test_a_spec_trained_at_another_input_resumes_and_evaluates_at_that_input(png_data, cli, tmp_path):
    from conftest_data import TINY_SPEC

    spec = tmp_path / "tiny16.yaml"
    spec.write_text(TINY_SPEC.replace("input: [3, 32, 32]", "input: [3, 16, 16]"))
    run = tmp_path / "run"
    first = cli("train", spec, "--input", "3,32,32", "--data", png_data, *FAST, "--out", run, "--stop-after", "1")
    assert first.exit_code == 0, first.output + repr(first.exception)
    import yaml

    assert yaml.safe_load((run / "args.yaml").read_text())["input"] == [3, 32, 32]
    resumed = cli("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    evaluated = cli("eval", spec, "--weights", run / "best.pt", "--out", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output + repr(evaluated.exception)


@pytest.mark.parametrize("merged", [False, True], ids=["stdout", "stdout-and-stderr"])
def test_closing_stdout_does_not_stop_the_run(merged, tiny_spec, png_data, tmp_path):
    """`convcli train ... | head -1` (and `2>&1 | head -1`, where the note cannot be written either): the pipe
    closes after the first line; the run goes on to its end and its summary agrees with metrics.csv (rich's
    default is to exit, which left `epochs_done: 0`)."""
    from conftest_data import ROOT

    run = tmp_path / "piped"
    cmd = [sys.executable, "-m", "convcli", "train", str(tiny_spec), "--data", str(png_data), *FAST, "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline()
    proc.stdout.close()
    err = "" if merged else proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    assert merged or "standard output was closed" in err and "Traceback" not in err
    summary = strict_json(run / "summary.json")
    assert summary["finished"] is True and summary["epochs_done"] == 2 == len(metrics(run))


def test_a_run_stopped_at_its_target_says_how_to_train_on(tiny_spec, png_data, cli, tmp_path):
    run = tmp_path / "target"
    first = cli("train", tiny_spec, "--data", png_data, *FAST, "--target-acc", "0.01", "--out", run)
    assert first.exit_code == 0 and "reached the target accuracy" in first.output
    again = cli("train", "--resume", run, "--epochs", "3")
    assert again.exit_code == 0 and "higher --target-acc" in again.output, again.output
    on = cli("train", "--resume", run, "--target-acc", "99")
    assert on.exit_code == 0, on.output + repr(on.exception)
    import yaml

    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["target_acc"] == 0.99 and len(metrics(run)) == 2  # the record says what it trains with now


def test_a_finite_loss_blowing_up_stops_the_run_as_diverged(tiny_spec, png_data, cli, tmp_path, monkeypatch):
    """--lr 50 on s7 reached a loss of 2.9e7 with accuracy at chance and went on to exit 0. A batch's mean
    loss over 100x chance level (100 ln 10 = 230) is divergence: exit 1, naming the step."""
    from convcli.train import loop

    real = loop.train_step

    def blown(model, optimizer, schedule, *args, **kwargs):
        loss, ok = real(model, optimizer, schedule, *args, **kwargs)
        return (loss * 0 + 1e6 if schedule.step == 3 else loss), ok  # a batch sum of 1e6: mean 15,625

    monkeypatch.setattr(loop, "train_step", blown)
    result = cli("train", tiny_spec, "--data", png_data, *FAST, "--out", tmp_path / "run")
    exc = result.exception
    assert isinstance(exc, ConvcliError) and exc.exit_code == 1, result.output + repr(exc)
    assert "diverged at epoch 1, step 3" in str(exc) and "1.562e+04" in str(exc) and "2.30" in str(exc)


def test_large_starting_logits_are_not_divergence(tiny_spec, png_data, cli, tmp_path):
    # --logit-scale 1000: a loss in the hundreds before any step (over 100x chance level), which a small LR
    # keeps there; the limit is also 100x the epoch's first step's, so this is not divergence
    result = cli("train", tiny_spec, "--data", png_data, *FAST, "--logit-scale", "1000", "--lr", "1e-4",
                 "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_a_bad_resume_option_gets_its_own_message(reference, cli):
    result = cli("train", "--resume", reference, "--epochs", "0")
    assert isinstance(result.exception, ConvcliError) and "--epochs" in str(result.exception)
    assert "not a resumable" not in str(result.exception)


def test_a_closed_stdout_is_not_a_crash(tmp_path):
    from conftest_data import ROOT

    done = subprocess.run(["sh", "-c", f"'{sys.executable}' -m convcli rf architectures/s7.yaml >&-"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_a_signal_while_the_summary_is_written_waits_for_it():
    from convcli.train.guard import StopRequest

    with StopRequest() as stop:
        stop.armed = stop.finishing = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.late and not stop.requested  # no KeyboardInterrupt in the middle of summary.json


@pytest.mark.parametrize("extra, says", [
    (["--cutout", "32"], "cutout: 32 px must be smaller than the image"),
    (["--test-subset", "99999"], "the test set has only 100 images"),
])
def test_options_beyond_the_data_are_refused(extra, says, tiny_spec, png_data, cli, tmp_path):
    result = cli("train", tiny_spec, "--data", png_data, *FAST, *extra, "--out", tmp_path / "run")
    assert isinstance(result.exception, ConvcliError) and says in str(result.exception), result.output


@pytest.mark.parametrize("extra, says", [
    (["--filters", "f.jpg"], "written as PNG"),
    (["--layer", "C2"], "pass --erf FILE.png too"),
    (["--erf", "e.png", "--layer", "Q9"], "no layer 'Q9'"),
    (["--activations", "cifar10:100"], "has 100 images (0 to 99)"),
])
def test_picture_option_mistakes_are_named_before_the_evaluation(extra, says, reference, cli, tmp_path):
    result = cli("eval", "--weights", reference / "best.pt", "--out", tmp_path / "eval", *extra)
    assert isinstance(result.exception, ConvcliError) and says in str(result.exception), result.output
    assert not (tmp_path / "eval" / "confusion.png").exists()


def test_a_non_finite_tensor_is_named_by_the_specs_layer(tiny_spec):
    from convcli.analysis import analyze_file
    from convcli.build import build_model
    from convcli.train.trainer import _layer_name

    a = analyze_file(tiny_spec)
    model = build_model(a)
    key = next(k for k in model.state_dict() if k.endswith("weight"))  # the first conv's, as torch names it
    assert _layer_name(model, key).startswith(a.layers[0].path + " (")
    assert _layer_name(torch.nn.Linear(2, 2), "weight") == "weight"  # a module without spec paths: torch's name


def test_a_distributed_resume_with_nothing_to_do_or_refused_launches_nothing(reference, cli):
    done = cli("train", "--resume", reference, "--nproc", "2")
    assert done.exit_code == 0 and "already finished" in done.output and "launching" not in done.output
    refused = cli("train", "--resume", reference, "--nproc", "2", "--lr", "0.5")
    assert isinstance(refused.exception, ConvcliError) and "--lr" in str(refused.exception)
    assert "launching" not in refused.output


def test_a_failed_cifar10_download_says_what_to_pass_and_leaves_no_empty_folder(monkeypatch, tmp_path):
    import torchvision.datasets

    from convcli.train.data import load_data

    def offline(root, train=True, download=False):  # torchvision makes the folder, then the request fails
        os.makedirs(root, exist_ok=True)
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setenv("CONVCLI_CACHE", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(ConvcliError, match="cannot download CIFAR-10.*pass --data PATH"):
        load_data("cifar10")
    assert not (tmp_path / "cifar10").exists()
