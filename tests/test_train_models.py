"""Training and evaluating a PyTorch model like a spec; eval refusing a network that only looks the same;
the pictures of a trained run (`eval --erf / --filters / --activations`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest_plugins = ("conftest_data",)  # archive, data_cache, tiny_spec, short_run, trained_run, cli, cli_process
ROOT = Path(__file__).resolve().parent.parent
STUDENTS = ROOT / "tests" / "models" / "students.py"


@pytest.fixture(scope="module")
def model_run(tmp_path_factory, data_cache, archive, short_run, cli):
    run = tmp_path_factory.mktemp("runs") / "module"
    args = [a if a != str(short_run.epochs) else "2" for a in short_run.args]  # 2 epochs are enough here
    result = cli("train", f"{STUDENTS}:TinyTrainable", "--input", "3,32,32", "--data", archive, *args,
                    "--out", run)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run


def test_a_pytorch_model_trains_like_a_spec(model_run):
    summary = json.loads((model_run / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_done"] == 2
    # conv 3->16 (432 + BN 32), conv 16->32 (4,608 + 64), linear 32->10 (330): counted by hand
    assert summary["params"] == 432 + 32 + 4608 + 64 + 330
    assert summary["fingerprint"].startswith("v1:")
    spec_copy = yaml.safe_load((model_run / next(p.name for p in model_run.glob("*.yaml") if p.name != "args.yaml"))
                               .read_text())
    assert spec_copy["input"] == [3, 32, 32]  # the run keeps the network written as a spec, for reading


def test_eval_of_a_model_run_needs_no_spec_and_reproduces_the_accuracy(model_run, tmp_path, cli_process):
    r = cli_process("eval", "--weights", model_run / "best.pt", "--device", "cpu", "--json", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((model_run / "summary.json").read_text())
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(summary["best_acc"], abs=1e-9)


def test_eval_refuses_a_spec_whose_layers_differ_with_the_same_tensors(trained_run, tiny_spec, tmp_path,
                                                                       cli_process):
    # max-pool -> average pool and relu -> tanh change no tensor shape: the state_dict still loads, so only
    # the recorded fingerprint can tell; the message names the first differing layer.
    for old, new, where in (("maxpool: {k: 2}", "avgpool: {k: 2}", "layers[1]"), ("act: relu", "act: tanh",
                                                                                   "layers[0]")):
        other = tmp_path / "other.yaml"
        other.write_text(tiny_spec.read_text().replace(old, new, 1))
        r = cli_process("eval", other, "--weights", trained_run / "best.pt", "--device", "cpu", "--out", tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "different network" in r.stderr and where in r.stderr


def test_eval_draws_the_pictures_of_a_trained_run(trained_run, tiny_spec, tmp_path, cli_process):
    from convcli.visual._figure import png_size

    erf, filters = tmp_path / "erf.png", tmp_path / "filters.png"
    r = cli_process("eval", tiny_spec, "--weights", trained_run / "best.pt", "--device", "cpu", "--json", "--out",
                tmp_path, "--erf", erf, "--filters", filters, "--activations", "cifar10:3",
                "--data", trained_run_data(trained_run))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # The tiny spec's RF before GAP, by hand: 3, pool 4 (j 2), 8, pool 10 (j 4), 18.
    assert doc["erf"]["theoretical_rf"] == [18, 18]
    assert all(side <= 18 for sides in doc["erf"]["region95"] for side in sides)
    assert png_size(erf)[0] > png_size(erf)[1] and png_size(filters)[0] > 100
    assert len(doc["activations"]) >= 3 and all(Path(f).is_file() for f in doc["activations"])


def trained_run_data(run: Path) -> str:
    return yaml.safe_load((run / "args.yaml").read_text())["data"]
