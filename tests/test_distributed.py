"""Distributed training (DDP over torch.distributed, gloo on the CPU): `--nproc N` and torchrun.

The design makes a distributed run compute what one process computes: every rank draws the same
permutation and augmentation numbers for the whole global batch and keeps its slice, DDP averages the
gradients of equal slices (= the gradient of the global batch's mean loss), and metrics are sums over the
ranks. So for a network without BatchNorm two processes must reproduce one process to float rounding; with
BN each rank normalises its half-batch, and the accuracy only has to stay close."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest_plugins = ("conftest_data",)

NO_BN_SPEC = """\
name: nobn
input: [3, 32, 32]
classes: 10
layers:
  - conv: {out: 8, k: 3, p: 1, s: 2, act: relu}
  - conv: {out: 16, k: 3, p: 1, s: 2, act: relu}
  - gap
  - linear: {out: 10}
"""
# 1,000 images, batch 100 (50 per rank), 2 epochs; fp32 so that both sides round alike; random flip and
# cutout on top of translate, so that every augmentation's draws are checked.
SMALL = ["--subset", "1000", "--test-subset", "500", "--epochs", "2", "--batch-size", "100", "--device", "cpu",
         "--no-amp", "--cutout", "8", "--no-alt-flip", "--seed", "0"]
BN_MARGIN = 0.03  # |accuracy(2 processes) - accuracy(1 process)| on 2,000 test images, BN nets (60 images)


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def assert_same_metrics(a: Path, b: Path, rel: float = 1e-5) -> None:
    ma, mb = metrics(a), metrics(b)
    assert len(ma) == len(mb) > 0
    for ra, rb in zip(ma, mb, strict=True):
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=rel, abs=1e-7), (k, ra, rb)


@pytest.fixture(scope="module")
def nobn_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dspecs") / "nobn.yaml"
    path.write_text(NO_BN_SPEC)
    return path


def convcli(*args, env_extra: dict | None = None, module: list[str] | None = None):
    from conftest_data import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, *(module or ["-m", "convcli"]), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def one_process(nobn_spec, archive, data_cache, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("d1") / "run"
    r = convcli("train", nobn_spec, "--data", archive, *SMALL, "--out", run)
    assert r.returncode == 0, r.stdout + r.stderr
    return run


@pytest.fixture(scope="module")
def two_processes(nobn_spec, archive, data_cache, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run = tmp_path_factory.mktemp("d2") / "run"
    r = convcli("train", nobn_spec, "--data", archive, *SMALL, "--out", run, "--nproc", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    return run, r


# --- the loader's shards (no processes) ----------------------------------------------------------------

def _loader(shard, **aug):
    from convcli.train.loader import DeviceLoader

    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (48, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(48) % 10
    return DeviceLoader(images, labels, [0.5] * 3, [0.25] * 3, 12, train=True, generator=g, shard=shard, **aug)


@pytest.mark.parametrize("aug", [dict(translate=2, flip=True, alt_flip=False, cutout=3),
                                 dict(translate=1, flip=True, alt_flip=True)])
def test_the_shards_of_every_training_batch_put_together_are_the_one_process_batch(aug):
    whole = _loader((0, 1), **aug)
    parts = [_loader((i, 3), **aug) for i in range(3)]
    for _ in range(2):  # two epochs: the alternating flip's parity changes
        batches = list(whole)
        shards = [list(p) for p in parts]
        assert len(batches) == 4 and all(len(s) == 4 for s in shards)
        for step, (x, y) in enumerate(batches):
            xs = torch.cat([s[step][0] for s in shards])
            ys = torch.cat([s[step][1] for s in shards])
            assert xs.shape[0] == 12 and torch.equal(ys, y) and torch.equal(xs, x)
        # every rank's generator moved exactly as one process's did: the next epoch agrees too
        assert all(torch.equal(p.generator.get_state(), whole.generator.get_state()) for p in parts)


def test_evaluation_shards_split_the_test_set_into_contiguous_parts():
    from convcli.train.loader import DeviceLoader

    images = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    labels = torch.arange(10)
    parts = [DeviceLoader(images, labels, [0.0], [1.0], 3, shard=(i, 3)) for i in range(3)]
    got = [torch.cat([y for _, y in p]).tolist() for p in parts]
    assert got == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_a_global_batch_that_does_not_split_evenly_is_refused_before_anything_starts(nobn_spec, archive,
                                                                                      tmp_path):
    r = convcli("train", nobn_spec, "--data", archive, "--batch-size", "100", "--nproc", "3",
                "--out", tmp_path / "run")
    assert r.returncode == 2
    assert "--batch-size 100 is the global batch and must divide evenly over the 3 processes" in r.stderr
    assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_each_launched_process_runs_the_same_command_line():
    from convcli.train.trainer import worker_argv

    argv = worker_argv("s.yaml", {"epochs": 3, "lr": 0.05, "amp": False, "tta": True, "nproc": 2}, None,
                       "runs/x", None, None, None)
    assert argv == ["train", "s.yaml", "--out", "runs/x", "--epochs", "3", "--lr", "0.05", "--no-amp", "--nproc",
                    "2", "--tta"]


# --- two gloo processes (the CI test) ----------------------------------------------------------------

def test_two_processes_train_what_one_process_trains_without_batchnorm(one_process, two_processes):
    run, result = two_processes
    assert_same_metrics(one_process, run)
    args = (run / "args.yaml").read_text()
    assert "world_size: 2" in args and "nproc: 2" in args
    # the command as typed (the ranks run a rebuilt one, with --nproc moved among the options)
    command = yaml.safe_load(args)["command"]
    assert command.endswith(f"--out {run} --nproc 2"), command
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["n_train"] == 1000 and summary["n_test"] == 500
    # one run directory, written once: nothing beside it, one set of files, one report on stdout
    assert [p.name for p in run.parent.iterdir()] == ["run"]
    assert {"last.pt", "best.pt", "metrics.csv", "summary.json", "args.yaml", "nobn.yaml"} <= {
        p.name for p in run.iterdir()}
    assert result.stdout.count("completed 2 epochs") == 1
    assert "distributed: 2 processes (gloo), 50 images per process per step" in result.stdout


def test_a_distributed_run_resumes_as_a_distributed_run_and_ends_where_an_uninterrupted_one_does(
        nobn_spec, archive, data_cache, tmp_path, two_processes):
    run = tmp_path / "run"
    first = convcli("train", nobn_spec, "--data", archive, *SMALL, "--out", run, "--nproc", "2",
                    "--stop-after", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(metrics(run)) == 1
    again = convcli("train", "--resume", run)  # the process count comes from the run's args.yaml
    assert again.returncode == 0, again.stdout + again.stderr
    assert "launching 2 processes" in again.stdout
    assert_same_metrics(two_processes[0], run)


def test_torchrun_starts_the_same_training(nobn_spec, archive, data_cache, tmp_path, two_processes):
    run = tmp_path / "run"
    r = convcli("--standalone", "--nproc-per-node", "2", "-m", "convcli", "train", nobn_spec, "--data", archive,
                *SMALL, "--out", run, module=["-m", "torch.distributed.run"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_metrics(two_processes[0], run)
    assert "world_size: 2" in (run / "args.yaml").read_text()


def test_with_batchnorm_two_processes_stay_within_the_margin_and_precise_bn_merges_exactly(
        tiny_spec, archive, data_cache, trained_run, short_run, tmp_path):
    """The session's short single-process run against the same command on 2 processes (same global batch).
    The saved BN statistics must be what one process computes from the saved weights (precise BN on the
    same 4,096 images, split between the ranks and merged)."""
    import contextlib

    from convcli.build import build_from_file
    from convcli.train.data import load_data
    from convcli.train.loader import DeviceLoader, stratified_subset
    from convcli.train.loop import recalibrate_bn
    from convcli.train.runs import load_checkpoint

    run = tmp_path / "run"
    r = convcli("train", tiny_spec, "--data", archive, *short_run.args, "--out", run, "--nproc", "2", "--no-amp")
    assert r.returncode == 0, r.stdout + r.stderr
    one = json.loads((trained_run / "summary.json").read_text())["best_acc"]
    two = json.loads((run / "summary.json").read_text())["best_acc"]
    assert two > 0.25 and abs(two - one) <= BN_MARGIN, (one, two)

    ckpt = load_checkpoint(run / "last.pt")
    model, _ = build_from_file(tiny_spec)
    model.load_state_dict(ckpt["model"])
    model = model.to(memory_format=torch.channels_last)  # as trained: CPU BN rounds differently per format
    data = load_data(str(archive))
    idx = stratified_subset(data.train_y, short_run.subset, 0)
    loader = DeviceLoader(data.train_x[idx], data.train_y[idx], ckpt["mean"], ckpt["std"], 64, train=True,
                          generator=torch.Generator(), channels_last=True)
    batches = list(loader.calibration_batches(4096))
    assert len(batches) == 2  # 2,000 images: one batch of 1,000 per rank
    recalibrate_bn(model, batches, contextlib.nullcontext())
    merged = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    recalibrate_bn(model, batches[:1], contextlib.nullcontext())  # what rank 0 alone would have kept
    alone = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    for name, value in merged.items():
        saved = ckpt["model"][name]
        # float32 BN on the CPU in channels_last is good to ~1e-3 of the variance; a rank's own statistics
        # are farther off than that
        assert torch.allclose(value, saved, rtol=2e-3, atol=1e-4), name
        assert (alone[name] - saved).abs().max() > 5 * (value - saved).abs().max(), name


class ThreadRanks:
    """`world` ranks as threads, for the collectives' arithmetic: all_sum adds the ranks' tensors."""

    def __init__(self, world: int):
        import threading

        self.world, self.barrier, self.lock, self.box = world, threading.Barrier(world), threading.Lock(), {}

    def rank(self, r: int):
        ranks = self

        class D:
            active, main = True, r == 0

            def all_sum(self, *tensors):
                with ranks.lock:
                    for i, t in enumerate(tensors):
                        ranks.box[i] = ranks.box.get(i, 0) + t.clone()
                ranks.barrier.wait()
                for i, t in enumerate(tensors):
                    t.copy_(ranks.box[i])
                if ranks.barrier.wait() == 0:
                    ranks.box.clear()
                ranks.barrier.wait()
                return list(tensors)

        return D()


def test_merged_precise_bn_statistics_equal_one_process_over_all_the_batches():
    """Three ranks with 2, 1 and 1 of four calibration batches (sizes 5, 5, 5, 2): the merge weighs each
    rank's average by its batch count, as precise BN's cumulative average weighs each batch."""
    import contextlib
    import threading

    from convcli.train.loop import merge_bn_stats, recalibrate_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                              torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).double()
    batches = [torch.randn(n, 2, 6, 6, dtype=torch.float64) * 3 + 1 for n in (5, 5, 5, 2)]
    recalibrate_bn(net, batches, contextlib.nullcontext())
    want = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "tracked" in k}

    ranks, got = ThreadRanks(3), {}
    import copy

    def work(r):
        model = copy.deepcopy(net)
        mine = batches[r::3]
        recalibrate_bn(model, mine, contextlib.nullcontext())
        merge_bn_stats(model, len(mine), ranks.rank(r))
        got[r] = model.state_dict()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in range(3):
        for k, v in want.items():
            assert torch.allclose(got[r][k].double(), v.double(), rtol=1e-12, atol=1e-12), (r, k)


def test_under_torchrun_a_run_directory_taken_stops_every_rank_with_rank_0s_error(nobn_spec, archive, two_processes):
    """Rank 0 alone claims the run directory; it tells the others through the process group they joined
    first, and each of them says so and exits with rank 0's code 2 instead of waiting in the rendezvous;
    rank 0's message is printed once, before any rank exits. Once one rank has exited, torchrun stops the
    ranks still running: a rank caught on its way out by that SIGTERM reads -15 (never -9, which would mean
    it hung), and the one torchrun names as the root cause exited with code 2."""
    run, _ = two_processes
    r = convcli("--standalone", "--nproc-per-node", "2", "-m", "convcli", "train", nobn_spec, "--data", archive,
                *SMALL, "--out", run, module=["-m", "torch.distributed.run"])
    assert r.returncode != 0
    assert r.stderr.count("already holds a run") == 1
    assert "rank 1: stopping with rank 0's exit code 2" in r.stderr
    report = dict(re.findall(r"\brank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", r.stderr, re.S))  # torchrun's
    assert set(report) == {"0", "1"} and set(report.values()) <= {"2", "-15"}, r.stderr[-2000:]
    root = r.stderr.split("Root Cause", 1)[-1]
    assert re.search(r"exitcode\s*:\s*2\b", root), r.stderr[-2000:]


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through Linux's /proc")
def test_when_the_launcher_is_killed_the_ranks_save_a_resumable_checkpoint_and_stop(nobn_spec, archive,
                                                                                     data_cache, tmp_path):
    """kill -9 of `convcli train --nproc 2` leaves its ranks orphans: each notices its parent is gone, they
    agree to stop after the step, rank 0 writes last.pt and releases the run, and `--resume` continues it."""
    import contextlib
    import signal
    import time

    from conftest_data import ROOT

    run = tmp_path / "run"
    args = ["train", nobn_spec, "--data", archive, *SMALL, "--epochs", "2000", "--out", run, "--nproc", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "convcli", *map(str, args)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not (run / "metrics.csv").exists() or len(metrics(run)) < 1:  # training is under way
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended or never started"
            time.sleep(0.2)
        ranks = [p for c in _children(launcher.pid) for p in [c, *_children(c)]]
        ranks = [p for p in ranks if "convcli" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
        assert ranks, "no rank processes found under the launcher"
        launcher.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in ranks):
            assert time.monotonic() < deadline, "the ranks trained on after their launcher died"
            time.sleep(0.2)
    finally:  # whatever happened, leave no process of this run behind (the ranks have their own group)
        for pid in [launcher.pid, *ranks]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()
    done = len(metrics(run))
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == done  # saved at the step reached: state["partial"] holds it when mid-epoch
    again = convcli("train", "--resume", run, "--stop-after", done + 1)  # the lock was released
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(metrics(run)) == done + 1


def test_more_processes_than_cpu_cores_get_a_warning_before_the_launch(tiny_spec, monkeypatch, tmp_path):
    from rich.console import Console

    from convcli.train import distributed, trainer

    launched = []
    monkeypatch.setattr(distributed, "launch", lambda nproc, argv: launched.append(nproc) or 0)
    monkeypatch.setattr(trainer.os, "cpu_count", lambda: 2)
    console = Console(record=True, width=200)
    options = {"device": "cpu", "batch_size": 64}
    trainer._launch(4, str(tiny_spec), options, None, str(tmp_path / "run"), None, None, None, console)
    assert launched == [4] and "--nproc 4 on 2 CPU cores" in console.export_text()
    console = Console(record=True, width=200)
    trainer._launch(2, str(tiny_spec), options, None, str(tmp_path / "run2"), None, None, None, console)
    assert "CPU cores" not in console.export_text()
