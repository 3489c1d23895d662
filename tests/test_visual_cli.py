"""`convcli rf --plot / --show / --empirical`: the command-line side of the pictures (the pictures'
numbers themselves are checked in test_visual.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STUDENTS = ROOT / "tests" / "models" / "students.py"


def run(*args):
    return subprocess.run([sys.executable, "-m", "convcli", *args], capture_output=True, text=True, cwd=ROOT)


def small_spec(tmp_path) -> Path:
    # Two 3x3 convs (p=1) then a 2x2 max-pool on 8x8, the pool labelled P.
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({"name": "small", "input": [1, 8, 8], "layers": [
        {"conv": {"out": 2}}, {"conv": {"out": 2}}, {"maxpool": {"k": 2, "name": "P"}}]}))
    return path


def test_plot_writes_a_png(tmp_path):
    from convcli.visual._figure import png_size

    out = tmp_path / "rf.png"
    r = run("rf", str(small_spec(tmp_path)), "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert png_size(out)[0] >= 1000 and f"wrote {out}" in r.stderr


def test_show_draws_the_box_of_one_unit(tmp_path):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.new("L", (8, 8), 128).save(image)
    out = tmp_path / "box.png"
    r = run("rf", str(small_spec(tmp_path)), "--show", str(image), "--layer", "P", "--unit", "1,1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    # By the recurrences: the convs keep start 0.5 (p = (k-1)/2); the pool moves it by ((2-1)/2 - 0) * 1 = 0.5
    # to 1.0; unit 1 is centred at 1.0 + 1*2 = 3.0, RF 6 (jump 2): the box is [3 - 3, 3 + 3) = [0, 6).
    assert "spans [0, 6) × [0, 6)" in r.stderr and out.exists()


def test_a_bad_unit_is_an_error_before_any_table_is_printed(tmp_path):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.new("L", (8, 8), 128).save(image)
    # P's output map is 4x4 (8x8 pooled by 2): unit 9,9 is outside it.
    r = run("rf", str(small_spec(tmp_path)), "--show", str(image), "--layer", "P", "--unit", "9,9",
            "-o", str(tmp_path / "box.png"))
    assert r.returncode == 2 and "outside" in r.stderr and r.stdout == ""


def test_show_needs_a_layer(tmp_path):
    r = run("rf", str(small_spec(tmp_path)), "--show", "x.png")
    assert r.returncode == 2 and "--layer" in r.stderr


def test_empirical_column_for_a_spec(tmp_path):
    r = run("rf", str(small_spec(tmp_path)), "--empirical", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # Hand-worked: the centre units see 3, 5 and 6 pixels, all inside the 8x8 input.
    assert [layer["rf_measured"] for layer in doc["layers"]] == [3, 5, 6] and doc["empirical_ok"]
    table = run("rf", str(small_spec(tmp_path)), "--empirical")
    assert "RF measured" in table.stdout


def test_empirical_for_a_pytorch_model():
    r = run("rf", f"{STUDENTS}:S7Student", "--input", "3,32,32", "--empirical", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["empirical_ok"] and not any(layer["rf_mismatch"] for layer in doc["layers"] if "rf_mismatch" in layer)


def test_pictures_take_one_spec(tmp_path):
    r = run("rf", str(small_spec(tmp_path)), str(small_spec(tmp_path).with_name("small.yaml")), "architectures/s7.yaml",
            "--plot", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "one spec" in r.stderr
