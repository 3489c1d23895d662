"""The CLI as users meet it: exit codes, actionable errors, output formats, start-up without torch."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
S7 = str(ROOT / "tests" / "specs" / "s7_course.yaml")


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "convcli", *args], capture_output=True, text=True, cwd=cwd)


def write(tmp_path, text, name="bad.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# --------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("argv", [["--help"], ["rf", S7], ["rf", "--help"], ["train", "--help"], ["params", S7],
                                  ["inspect", S7], ["inspect", str(ROOT / "architectures" / "resnet50.yaml")]])
def test_torch_not_imported(argv):
    code = ("import sys; from convcli.cli import main; sys.argv = ['convcli', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)
    assert r.stderr.strip().endswith("NO-TORCH"), r.stderr


# --------------------------------------------------------------------------- errors: exit 2, file:line, no traceback


def assert_user_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)


def test_unknown_layer_type_suggests(tmp_path):
    f = write(tmp_path, "input: [3, 32, 32]\nlayers:\n  - conv: {out: 8}\n  - maxpol: {k: 2}\n")
    assert_user_error(run("rf", f), f"{f}:4", "layers[1]", "unknown layer type 'maxpol'", "did you mean 'maxpool'")


def test_unknown_key_suggests(tmp_path):
    f = write(tmp_path, "input: [3, 32, 32]\nlayers:\n  - conv: {out: 8, kernal: 3}\n")
    assert_user_error(run("rf", f), f"{f}:3", "layers[0].conv", "unknown key 'kernal'", "'kernel'")


def test_wrong_type(tmp_path):
    f = write(tmp_path, "input: [3, 32, 32]\nlayers:\n  - conv: {out: many}\n")
    assert_user_error(run("rf", f), f"{f}:3", "'out' has the wrong type", "expected: an integer")


@pytest.mark.parametrize("text, line, pieces", [
    ("input: [3, 32, 32]\nlayers:\n  - conv: {out: \"16\"}\n", 3,
     ['got: "16" (text; numbers are written without quotes)']),
    ("input: [3, 32]\nlayers:\n  - conv: {out: 4, k: [3, 3]}\n", 3,
     ["2 values, but the input has 1 spatial axis", "got: [3, 3]"]),
    ("- conv: {out: 4}\n", 1, ["a spec must be a mapping", "got: a list (the layers go under `layers:`)"]),
    ("input: [3, 8, 8]\nlayers:\n  - relu\n  - conv: {out: 4, k: 3,\n           k: 5}\n", 5,
     ["layers[1].conv: duplicate key 'k'"]),
    ("input: [3, 8, 8]\nlayers:\n  - conv: {out: 16, k: 3]\n", 3,
     ["the '{' opened on this line (column 11) is still open at this ']': close it with '}'"]),
    ("input: [3, 8, 8]\nlayers:\n  - depthwise: {out: 8, k: 3}\n", 3,
     ["a depthwise conv keeps the channel count", "write dwsconv"]),
    ("input: [3, 8, 8]\nlayers:\n  - conv: {in_channels: 3, out: 8}\n", 3,
     ["unknown key 'in_channels' for 'conv': input channels and features come from the previous layer"]),
    ("input: [3, 8, 8]\nlayers:\n  - conv: {out: 8}\n  - batchnorm: {num_features: 8}\n", 4,
     ["unknown key 'num_features' for 'batchnorm': input channels"]),
])
def test_error_texts_say_what_was_written(tmp_path, text, line, pieces):
    f = write(tmp_path, text)
    assert_user_error(run("rf", f), f"{f}:{line}", *pieces)


def test_yaml_syntax_error(tmp_path):
    f = write(tmp_path, "input: [3, 32, 32]\nlayers:\n  - conv: {out: 8\n  - gap: {}\n")
    assert_user_error(run("rf", f), f"{f}:", "YAML syntax error")


def test_kernel_larger_than_padded_input(tmp_path):
    f = write(tmp_path, "input: [1, 4, 4]\nlayers:\n  - conv: {out: 2, k: 3, p: 0}\n  - conv: {out: 2, k: 3, p: 0}\n")
    assert_user_error(run("rf", f), f"{f}:4", "layers[1].conv", "kernel does not fit", "k_eff = 3 <= n_in")


def test_channel_mismatch_at_residual_add(tmp_path):
    f = write(tmp_path, "input: [8, 8, 8]\nlayers:\n  - residual: {layers: [{conv: {out: 16}}], shortcut: identity}\n")
    assert_user_error(run("rf", f), f"{f}:3", "layers[0].residual.join", "equal shapes", "[16, 8, 8] vs [8, 8, 8]")


def test_spatial_mismatch_at_concat(tmp_path):
    f = write(tmp_path, "input: [4, 8, 8]\nlayers:\n  - concat: [[{conv: {out: 4}}], [{conv: {out: 4, p: 0}}]]\n")
    assert_user_error(run("rf", f), "layers[0].concat.join", "equal spatial sizes")


def test_linear_on_a_feature_map(tmp_path):
    f = write(tmp_path, "input: [4, 8, 8]\nlayers:\n  - linear: {out: 10}\n")
    assert_user_error(run("rf", f), "needs a flat vector", "flatten")


def test_unknown_block_variable(tmp_path):
    f = write(tmp_path, "input: [4, 8, 8]\nblocks:\n  b: [{conv: {out: $out}}]\nlayers:\n  - b: {out: 4, outt: 2}\n")
    assert_user_error(run("rf", f), "unknown key 'outt'", "'out'")


def test_empty_and_missing_files(tmp_path):
    assert_user_error(run("rf", "/dev/null"), "empty")
    assert_user_error(run("rf", str(tmp_path / "nope.yaml")), "no such file")


def test_usage_error_exits_2():
    r = run("rf", S7, "--format", "xml")
    assert r.returncode == 2 and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- output formats


def test_rf_json_has_documented_keys():
    r = run("rf", S7, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"spec", "input", "layers", "rf", "jump"} <= set(doc)
    for layer in doc["layers"]:
        assert {"name", "type", "n_in", "r_in", "j_in", "k", "s", "p", "d", "n_out", "r_out", "j_out"} <= set(layer)
    assert doc["input"] == [3, 32, 32]
    # s7: 3x3 convs, one dilated (spans 5), three 2x2 pools; the RF before GAP, by hand:
    # 1 +2 +2 (C1) +1 (pool, j=2) +4 +8 (dws, dilated) +2 (pool, j=4) +8 +8 (C3) +4 (pool, j=8) +16 +16 (C4) = 72
    assert doc["rf"] == 72 and doc["jump"] == 8


def test_params_json_and_several_specs(tmp_path):
    f = write(tmp_path, "name: tiny\ninput: [1, 5]\nlayers:\n  - conv: {out: 2, k: 3}\n", "tiny.yaml")
    r = run("params", S7, f, "--json")
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert isinstance(docs, list) and len(docs) == 2
    tiny = docs[1]
    assert {"spec", "total", "trainable", "macs", "size_mb", "layers"} <= set(tiny)
    # conv 1->2, k=3, bias: 2*1*3 + 2 = 8 params; 5 positions * 2 * 1 * 3 = 30 MACs
    assert tiny["total"] == 8 and tiny["macs"] == 30
    assert set(tiny["layers"][0]) >= {"name", "type", "output_shape", "params", "macs"}


def test_directory_and_glob_arguments(tmp_path):
    for n in ("a", "b"):
        write(tmp_path, f"name: {n}\ninput: [1, 5]\nlayers:\n  - conv: {{out: 2, k: 3}}\n", f"{n}.yaml")
    by_dir = json.loads(run("rf", str(tmp_path), "--json").stdout)
    by_glob = json.loads(run("rf", str(tmp_path / "*.yaml"), "--json").stdout)
    assert [d["name"] for d in by_dir] == [d["name"] for d in by_glob] == ["a", "b"]


def test_csv_and_markdown():
    r = run("params", S7, "--format", "csv")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["Layer", "Type", "Output shape", "Params", "MACs"]
    md = run("rf", S7, "--format", "markdown").stdout
    assert "| Layer |" in md and "RF (input px)" in md


def test_piped_table_is_plain_text():
    r = run("inspect", S7)
    assert r.returncode in (0, 1), r.stderr
    assert "\x1b[" not in r.stdout
    assert "179,146" in r.stdout  # thousands separators; total from torch


def test_explain_shows_arithmetic():
    out = run("rf", S7, "--explain").stdout
    assert "r_out = r_in + (k_eff-1)*j_in = 6 + (3-1)*2 = 10" in out
    assert "k_eff = d*(k-1)+1 = 2*(3-1)+1 = 5" in out


@pytest.mark.parametrize("n, k, s, p, worked", [
    (7, 2, 2, 0, "ceil((7 + 2*0 - 2)/2) + 1 = 4"),  # ceil(2.5) + 1: a last window over one column
    (5, 2, 2, 1, "ceil((5 + 2*1 - 2)/2) + 1 = 4, less the window that would start in the right padding = 3"),
])
def test_explain_of_a_ceil_mode_pool_uses_ceil_and_torchs_size(tmp_path, n, k, s, p, worked):
    import torch

    spec = tmp_path / "ceil.yaml"
    spec.write_text(f"input: [1, {n}, {n}]\nlayers:\n  - maxpool: {{k: {k}, s: {s}, p: {p}, ceil: true}}\n")
    out = " ".join(run("rf", str(spec), "--explain").stdout.split())  # as read, whatever the wrapping
    expected = torch.nn.MaxPool2d(k, s, p, ceil_mode=True)(torch.zeros(1, 1, n, n)).shape[-1]
    assert f"n_out = ceil((n_in + 2p - k_eff)/s) + 1 = {worked}" in out and worked.endswith(f"= {expected}")
    floor = torch.nn.MaxPool2d(k, s, p)(torch.zeros(1, 1, n, n)).shape[-1]
    assert "floor((" not in out
    assert ("ceil_mode" in run("rf", str(spec)).stdout) == (expected != floor)  # the table notes a rounded-up size


def test_uneven_same_padding_reads_left_plus_right_not_per_axis(tmp_path):
    # padding='same', k=4: 3 px in all, PyTorch puts 1 before and 2 after on each axis (F.pad order).
    spec = tmp_path / "same.yaml"
    spec.write_text("input: [1, 10, 10]\nlayers:\n  - conv: {out: 2, k: 4, p: same}\n")
    table = run("rf", str(spec)).stdout
    assert " 1+2 " in table and "1×2" not in table and "before (top/left)" in table
    row = list(csv.reader(io.StringIO(run("rf", str(spec), "--format", "csv").stdout)))[1]
    assert row[6] == "1+2"


# --------------------------------------------------------------------------- inspect + rules


def test_inspect_s7_passes_its_rules():
    r = run("inspect", S7, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["rules"] == "s7"
    assert all(set(c) == {"rule", "ok", "value", "limit", "message"} for c in doc["checks"])


def test_inspect_failing_rule_exits_1_and_names_it(tmp_path):
    text = Path(S7).read_text().replace("- conv: {out: 64, k: 3, p: 2, d: 2}", "- conv: {out: 64, k: 3, p: 1}")
    f = write(tmp_path, text, "no_dilation.yaml")
    r = run("inspect", f)
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "count(dilated)>=1" in r.stdout


def test_batch_summary_and_junit(tmp_path):
    import xml.etree.ElementTree as ET

    text = Path(S7).read_text()
    write(tmp_path, text, "alice.yaml")
    third_pool = "- maxpool: {k: 2}                         # 4x4, RF 40, jump 8"
    assert text.count(third_pool) == 1
    write(tmp_path, text.replace(third_pool, "- avgpool: {k: 2}"), "bob.yaml")
    write(tmp_path, "input: [3, 32, 32]\nlayers:\n  - conv: {out: 8, kk: 3}\n", "carol.yaml")
    report = tmp_path / "report.xml"
    r = run("inspect", str(tmp_path), "--junit", str(report))
    # carol's spec cannot be read: an ERROR row, the others still graded; bob's avgpool leaves 2 max-pools
    # (and an avgpool), so he fails count(maxpool)==3. Any FAIL or ERROR is exit 1 (2: every spec unreadable).
    assert r.returncode == 1, r.stderr
    assert "alice.yaml" in r.stdout and "bob.yaml" in r.stdout and "ERROR" in r.stdout
    assert "1 pass, 1 fail, 1 error" in r.stdout
    assert "unknown key 'kk'" in r.stderr
    suites = ET.parse(report).getroot().iter("testsuite")
    names = sorted(s.get("name") for s in suites)
    assert names == ["alice", "bob", "carol"]  # spec names, not absolute paths


def test_a_spec_without_rules_is_not_a_pass(tmp_path):
    # A grader who forgets --rules: specs with no rules: section are not graded, so not PASS.
    text = Path(S7).read_text()
    assert text.count("rules: s7") == 1
    write(tmp_path, text, "alice.yaml")
    write(tmp_path, text.replace("rules: s7", ""), "dave.yaml")
    r = run("inspect", str(tmp_path))
    [dave] = [line for line in r.stdout.splitlines() if "dave.yaml" in line]
    assert "NO RULES" in dave and "PASS" not in dave and "no rules to check" in r.stdout
    assert "1 pass, 0 fail, 0 error, 1 without rules (--rules NAME grades them" in r.stdout
    assert r.returncode == 0  # nothing failed; the tally says what was not graded


def test_block_that_uses_itself(tmp_path):
    f = write(tmp_path, "input: [3, 8, 8]\nblocks:\n  a: [{b: {}}]\n  b: [{a: {}}]\nlayers:\n  - a\n")
    assert_user_error(run("rf", f), f"{f}:4", "block 'a' uses itself (a → b → a)")


def test_runaway_repeat_is_refused_quickly(tmp_path):
    f = write(tmp_path, "input: [3, 8, 8]\nlayers:\n  - repeat: {times: 100000000, layers: [relu]}\n")
    assert_user_error(run("rf", f), "layers[0].repeat", "more than 100,000 layers")


def test_version_and_completion():
    import convcli

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"convcli {convcli.__version__}"
    env = {**os.environ, "_CONVCLI_COMPLETE": "complete_bash"}
    for words, cword, expected in (("convcli layers maxp", 2, "maxpool"), ("convcli inspect x --rules s7-", 4,
                                                                          "s7-strided"),
                                   ("convcli train --device cu", 3, "cuda")):
        script = Path(sys.executable).parent / "convcli"  # completion is keyed to the installed script's name
        out = subprocess.run([str(script)], capture_output=True, text=True, cwd=ROOT,
                             env={**env, "COMP_WORDS": words, "COMP_CWORD": str(cword)}).stdout.split()
        assert expected in out, (words, out)
