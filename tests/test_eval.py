"""`convcli eval`: the report's numbers agree with each other, figures are written, and weights that do not
fit the spec are refused with a clear message."""

from __future__ import annotations

import json

import torch

from convcli.errors import ConvcliError

pytest_plugins = ("conftest_data",)  # archive, data_cache, tiny_spec, trained_run, cli, cli_process

JSON_KEYS = {"spec", "weights", "accuracy", "loss", "per_class", "confusion", "classes", "tta", "n"}


def eval_json(cli, *args):
    result = cli("eval", *args, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output)


def test_json_report_is_self_consistent_and_figures_are_written(trained_run, cli, tmp_path):
    r = eval_json(cli, "--weights", trained_run / "best.pt", "--out", tmp_path)
    assert JSON_KEYS <= set(r)
    assert r["classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    confusion = torch.tensor(r["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == r["n"]
    assert r["accuracy"] == confusion.trace().item() / r["n"]
    for i, name in enumerate(r["classes"]):
        assert r["per_class"][name] == confusion[i, i].item() / confusion[i].sum().item()
    assert 0 < r["loss"] < 10
    assert r["tta"] is True  # by default as the run was evaluated (flip TTA is a training default)
    for name in ("confusion.png", "misclassified.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_flip_tta_is_reported_and_changes_the_result(trained_run, cli, tmp_path):
    plain = eval_json(cli, "--weights", trained_run / "best.pt", "--out", tmp_path, "--no-tta")
    tta = eval_json(cli, "--weights", trained_run / "best.pt", "--out", tmp_path, "--tta")
    assert tta["tta"] is True and plain["tta"] is False and tta["n"] == plain["n"]
    assert tta["loss"] != plain["loss"]


def test_table_report_names_every_class(trained_run, cli, tmp_path):
    result = cli("eval", "--weights", trained_run / "best.pt", "--device", "cpu", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    for name in ("accuracy", "confusion matrix", "airplane", "truck", "misclassified.png"):
        assert name in result.output


def test_weights_from_another_architecture_are_refused_with_a_clear_message(trained_run, tiny_spec, cli_process,
                                                                            tmp_path):
    wider = tmp_path / "wider.yaml"
    wider.write_text(tiny_spec.read_text().replace("out: 16", "out: 24"))
    result = cli_process("eval", wider, "--weights", trained_run / "best.pt", "--device", "cpu", "--out", tmp_path)
    assert result.returncode == 2
    assert "does not match" in result.stderr and "Traceback" not in result.stderr


def test_a_file_that_is_not_a_checkpoint_is_a_user_error(tiny_spec, cli, tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("hello")
    result = cli("eval", tiny_spec, "--weights", bogus)
    assert isinstance(result.exception, ConvcliError)
    assert "cannot load" in str(result.exception)


def test_csv_ends_with_the_whole_test_set_as_json_reports_it(trained_run, cli, tmp_path):
    import csv
    import io

    r = eval_json(cli, "--weights", trained_run / "best.pt", "--out", tmp_path, "--no-tta")
    result = cli("eval", "--weights", trained_run / "best.pt", "--out", tmp_path, "--no-tta", "--device", "cpu",
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [row["class"] for row in rows] == r["classes"] + ["all"]
    total = rows[-1]
    assert float(total["accuracy"]) == r["accuracy"] and float(total["loss"]) == r["loss"]
    assert int(total["images"]) == r["n"] == sum(int(row["images"]) for row in rows[:-1])
    assert int(total["correct"]) == sum(int(row["correct"]) for row in rows[:-1])


def test_a_run_directory_as_weights_suggests_its_checkpoint(trained_run, tiny_spec, cli_process):
    result = cli_process("eval", "--weights", trained_run, "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is a directory" in result.stderr and f"did you mean {trained_run / 'best.pt'}?" in result.stderr


def test_a_class_with_no_test_images_has_no_accuracy_not_zero(trained_run, cli, tmp_path):
    # 7 class-balanced test images cover 7 of the 10 classes: the other 3 have nothing to be right about.
    r = eval_json(cli, "--weights", trained_run / "best.pt", "--out", tmp_path, "--test-subset", "7")
    counts = torch.tensor(r["confusion"]).sum(1).tolist()
    assert sorted(counts) == [0, 0, 0] + [1] * 7
    for name, count in zip(r["classes"], counts):
        assert (r["per_class"][name] is None) == (count == 0)
    table = cli("eval", "--weights", trained_run / "best.pt", "--device", "cpu", "--out", tmp_path,
                "--test-subset", "7").output
    empty = next(name for name, count in zip(r["classes"], counts) if count == 0)
    assert next(line for line in table.splitlines() if line.startswith(empty)).split()[1] == "-"


def test_translate_tta_without_tta_is_refused_as_train_refuses_it(trained_run, cli, tmp_path):
    result = cli("eval", "--weights", trained_run / "best.pt", "--device", "cpu", "--out", tmp_path,
                 "--no-tta", "--tta-translate", "1")
    assert isinstance(result.exception, ConvcliError) and "needs --tta" in str(result.exception)
