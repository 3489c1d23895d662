"""Fixtures for the training and evaluation tests (a pytest plugin: `pytest_plugins = ("conftest_data",)`):
the CIFAR-10 archive, a throw-away data cache, a tiny spec, `convcli` runners, and one short training run
that several tests inspect (trained once per session)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY_SPEC = """\
name: tiny
input: [3, 32, 32]
classes: 10
layers:
  - conv: {out: 16, k: 3, p: 1, bn: true, act: relu}
  - maxpool: {k: 2}
  - conv: {out: 32, k: 3, p: 1, bn: true, act: relu}
  - maxpool: {k: 2}
  - conv: {out: 64, k: 3, p: 1, bn: true, act: relu}
  - gap: {}
  - linear: {out: 10}
"""

# The short run: 2,000 training images, 3 epochs, tested on 2,000 test images (CPU, ~10-30 s).
EPOCHS = 3
SHORT_RUN = ["--subset", "2000", "--test-subset", "2000", "--epochs", str(EPOCHS), "--batch-size", "64",
             "--device", "cpu", "--seed", "0"]


def shared_archive() -> Path:
    """../shared/data/cifar10-jpeg.tar.gz (or $CONVCLI_SHARED_DATA); fails in CI when missing, else skips."""
    env = os.environ.get("CONVCLI_SHARED_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if env and path.is_dir():
        path = path / "cifar10-jpeg.tar.gz"
    if not path.is_file():
        message = f"the CIFAR-10 archive is missing: {path} (set CONVCLI_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


_memo: dict = {}


@pytest.fixture(scope="session")
def short_run():
    """The options of the short run, and what they imply."""
    from types import SimpleNamespace

    return SimpleNamespace(args=SHORT_RUN, epochs=EPOCHS, subset=2000, test_subset=2000, batch_size=64)


@pytest.fixture(scope="session")
def cli():
    return invoke


@pytest.fixture(scope="session")
def cli_process():
    return run_cli


@pytest.fixture(scope="session")
def archive() -> Path:
    return shared_archive()


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory, archive):
    """A fresh CONVCLI_CACHE for the whole session; records how long the first (decoding) load took."""
    if "cache" not in _memo:
        import time

        from convcli.train.data import load_data

        cache = tmp_path_factory.mktemp("convcli-cache")
        os.environ["CONVCLI_CACHE"] = str(cache)
        start = time.perf_counter()
        first = load_data(str(archive))
        _memo["cache"] = {"dir": cache, "first_seconds": time.perf_counter() - start, "first": first}
    os.environ["CONVCLI_CACHE"] = str(_memo["cache"]["dir"])
    return _memo["cache"]


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("specs") / "tiny.yaml"
    if not path.exists():
        path.write_text(TINY_SPEC)
    return path


def invoke(*args: str):
    """Run `convcli ARGS` in this process; returns typer's Result (output, exit_code, exception)."""
    from typer.testing import CliRunner

    from convcli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def run_cli(*args: str, cwd=None):
    """Run `python -m convcli ARGS` in a fresh process (the real error boundary, exit codes, stderr)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "convcli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=600)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_cache, archive, tiny_spec) -> Path:
    """The run directory of one uninterrupted short training run."""
    if "run" not in _memo:
        run = tmp_path_factory.mktemp("runs") / "short"
        result = invoke("train", tiny_spec, "--data", archive, *SHORT_RUN, "--out", run)
        assert result.exit_code == 0, result.output + repr(result.exception)
        _memo["run"] = run
    return _memo["run"]
