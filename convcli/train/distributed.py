"""Training on several processes: torch.distributed DistributedDataParallel, launched by `--nproc N` or torchrun.

`convcli train ... --nproc N` starts N copies of the same command through torch.distributed's elastic
launcher, the machinery behind `torchrun --standalone --nproc-per-node N`; `torchrun ... -m convcli train`
(one node or several, with torchrun's rendezvous options) reaches the same code through the environment
(RANK, WORLD_SIZE, LOCAL_RANK). Each process is a rank:

- gloo on the CPU, NCCL on CUDA (rank r uses cuda:LOCAL_RANK);
- every rank holds the whole dataset and the same seeded generator. It draws the same permutation and the
  same augmentation numbers for the whole global batch, and keeps its own slice (`DeviceLoader` with a
  `shard`): the images a run sees, and how they are augmented, do not depend on the number of ranks;
- `--batch-size` is the global batch: each of N ranks computes B/N images a step, DDP averages the gradients;
- the metrics are summed over the ranks (`Dist.all_sum`); precise BN splits its batches between the ranks
  and merges the statistics (without it, the ranks' moving averages are averaged) before each evaluation;
  each rank evaluates its part of the test set;
- only rank 0 writes the run directory (lock, checkpoints, metrics) and prints; every rank reads last.pt
  to resume, so a multi-node run needs its run directory on a shared file system.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from dataclasses import dataclass

import torch

from convcli.errors import ConvcliError, report


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size, local rank, and the process group's backend
    (None: a single process, where every collective is the identity)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self) -> tuple[int, int]:
        """(index, count) of this rank's slice of every batch."""
        return self.rank, self.world

    def all_sum(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The tensors summed over the ranks (in place; returned for convenience)."""
        if self.active:
            import torch.distributed as dist

            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return list(tensors)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (a stop request, a failure seen by one rank). Asked
        after every training step, so the flag travels as a CPU tensor (gloo): no wait for the GPU's queue."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        self.all_sum(t)
        return bool(t.item())


SINGLE = Dist()
SHUTDOWN_SECONDS = 15  # after a rank fails or a SIGTERM: time the others get to finish a step and save
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def in_launched_process() -> bool:
    """True inside a process started by torchrun or `--nproc` (its rank and world are in the environment)."""
    return all(k in os.environ for k in ENV)


def from_env() -> Dist:
    """This process's rank and world from the environment torchrun sets (a single process without it)."""
    if not in_launched_process():
        return SINGLE
    rank, world, local = (int(os.environ[k]) for k in ENV)
    return Dist(rank, world, local, None)


def join(dist_info: Dist) -> Dist:
    """Join the process group first of all, before any rank can fail alone, so that a failure (rank 0's run
    directory is taken, say) reaches every rank through `on_main` instead of leaving them waiting in the
    rendezvous. gloo for CPU tensors, plus NCCL for CUDA tensors when CUDA is present."""
    if not dist_info.active:
        return dist_info
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return dist_info


def init(dist_info: Dist, device: torch.device) -> Dist:
    """The training device is known: check it and name the backend its collectives use (gloo / NCCL)."""
    if not dist_info.active:
        return dist_info
    if device.type not in ("cpu", "cuda"):
        raise ConvcliError(f"--device {device.type}: distributed training runs on cpu or cuda")
    join(dist_info)
    return Dist(dist_info.rank, dist_info.world, dist_info.local_rank, "nccl" if device.type == "cuda" else "gloo")


def on_main(dist_info: Dist, work, share=lambda result: result):
    """Run `work()` on rank 0 only (claiming the run directory, say) and give every other rank `share(result)`.
    When it fails on rank 0, rank 0 re-raises and the others exit quietly with the same code (rank 0 prints)."""
    if not dist_info.active:
        return work()
    import torch.distributed as dist

    def everyone_has_said_why():  # a barrier over CPU tensors, so on gloo even in a "cpu:gloo,cuda:nccl" group
        dist.all_reduce(torch.zeros(1))

    box: list = [None]
    if dist_info.main:
        try:
            result = work()
        except ConvcliError as exc:
            box[0] = ("error", exc.exit_code)
            dist.broadcast_object_list(box, src=0)
            if not os.environ.get("CONVCLI_DEBUG"):  # (with it, the error boundary re-raises instead)
                report(exc)  # now: once a rank has exited, torchrun may stop this one before it prints
            everyone_has_said_why()  # before rank 0 exits: torchrun stops the other ranks once one has failed
            raise
        box[0] = ("ok", share(result))
        dist.broadcast_object_list(box, src=0)
        return result
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        print(f"rank {dist_info.rank}: stopping with rank 0's exit code {value} (rank 0 says why)", file=sys.stderr,
              flush=True)
        everyone_has_said_why()
        raise SystemExit(value)
    return value


def shutdown(dist_info: Dist) -> None:
    if dist_info.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def rank_device(device: torch.device, dist_info: Dist) -> torch.device:
    """Rank r of a CUDA run uses the GPU numbered by its local rank (one GPU per process)."""
    if dist_info.active and device.type == "cuda":
        count = torch.cuda.device_count()
        if dist_info.local_rank >= count:
            raise ConvcliError(f"local rank {dist_info.local_rank} needs cuda:{dist_info.local_rank}, but this node "
                               f"has {count} CUDA device{'s' if count != 1 else ''}: start at most {count} "
                               "processes per node")
        torch.cuda.set_device(dist_info.local_rank)
        return torch.device("cuda", dist_info.local_rank)
    return device


def check_process_count(nproc: int | None) -> None:
    """`--nproc` inside a launched process: fine when it says what the launcher did (the copies `--nproc`
    starts carry it), a mistake when it asks for something else (torchrun and --nproc together)."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if nproc is not None and local is not None and nproc != int(local):
        raise ConvcliError(f"--nproc {nproc}: this process was started by torchrun with {local} per node; "
                           "give the process count to torchrun only (--nproc-per-node), not --nproc")


def watch_launcher(interval: float = 1.0):
    """If the launcher dies (kill -9 of `convcli train --nproc`, a lost torchrun), ask this rank to stop as a
    SIGTERM would: the ranks agree to stop after the step and rank 0 saves a resumable last.pt, instead of
    training on as orphans that hold the run's lock. Returns the function that ends the watch: call it
    before the process exits (a daemon thread waking up during interpreter shutdown can abort the process)."""
    import signal
    import threading

    parent, done = os.getppid(), threading.Event()

    def watch():
        while not done.wait(interval):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="convcli-launcher-watch", daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join()

    return stop


def check_devices(device: torch.device, nproc: int) -> None:
    """Before launching: one GPU per process on CUDA, and a device torch.distributed supports."""
    if device.type not in ("cpu", "cuda"):
        raise ConvcliError(f"--nproc {nproc}: distributed training runs on cpu or cuda, not {device.type}")
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        count = torch.cuda.device_count()
        raise ConvcliError(f"--nproc {nproc} on CUDA needs one GPU per process; this machine has {count} "
                           f"(use --nproc {count}, or --device cpu)")


def check_batch(batch_size: int, dist_info: Dist, n_train: int | None = None) -> None:
    """The global batch splits evenly over the ranks, and (with n_train) the data holds one."""
    if not dist_info.active:
        return
    world = dist_info.world
    if batch_size % world:
        raise ConvcliError(f"--batch-size {batch_size} is the global batch and must divide evenly over the "
                           f"{world} processes (e.g. {batch_size - batch_size % world or world})")
    if n_train is not None and n_train < batch_size:
        raise ConvcliError(f"{n_train} training images are fewer than one global batch of {batch_size}: "
                           "lower --batch-size or raise --subset")


# --- launching ---------------------------------------------------------------------------------------

COMMAND_ENV = "CONVCLI_COMMAND"


def user_command() -> str:
    """The command line as the user typed it: a launched rank runs a rebuilt one (see worker_argv)."""
    return os.environ.get(COMMAND_ENV) if in_launched_process() and os.environ.get(COMMAND_ENV) else \
        " ".join(sys.argv)


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m convcli <argv>` as `nproc` processes on this node through the elastic launcher (what
    `torchrun --standalone --nproc-per-node N` does); returns the exit code (the first failed rank's)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _quiet_launcher_logs()
    if in_launched_process():
        raise ConvcliError("--nproc: this process was itself started by torchrun (RANK and WORLD_SIZE are set); "
                           "pass the process count to torchrun only")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[COMMAND_ENV] = user_command()  # args.yaml records what the user typed, not the ranks' argv
    # The ranks run in sessions of their own: Ctrl-C reaches the launcher only, and its agent sends each rank
    # SIGTERM, their first signal: they agree to stop after the step, rank 0 saves a resumable last.pt. The
    # agent waits SHUTDOWN_SECONDS for that (and after a rank fails, for the others) before killing them.
    # torch 2.11 (seen on a GPU machine) has no shutdown_timeout: there the agent's own default applies.
    grace = ({"shutdown_timeout": SHUTDOWN_SECONDS}
             if "shutdown_timeout" in {f.name for f in dataclasses.fields(LaunchConfig)} else {})
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          **grace)
    try:
        elastic_launch(config, sys.executable)("-m", "convcli", *argv)
    except ChildFailedError as exc:
        codes = [f.exitcode for _, f in sorted(exc.failures.items()) if f.exitcode]
        return next((c for c in codes if c > 0), 1)
    except SignalException as exc:  # Ctrl-C or SIGTERM: the ranks have stopped (and rank 0 said how)
        return 128 + int(exc.sigval)
    return 0


def _quiet_launcher_logs() -> None:
    """The agent logs each shutdown step and failure as warnings; rank 0 has already said what happened in
    words, so they are hidden unless CONVCLI_DEBUG is set."""
    import logging

    if os.environ.get("CONVCLI_DEBUG"):
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
