"""The PyTorch front-end: models traced with torch.fx give the analysis a spec of the same net gives.

References: torchvision's own models (parameter counts from `parameters()`, RF from the YAML example of
the same net and from the gradient-support check), and small student-style modules whose numbers are
worked by hand below."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import analyze_layers
from test_rf_empirical import ACTIVATIONS
from test_zoo import TORCHVISION

from convcli.analysis import analyze, analyze_file
from convcli.errors import ConvcliError
from convcli.rules import resolve_rules, run_checks
from convcli.torch_graph import trace_graph
from convcli.torch_load import parse_input

ROOT = Path(__file__).resolve().parent.parent
STUDENTS = ROOT / "tests" / "models" / "students.py"
sys.path.insert(0, str(STUDENTS.parent))
import students  # noqa: E402


def traced(model, shape=(3, 32, 32)):
    return analyze(trace_graph(model, shape, f"{type(model).__name__}"))


def rf(a):
    return [int(x.r) for x in a.rf_before_global()]


class HeadNet(torch.nn.Module):
    """conv 3->8 3x3, then `head` (the map to a vector, written as students write it), then linear -> 2:
    3*8*9 + 8 + 8*2 + 2 = 242 parameters."""

    def __init__(self, head, features=8):
        super().__init__()
        self.head = head
        self.c = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(features, 2)

    def forward(self, x):
        return self.fc(self.head(self.c(x)))


# --------------------------------------------------------------------------- torchvision, traced directly

ZOO = TORCHVISION  # the same references as test_zoo.py


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo(request):
    model = ZOO[request.param]()
    return request.param, model, traced(model, (3, 224, 224))


def test_traced_params_equal_torchs_own_count(zoo):
    name, model, a = zoo
    assert a.params == sum(p.numel() for p in model.parameters())


def test_stochastic_depth_is_a_dropout_and_efficientnet_is_counted_exactly():
    # torchvision's EfficientNet-B0 calls stochastic_depth in each residual block (identity at inference).
    # Its own parameter count, and its documented 0.39 GFLOPS (multiply-accumulates) at 224x224.
    import torchvision

    model = torchvision.models.efficientnet_b0()
    a = traced(model, (3, 224, 224))
    assert a.params == sum(p.numel() for p in model.parameters()) == 5_288_548
    assert round(a.macs / 1e9, 2) == 0.39
    # one stochastic depth per block with a skip connection (MBConv.use_res_connect), and the head's dropout
    skips = sum(getattr(m, "use_res_connect", False) for m in model.modules())
    assert skips == 9 and sum(r.facts.op == "dropout" for r in a.layers) == skips + 1


def test_traced_rf_and_macs_equal_the_yaml_example(zoo):
    name, _, a = zoo
    spec = analyze_file(ROOT / "architectures" / f"{name}.yaml")
    assert a.rf_before_global() == spec.rf_before_global()
    assert a.macs == spec.macs and a.output_shape == spec.output_shape == (1000,)


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_traced_rf_equals_gradient_support_for_sequential_nets(name):
    """Constant positive weights, max-pool as average, activations removed: the input pixels the centre
    unit before the classifier depends on are its RF, clipped to the 224-pixel image."""
    model = ZOO[name]().double().eval()
    a = traced(ZOO[name](), (3, 224, 224))
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, ACTIVATIONS):
                setattr(mod, child_name, torch.nn.Identity())
            elif isinstance(child, torch.nn.MaxPool2d):
                setattr(mod, child_name, torch.nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
    captured = {}
    model.features.register_forward_hook(lambda m, i, o: captured.__setitem__("y", o))
    x = torch.ones(1, 3, 224, 224, dtype=torch.float64, requires_grad=True)
    model(x)
    y = captured["y"]
    y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    support = x.grad[0].abs().sum(0) > 0
    measured = [int(support.any(1).sum()), int(support.any(0).sum())]
    expected = []
    for axis, u in zip(a.rf_before_global(), (y.shape[2] // 2, y.shape[3] // 2)):
        centre = axis.start + u * axis.j  # unit u's RF centre in input pixel coordinates
        expected.append(int(min(centre + axis.r / 2, 224) - max(centre - axis.r / 2, 0)))
    assert measured == expected
    assert rf(a) == {"alexnet": [195, 195], "vgg16": [212, 212]}[name]


def test_unused_auxiliary_heads_are_noted_not_counted():
    model = torchvision.models.googlenet(weights=None, init_weights=False)  # aux_logits=True by default
    a = traced(model, (3, 224, 224))
    assert a.params == 6_624_904 < sum(p.numel() for p in model.parameters())
    assert any("not use" in n for n in a.notes)


# --------------------------------------------------------------------------- student-style modules, by hand


def test_s7_student_by_hand():
    a = traced(students.S7Student())
    # conv 3->16 (432 + BN 32), conv 16->32 (4,608 + 64), depthwise 32 (288 + 64), pointwise 32->64
    # (2,048 + 128), dilated 64->64 (36,864 + 128), conv 64->128 (73,728 + 256), 1x1 head 128->10 (1,290)
    assert a.params == 119_930 == sum(p.numel() for p in students.S7Student().parameters())
    # RF: 3, 5, pool 6 (j 2); depthwise 10, pointwise 10, pool 12 (j 4); dilated k_eff 5: 12 + 4*4 = 28,
    # pool 32 (j 8); conv 32 + 2*8 = 48; MaxPool2d(1, 1) is an identity: 48. AvgPool2d(4) on the 4x4 map
    # is the GAP, so the RF before GAP is 48, not 48 + 3*8 = 72.
    assert rf(a) == [48, 48]
    assert a.first_global_row().path == "O.0"
    checks = {c.rule: c for c in run_checks(a, resolve_rules(None, "s7"))}
    assert checks["count(maxpool)==3"].value == 3  # the 1x1 pool is not a pool
    assert checks["rf>44"].ok and checks["rf>44"].value == 48
    assert checks["gap_before_classifier"].ok
    assert checks["count(depthwise_separable)>=1"].value == 1 and checks["count(dilated)>=1"].value == 1
    assert checks["structure"].ok and checks["params<1000000"].ok


@pytest.mark.parametrize("build, block", [
    (lambda: torchvision.models.efficientnet_b0(weights=None), "MBConv"),
    (lambda: torchvision.models.mobilenet_v3_small(weights=None), "InvertedResidual"),
])
def test_depthwise_se_pointwise_blocks_are_depthwise_separable(build, block):
    # each of torchvision's blocks is [1x1 expand,] depthwise, [SE gate,] 1x1 project: one pair per block,
    # the SE multiply between the depthwise and the 1x1 included (it scales channels, mixes nothing)
    from convcli.rules.kinds import depthwise_separable_rows

    model = build()
    blocks = sum(type(m).__name__ == block for m in model.modules())
    assert blocks in (16, 11)  # torchvision's own block counts (b0: 16 MBConv; v3-small: 11)
    assert len(depthwise_separable_rows(traced(model))) == blocks


def test_attributes_with_functional_calls_by_hand():
    a = traced(students.Attributes())
    # conv 3->8 (216 + 8), BN 16, conv 8->16 s2 (1,152 + 16), BN 32, linear 16->10 (170)
    assert a.params == 1_610
    assert rf(a) == [5, 5]  # 3, then 3 + 2*1 = 5 with jump 2
    assert [int(x.j) for x in a.rf_before_global()] == [2, 2]
    assert {r.facts.op for r in a.layers if r.type == "relu"} == {"act"}


def test_shared_conv_se_block_and_residual_by_hand():
    a = traced(students.SharedSEResidual())
    # conv 432 + BN 32; the shared conv 16*16*9 + 16 = 2,320 once; SE 1x1 convs 68 + 80; linear 170
    assert a.params == 3_102 == sum(p.numel() for p in students.SharedSEResidual().parameters())
    # x: RF 3; y: 5, then 7 through the same conv; add: max(3, 7) = 7; pool: 8 (j 2). The SE gate
    # multiplies a per-channel value back: the RF stays 8, and its x.mean is not the classifier's GAP.
    assert rf(a) == [8, 8]
    assert a.first_global_row().type == "adaptive_avg_pool2d"
    shared = [r for r in a.layers if r.module == "shared"]
    assert len(shared) == 2 and shared[1].shares == shared[0].path
    assert any("broadcast" in n for n in a.notes)


def test_a_shared_layers_later_uses_show_shared_so_the_rows_add_up():
    # The shared conv's 2,320 weights are counted once (at its first use); the table, CSV and JSON rows sum
    # to torch's own parameter count.
    from convcli.commands.common import totals
    from convcli.views import params_json, params_table

    model = students.SharedSEResidual()
    a = traced(model)
    torch_total = sum(p.numel() for p in model.parameters())
    doc = params_json(a, totals(a))
    assert sum(layer["params"] for layer in doc["layers"]) == torch_total == doc["total"]
    later = [layer for layer in doc["layers"] if "shares" in layer]
    assert later and all(layer["params"] == 0 for layer in later)
    table = params_table(a, totals(a))
    cells = [row["params"] for row, kind in zip(table.rows, table.kinds) if kind != "block"]
    assert sum(getattr(c, "raw", c) or 0 for c in cells) == torch_total
    assert sum(str(c) == "shared" for c in cells) == len(later)


def test_amax_over_the_spatial_axes_is_a_global_max_pool():
    a = traced(HeadNet(lambda t: t.amax((2, 3))), (3, 8, 8))  # no keepdim: [N, 8]
    assert tuple(a.output_shape) == (2,) and a.first_global_row() is not None


def test_mean_over_spatial_axes_is_gap():
    a = traced(students.MeanHead())
    assert a.params == 3 * 8 * 25 + 8 + 8 * 10 + 10
    assert a.first_global_row().facts.op == "global_pool" and rf(a) == [5, 5]


SE_SPEC = [
    {"conv": {"out": 16, "k": 3, "bias": False, "bn": True, "act": "relu"}},
    {"residual": {"shortcut": "identity", "layers": [{"conv": {"out": 16, "k": 3, "act": "relu", "name": "shared"}},
                                                     {"reuse": "shared"}]}},
    {"maxpool": {"k": 2}},
    {"mul": {"branches": [[], [{"gap": {"keepdim": True}}, {"pointwise": {"out": 4, "act": "relu"}},
                               {"pointwise": {"out": 16, "act": "sigmoid"}}]]}},
    "gap",
    {"linear": {"out": 10}},
]


def test_the_same_net_as_a_spec_gives_the_same_analysis():
    spec = analyze_layers([3, 32, 32], SE_SPEC)
    a = traced(students.SharedSEResidual())
    assert spec.params == a.params == 3_102
    assert spec.rf_before_global() == a.rf_before_global()
    assert spec.macs == a.macs and spec.output_shape == a.output_shape
    rules = resolve_rules(None, "s7")
    def verdicts(x):  # the GAP rule's value is the layer's path, which differs between the two front-ends
        return {c.rule: (c.ok, c.value if isinstance(c.value, (int, float)) else None) for c in run_checks(x, rules)
                if c.rule != "structure"}

    assert verdicts(spec) == verdicts(a)


def test_gap_written_as_a_whole_map_average_pool_in_a_spec():
    a = analyze_layers([8, 4, 4], [{"conv": {"out": 8}}, {"avgpool": {"k": 4}}, "flatten", {"linear": {"out": 2}}])
    assert a.first_global_row().facts.op == "global_pool"
    assert rf(a) == [3, 3]  # the pool's window is not added: it is the GAP


def test_identity_pool_in_a_spec_is_not_a_pool():
    from convcli.rules.kinds import find

    a = analyze_layers([8, 8, 8], [{"maxpool": {"k": 2}}, {"maxpool": {"k": 1, "s": 1}}])
    assert len(find(a, "maxpool")) == 1 and len(find(a, "downsampling")) == 1


# --------------------------------------------------------------------------- the command line


def run(*args):
    return subprocess.run([sys.executable, "-m", "convcli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_inspects_a_model_file_with_rules():
    r = run("inspect", f"{STUDENTS}:S7Student", "--input", "3,32,32", "--rules", "s7", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["total"] == 119_930 and doc["rf"] == 48 and doc["ok"] is True


def test_cli_takes_a_factory_function_and_a_package_module():
    r = run("params", f"{STUDENTS}:make_attributes", "--input", "3,32,32", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == 1_610


def test_cli_needs_an_input_shape_for_a_model():
    r = run("rf", f"{STUDENTS}:S7Student")
    assert r.returncode == 2 and "--input" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("text, shape", [("3,32,32", (3, 32, 32)), ("3x32x32", (3, 32, 32)),
                                         (" 3, 32, 32 ", (3, 32, 32)), ("1,100", (1, 100))])
def test_input_shapes_are_read_by_hand(text, shape):
    assert parse_input(text, "m.py:Net") == shape


@pytest.mark.parametrize("text", ["3,x,32", "3,32,32,", "3,0,32", "3", "1,2,3,4,5", "3,32.5,32", ""])
def test_an_input_shape_with_a_bad_piece_is_an_error_not_a_shorter_shape(text):
    with pytest.raises(ConvcliError, match="--input"):
        parse_input(text, "m.py:Net")


def test_data_dependent_control_flow_is_exit_2_naming_the_module():
    r = run("rf", f"{STUDENTS}:Branchy", "--input", "3,8,8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Branchy" in r.stderr and "control flow" in r.stderr and "students.py:" in r.stderr


@pytest.mark.parametrize("name, module, line, reason", [
    ("WrongChannels", "d (Conv2d)", "return self.d(self.c(x))", "expected 16 input channels, got 8"),
    ("WrongFeatures", "fc (Linear)", "return self.fc(", "expected 100 input features, got 7200"),
])
def test_a_forward_that_fails_is_one_line_naming_module_line_and_mismatch(name, module, line, reason):
    r = run("inspect", f"{STUDENTS}:{name}", "--input", "3,32,32")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    [msg] = r.stderr.strip().splitlines()
    lines = STUDENTS.read_text().splitlines()
    start = lines.index(next(t for t in lines if t.startswith(f"class {name}(")))
    lineno = next(i for i in range(start, len(lines)) if line in lines[i]) + 1  # the forward's line
    assert f"students.py:{lineno}: {module}: {reason}" in msg


def test_api_summary_of_a_failing_forward_raises_the_same_sentence(capfd):
    from convcli import summary
    from convcli.errors import ConvcliError

    with pytest.raises(ConvcliError, match="d \\(Conv2d\\): expected 16 input channels, got 8"):
        summary(students.WrongChannels(), input_size=(3, 32, 32))
    assert capfd.readouterr().err == ""  # nothing printed behind the caller's back


def test_a_kernel_read_from_the_maps_size_is_a_global_pool():
    a = traced(students.GapBySize())
    assert a.params == 3 * 16 * 9 + 16 + 16 * 10 + 10 and a.first_global_row().type == "avg_pool2d"
    assert a.first_global_row().out_shape == (16, 1, 1)


@pytest.mark.parametrize("shape, says", [((3, 32), "has 1"), ((1, 3, 32, 32), "includes the batch axis")])
def test_an_input_of_the_wrong_rank_is_named_as_such(shape, says):
    with pytest.raises(ConvcliError, match="needs an input of 2 spatial axes") as exc:
        trace_graph(students.S7Student(), shape, "S7Student")
    assert says in str(exc.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_in_another_dtype_is_traced_in_it(dtype):
    assert traced(students.S7Student().to(dtype)).params == 119_930


def test_a_python_file_without_a_name_lists_its_models():
    r = run("inspect", str(STUDENTS), "--input", "3,32,32")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "YAML" not in r.stderr
    assert "FILE.py:NAME" in r.stderr and "S7Student, S7TopLevel" in r.stderr


def test_the_listing_includes_subclasses_of_the_files_models(tmp_path):
    f = tmp_path / "nets.py"
    f.write_text("import torch.nn as nn\nclass Net(nn.Module):\n    pass\nclass WrongCh(Net):\n    pass\n"
                 "class Seq(nn.Sequential):\n    pass\nclass Helper:\n    pass\n")
    r = run("inspect", str(f))
    assert r.returncode == 2 and "(nn.Module classes in it: Net, WrongCh, Seq)" in r.stderr


def test_report_values_are_plain_numbers_and_str_is_the_inspect_text():
    import warnings

    from convcli import summary

    report = summary(students.S7Student(), input_size=(3, 32, 32), rules="s7")
    assert report.rf == 48 and type(report.rf) is int
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unclosed file behind the text
        text = str(report)
    assert "S7Student: [3, 32, 32] → [10]" in text and "k_eff = d*(k-1)+1)" in text


def test_an_unknown_layer_is_exit_2_naming_it():
    r = run("params", f"{STUDENTS}:Custom", "--input", "3,8,8")
    assert r.returncode == 2 and "LocalResponseNorm" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["params", "inspect"])
def test_parameters_the_forward_does_not_use_are_noted_by_every_count(command):
    r = run(command, f"{STUDENTS}:SpareHead", "--input", "3,8,8")
    assert r.returncode == 0, r.stderr
    # named, and against what model.parameters() counts (3*8*9 + 8 = 224 used, + 90): what a TA compares with
    said = " ".join(r.stdout.split())
    assert "90 parameters belong to modules the forward pass does not use (spare)" in said
    assert "model.parameters() holds 314" in said
    doc = json.loads(run(command, f"{STUDENTS}:SpareHead", "--input", "3,8,8", "--json").stdout)
    assert doc["total"] == 3 * 8 * 9 + 8 and any("90 parameters" in n for n in doc["notes"])


def test_a_missing_name_suggests_one():
    r = run("rf", f"{STUDENTS}:S7Studnt", "--input", "3,32,32")
    assert r.returncode == 2 and "S7Student" in r.stderr


def test_structure_reads_the_same_blocks_from_the_module_its_import_and_the_spec(tmp_path):
    # self.gap (weightless, between C4 and O) is no block; self.O = nn.Linear is block O, named in the import too.
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml

    graph = trace_graph(students.S7TopLevel(), (3, 32, 32), "S7TopLevel")
    imported = analyze(parse_spec(spec_yaml(graph), str(tmp_path / "net.yaml")))
    written = analyze_layers([3, 32, 32], [
        *({"seq": {"name": f"C{i}", "layers": [{"conv": {"out": 8}}, {"maxpool": {"k": 2}}]}} for i in (1, 2, 3)),
        {"seq": {"name": "C4", "layers": [{"conv": {"out": 8}}]}}, "gap", {"linear": {"out": 10, "name": "O"}}])
    for a in (analyze(graph), imported, written):
        [check] = [c for c in run_checks(a, resolve_rules(None, "s7")) if c.rule == "structure"]
        assert check.ok and check.value == ["C1", "C2", "C3", "C4", "O"], check.message


def test_a_conv_padding_mode_survives_import_and_build(tmp_path):
    from convcli.build import build_model
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), torch.nn.ReLU())
    text = spec_yaml(trace_graph(model, (3, 8, 8), "Reflect"))
    assert "pad_mode: reflect" in text
    built = build_model(analyze(parse_spec(text, str(tmp_path / "r.yaml"))))
    [conv] = [m for m in built.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv.padding_mode == "reflect" and conv.padding == (1, 1)


# --------------------------------------------------------------------------- import: a traced model → a spec


def same_analysis(a, b):
    assert a.params == b.params and a.macs == b.macs
    assert a.output_shape == b.output_shape and a.rf_before_global() == b.rf_before_global()
    assert [r.out_shape for r in a.layers] == [r.out_shape for r in b.layers]
    assert [r.facts.op for r in a.layers] == [r.facts.op for r in b.layers]


@pytest.mark.parametrize("name", ["S7Student", "Attributes", "SharedSEResidual", "MeanHead"])
def test_import_writes_a_spec_with_the_same_analysis(name, tmp_path):
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml

    graph = trace_graph(getattr(students, name)(), (3, 32, 32), name)
    spec = analyze(parse_spec(spec_yaml(graph), str(tmp_path / "net.yaml")))
    same_analysis(analyze(graph), spec)


def test_import_round_trips_torchvision_nets_with_residuals_and_concats(zoo, tmp_path):
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml

    name, model, a = zoo
    spec = analyze(parse_spec(spec_yaml(a.graph), str(tmp_path / f"{name}.yaml")))
    same_analysis(a, spec)


def test_import_command_writes_a_spec_that_passes_the_same_rules(tmp_path):
    out = tmp_path / "s7_student.yaml"
    r = run("import", f"{STUDENTS}:S7Student", "--input", "3,32,32", "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = run("inspect", str(out), "--rules", "s7", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["total"] == 119_930 and doc["rf"] == 48


def test_a_quoted_glob_of_model_files_keeps_the_name(tmp_path):
    from convcli.commands.common import expand_specs

    for student in ("alice", "bob"):
        (tmp_path / student).mkdir()
        (tmp_path / student / "net.py").write_text("import torch.nn as nn\nclass Net(nn.Module):\n    pass\n")
    assert expand_specs([f"{tmp_path}/*/net.py:Net"]) == [f"{tmp_path}/alice/net.py:Net", f"{tmp_path}/bob/net.py:Net"]


def test_a_channel_mismatch_names_where_the_module_is_made(tmp_path):
    # The forward fails at the call (line 18), but the wrong number is the argument of blk(16, 64) (line 12),
    # which builds the conv at line 5.
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\n\n\ndef blk(cin, cout):\n"
                 "    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())\n\n\n"
                 "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                 "        self.C1 = blk(3, 32)\n        self.C2 = blk(16, 64)\n"
                 "        self.gap = nn.AdaptiveAvgPool2d(1)\n        self.O = nn.Linear(64, 10)\n\n"
                 "    def forward(self, x):\n        x = self.C1(x)\n        x = self.C2(x)\n"
                 "        return self.O(self.gap(x).flatten(1))\n")
    r = run("inspect", f"{f}:Net", "--input", "3,32,32")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "net.py:18: C2.0 (Conv2d): expected 16 input channels, got 32" in r.stderr
    assert "the module is made at" in r.stderr and "net.py:5 (called from" in r.stderr and "net.py:12)" in r.stderr


def test_a_batch_of_model_files_is_labelled_below_their_common_folder(tmp_path):
    from convcli.commands.common import batch_labels

    refs = [f"{tmp_path}/alice/net.py:Net", f"{tmp_path}/bob/net.py:Net"]
    for ref in refs:
        Path(ref.rpartition(":")[0]).parent.mkdir()
        Path(ref.rpartition(":")[0]).write_text("")
    assert batch_labels(refs) == (str(tmp_path), ["alice/net.py:Net", "bob/net.py:Net"])
    assert batch_labels(["torchvision.models:vgg11", refs[0]])[0] is None  # a package has no folder


def test_the_tutorial_lenets_loop_over_the_size_is_read_at_the_input_size():
    # PyTorch's 60-minute blitz LeNet flattens with `for s in x.size()[1:]`, which a plain fx trace cannot
    # iterate; with the sizes known for --input it is the numbers 6, 28, 28: a flatten to 4,704 features.
    # conv 1*6*25 + 6 = 156, fc 4,704*10 + 10 = 47,050: torch's own count
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 6, 5)
            self.fc = torch.nn.Linear(6 * 28 * 28, 10)

        def forward(self, x):
            x = self.conv1(x)
            return self.fc(x.view(-1, self.num_flat_features(x)))

        def num_flat_features(self, x):
            n = 1
            for s in x.size()[1:]:
                n *= s
            return n

    a = traced(Net(), (1, 32, 32))
    assert a.params == 156 + 47_050 == sum(p.numel() for p in Net().parameters())
    assert [r.facts.op for r in a.layers] == ["conv", "flatten", "linear"] and tuple(a.output_shape) == (10,)
    assert any("holds for an input of [1, 32, 32]" in n for n in a.graph.notes)


class _ShapeBranch(torch.nn.Module):
    """Pools only when the conv's map is wider than 16 (a branch on a size, not on values)."""

    def __init__(self, on_values=False):
        super().__init__()
        self.on_values = on_values
        self.c = torch.nn.Conv2d(3, 8, 3)
        self.p = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = self.c(x)
        if (x.mean() > 0) if self.on_values else (x.shape[-1] > 16):
            x = self.p(x)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("side, pooled", [(32, True), (16, False)])
def test_a_branch_on_the_input_shape_is_taken_as_the_input_decides(side, pooled):
    # 32 -> conv 30 > 16: pooled to 15 (RF 3 + 1 = 4, jump 2); 16 -> conv 14: not pooled (RF 3, jump 1)
    model = _ShapeBranch()
    a = traced(model, (3, side, side))
    assert [r.facts.op for r in a.layers] == ["conv", *(["pool"] if pooled else []), "global_pool", "linear"]
    assert [int(x.r) for x in a.rf_before_global()] == ([4, 4] if pooled else [3, 3])
    with torch.no_grad():
        hooked = []
        model.p.register_forward_hook(lambda m, i, o: hooked.append(o.shape))
        model.eval()(torch.zeros(1, 3, side, side))
    assert bool(hooked) == pooled  # torch takes the same branch
    assert any(f"holds for an input of [3, {side}, {side}]" in n for n in a.graph.notes)


def test_a_branch_on_values_is_still_refused_at_its_line():
    with pytest.raises(ConvcliError, match=r"cannot trace _ShapeBranch\.forward at .*control flow"):
        traced(_ShapeBranch(on_values=True), (3, 32, 32))


class _SE(torch.nn.Module):
    """Hu et al.'s squeeze-and-excitation block as students copy it: Linear layers on the pooled vector."""

    def __init__(self, form, c=16, r=4):
        super().__init__()
        self.form = form
        self.conv = torch.nn.Conv2d(3, c, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Sequential(torch.nn.Linear(c, c // r, bias=False), torch.nn.ReLU(),
                                      torch.nn.Linear(c // r, c, bias=False), torch.nn.Sigmoid())

    def forward(self, x):
        x = self.conv(x)
        b, c, _, _ = x.size()
        y = self.fc(self.pool(x).view(b, c))
        if self.form == "view":
            return x * y.view(b, c, 1, 1).expand_as(x)
        if self.form == "unsqueeze":
            return x * y.unsqueeze(-1).unsqueeze(-1)
        return x * y[:, :, None, None]


@pytest.mark.parametrize("form", ["view", "unsqueeze", "none_index"])
def test_the_reference_se_block_with_linear_layers_is_analysed_and_exported(form):
    # conv 3*16*9 + 16 = 448; fc 16*4 + 4*16 = 128 (no bias): 576 = torch's own count. The gate is one
    # value per channel: the mul broadcasts it (noted), and the RF stays the conv's 3.
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml
    from tests.test_export import export_source, load, same_function

    model = _SE(form)
    a = traced(model, (3, 8, 8))
    assert a.params == 576 == sum(p.numel() for p in model.parameters())
    assert tuple(a.output_shape) == (16, 8, 8) and [int(x.r) for x in a.layers[-1].rf_out] == [3, 3]
    assert any("broadcast" in n for n in a.notes)
    spec = parse_spec(spec_yaml(trace_graph(model, (3, 8, 8), "se.py")), "se.yaml")  # `convcli import`
    exported = load(export_source(analyze(spec)))["Net"]()
    exported.load_state_dict(dict(zip(exported.state_dict(), model.state_dict().values())), strict=True)
    same_function(exported, model, (3, 8, 8))


@pytest.mark.parametrize("squeeze", ["last_twice", "by_index", "all", "position", "ellipsis", "mixed"])
def test_gap_heads_that_squeeze_the_unit_axes_one_by_one_are_gap(squeeze):
    # indexing the one position of a 1x1 map (t[:, :, 0, 0]) takes the same values as a flatten
    squeezed = {"last_twice": lambda t: t.squeeze(-1).squeeze(-1), "by_index": lambda t: t.squeeze(3).squeeze(2),
                "all": lambda t: t.squeeze(), "position": lambda t: t[:, :, 0, 0],
                "ellipsis": lambda t: t[..., -1, -1], "mixed": lambda t: t[:, :, 0, -1]}[squeeze]
    a = traced(HeadNet(lambda t: squeezed(torch.nn.functional.adaptive_avg_pool2d(t, (1, 1)))), (3, 8, 8))
    assert tuple(a.output_shape) == (2,) and a.params == 3 * 8 * 9 + 8 + 8 * 2 + 2
    assert a.first_global_row().type == "adaptive_avg_pool2d"


def test_an_unsupported_call_in_a_helper_method_is_named_at_its_own_line(tmp_path):
    from convcli.errors import ConvcliError
    from convcli.sources import load_analysis

    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.c = nn.Conv2d(3, 4, 3)\n"
        "    def head(self, x):\n"
        "        return x[:, :, 0, 0]\n"  # line 7: the unsupported indexing
        "    def forward(self, x):\n"
        "        return self.head(self.c(x))\n")  # line 9: only the caller
    with pytest.raises(ConvcliError, match=r"net\.py:7: ") as exc:
        load_analysis(f"{tmp_path / 'net.py'}:Net", "3,8,8")
    assert "net.py:9" not in str(exc.value)


def test_a_functional_dropout_that_also_drops_at_evaluation_is_noted(tmp_path):
    from convcli.sources import load_analysis

    (tmp_path / "net.py").write_text(
        "import torch.nn as nn, torch.nn.functional as F\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.c = nn.Conv2d(3, 4, 3); self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        x = F.dropout(self.c(x), 0.3)\n"  # line 6: training defaults to True, even in eval()
        "        x = F.dropout(x, 0.3, training=self.training)\n"  # line 7: as intended
        "        return self.fc(x.mean((2, 3)))\n")
    a = load_analysis(f"{tmp_path / 'net.py'}:Net", "3,8,8")
    notes = [n for n in a.graph.notes if "also drops at evaluation" in n]
    assert len(notes) == 1 and "net.py:6" in notes[0]


def test_a_mean_over_the_merged_spatial_axes_is_gap():
    # x.view(b, c, -1).mean(2): the mean of all H*W positions of each channel, which is GAP.
    from convcli.errors import ConvcliError

    def merged(t):
        return t.view(t.size(0), t.size(1), -1)

    a = traced(HeadNet(lambda t: merged(t).mean(2)), (3, 8, 8))
    assert a.first_global_row().type == "mean" and tuple(a.output_shape) == (2,)
    with pytest.raises(ConvcliError, match="not a tensor convcli follows"):  # anything else: refused, not guessed
        traced(HeadNet(lambda t: merged(t).flatten(1), features=8 * 36), (3, 8, 8))


@pytest.mark.parametrize("head", ["mean_last_twice", "mean_3_then_2", "amax_twice", "mean_then_amax"])
def test_reducing_the_spatial_axes_one_at_a_time(head):
    # x.mean(-1).mean(-1) is the mean over every position: GAP; amax twice is a global max; a mean over W then
    # a max over H is neither, and is refused rather than guessed.
    from convcli.errors import ConvcliError

    steps = {"mean_last_twice": lambda t: t.mean(-1).mean(-1), "mean_3_then_2": lambda t: t.mean(3).mean(2),
             "amax_twice": lambda t: t.amax(-1).amax(-1), "mean_then_amax": lambda t: t.mean(-1).amax(-1)}[head]

    if head == "mean_then_amax":
        with pytest.raises(ConvcliError, match="after a mean over other spatial axes"):
            traced(HeadNet(steps), (3, 8, 8))
        return
    a = traced(HeadNet(steps), (3, 8, 8))
    assert tuple(a.output_shape) == (2,) and a.params == 3 * 8 * 9 + 8 + 8 * 2 + 2
    kind = a.first_global_row().facts.pool
    assert kind == ("max" if head == "amax_twice" else "avg")


class _PadPReLU(torch.nn.Module):
    """F.pad (asymmetric, or W only) before an unpadded conv, then a PReLU (one slope or one per channel)."""

    def __init__(self, pad, mode, per_channel):
        super().__init__()
        self.pad, self.mode = pad, mode
        self.c = torch.nn.Conv2d(3, 4, 3)
        self.act = torch.nn.PReLU(4 if per_channel else 1)

    def forward(self, x):
        return self.act(self.c(torch.nn.functional.pad(x, self.pad, mode=self.mode)))


@pytest.mark.parametrize("pad, mode, per_channel, shape", [
    ((1, 2, 0, 1), "constant", True, (4, 7, 9)),  # W: 8 + 1 + 2 - 2 = 9; H: 8 + 0 + 1 - 2 = 7
    ((1, 1), "constant", False, (4, 6, 8)),  # a 2-tuple pads only the last axis (W): H 8 - 2 = 6
    ((1, 1, 2, 2), "reflect", False, (4, 10, 8)),
    ((0, 0, 2, 2), "replicate", True, (4, 10, 6)),
])
def test_f_pad_and_prelu_are_mapped_counted_and_exported(pad, mode, per_channel, shape, tmp_path):
    # conv 3*4*9 + 4 = 112, PReLU 4 slopes or 1: torch's own count
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml
    from tests.test_export import export_source, load, same_function

    model = _PadPReLU(pad, mode, per_channel)
    a = traced(model, (3, 8, 8))
    assert a.params == 112 + (4 if per_channel else 1) == sum(p.numel() for p in model.parameters())
    assert tuple(a.output_shape) == shape
    assert [(lay.facts.op, lay.facts.act) for lay in a.layers] == [("pad", None), ("conv", None), ("act", "prelu")]
    spec = parse_spec(spec_yaml(trace_graph(model, (3, 8, 8), "pad.py")), "pad.yaml")  # `convcli import`
    exported = load(export_source(analyze(spec)))["Net"]()
    exported.load_state_dict(dict(zip(exported.state_dict(), model.state_dict().values())), strict=True)
    same_function(exported, model, (3, 8, 8))


def test_an_imported_prelu_keeps_its_starting_slope(tmp_path):
    # nn.PReLU(4, init=0.1): the spec written by `convcli import` must build (and export) slopes starting at
    # 0.1, not PReLU's default 0.25, so a fresh training of the imported spec starts where the student's does
    from convcli.build import build_model
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml
    from tests.test_export import export_source, load

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.PReLU(4, init=0.1))
    text = spec_yaml(trace_graph(model, (3, 8, 8), "prelu.py"))
    spec = parse_spec(text, "prelu.yaml")
    built = [m for m in build_model(analyze(spec)).modules() if isinstance(m, torch.nn.PReLU)]
    assert len(built) == 1 and torch.equal(built[0].weight.detach(), torch.full((4,), 0.1))
    exported = [m for m in load(export_source(analyze(spec)))["Net"]().modules() if isinstance(m, torch.nn.PReLU)]
    assert torch.equal(exported[0].weight.detach(), torch.full((4,), 0.1))


def test_an_asymmetric_f_pad_moves_the_rf_centre_by_hand():
    # pad left 2, right 0 then a 3x3 conv: output column 0 reads padded columns 0..2 = input columns -2..0,
    # so its RF (3 px) is centred on input pixel -1, whose centre is at -1/2 (pixel i spans [i, i + 1));
    # the rows are unpadded: rows 0..2, centred at 3/2
    from fractions import Fraction

    model = _PadPReLU((2, 0), "constant", False)
    a = traced(model, (3, 8, 8))
    h, w = a.layers[1].rf_out
    assert (h.r, h.start, w.r, w.start) == (3, Fraction(3, 2), 3, Fraction(-1, 2))


@pytest.mark.parametrize("pad, value, says", [
    ((1, 1, 1, 1, 1, 1), 0.0, "spatial axes"),  # pads the channel axis too
    ((-1, -1), 0.0, "negative"),
    ((1, 1), 1.0, "non-zero"),
])
def test_f_pad_that_is_not_a_spatial_zero_pad_is_refused(pad, value, says):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3 + sum(pad[4:]), 4, 3)

        def forward(self, x):
            return self.c(torch.nn.functional.pad(x, pad, value=value))

    with pytest.raises(ConvcliError, match=says):
        traced(Net(), (3, 8, 8))


class _UpBy(torch.nn.Module):
    """conv, 2x2 max-pool, then back up to the conv's size: by `size=` of the skip (U-Net), by a per-axis
    scale_factor, or by an nn.Upsample; a 1x1 conv after it so the traced graph ends in a layer."""

    def __init__(self, how, mode="nearest"):
        super().__init__()
        self.how, self.mode = how, mode
        self.c = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.up = torch.nn.Upsample(scale_factor=(2, 1), mode=mode) if how == "module_per_axis" else None
        self.out = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        skip = self.c(x)
        y = torch.nn.functional.max_pool2d(skip, 2) if self.how != "module_per_axis" else \
            torch.nn.functional.max_pool2d(skip, (2, 1))
        if self.how == "size_of_skip":
            y = torch.nn.functional.interpolate(y, size=skip.shape[2:], mode=self.mode)
        elif self.how == "scale_factor":
            y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode=self.mode)
        else:
            y = self.up(y)
        return self.out(y + skip)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("how", ["size_of_skip", "scale_factor", "module_per_axis"])
def test_upsampling_by_size_or_per_axis_factor_is_mapped(how, mode, tmp_path):
    # an upsampling to the skip's size (8x8 -> 16x16) is a factor 2 per axis, the same function as
    # scale_factor=2; nn.Upsample(scale_factor=(2, 1)) after a (2, 1) pool doubles H only. Checked against
    # torch's forward through import -> export, and the jumps by hand: H 1 -> 2 (pool) -> 1 (upsample).
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml
    from tests.test_export import export_source, load, same_function

    model = _UpBy(how, mode)
    a = traced(model, (3, 16, 16))
    assert tuple(a.output_shape) == (2, 16, 16) == tuple(model(torch.zeros(1, 3, 16, 16)).shape[1:])
    up = next(r for r in a.layers if r.facts.op == "resample")
    assert [int(x.j) for x in up.rf_in] == ([2, 1] if how == "module_per_axis" else [2, 2])
    assert [int(x.j) for x in up.rf_out] == [1, 1]
    spec = parse_spec(spec_yaml(trace_graph(model, (3, 16, 16), "up.py")), "up.yaml")
    exported = load(export_source(analyze(spec)))["Net"]()
    exported.load_state_dict(dict(zip(exported.state_dict(), model.state_dict().values())), strict=True)
    same_function(exported, model, (3, 16, 16))


@pytest.mark.parametrize("kwargs, says", [
    ({"scale_factor": 1.5}, r"upsampling 8x8 to 12x12 \(factors 3/2, 3/2\): only whole-number"),
    ({"scale_factor": 0.5}, "downsampling 8x8 to 4x4"),
    ({"size": (12, 16)}, r"factors 3/2, 2"),
    ({"scale_factor": 2.1}, "scale_factor 2.1 is not a whole number"),  # 8 -> 16 pixels sampled at 1/2.1
])
def test_interpolation_convcli_cannot_express_is_refused_with_the_sizes(kwargs, says):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.nn.functional.interpolate(self.c(x), **kwargs)

    with pytest.raises(ConvcliError, match=says) as err:
        traced(Net(), (3, 8, 8))
    assert "interpolate: interpolate" not in str(err.value)


def test_tied_weights_between_two_layers_are_refused_by_name():
    # self.b.weight = self.a.weight: torch's parameters() lists the tensor once (8*8*9 + 8 + 8 = 592 for
    # a and b together); convcli counts weights per layer, so it names the tie instead of a wrong total
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    assert sum(p.numel() for p in Tied().parameters()) == 592
    with pytest.raises(ConvcliError, match=r"b\.weight is a\.weight \(tied weights\)"):
        traced(Tied(), (8, 6, 6))


def test_flattening_the_batch_axis_is_named_where_it_happens():
    # torch.flatten(x) without start_dim=1 folds the batch into the vector; the Linear after it fails, but
    # the message names the flatten's line and says how to write it
    class FlattenAll(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(self.c(x), 1)
            x = torch.flatten(x)
            return self.fc(x)

    line = FlattenAll.forward.__code__.co_firstlineno + 2
    with pytest.raises(ConvcliError, match=rf":{line}: flatten changes the batch axis .*torch\.flatten\(x, 1\)"):
        traced(FlattenAll(), (3, 8, 8))


def test_a_forward_argument_with_a_default_is_traced_at_it():
    # forward(x, return_feats=False) branches on a Python default, not on data: the plain call's graph
    class ExtraArg(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 8, 3)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x, return_feats=False, scale=None):
            f = self.c(x).mean((2, 3))
            if scale is not None:
                f = f * scale
            return f if return_feats else self.fc(f)

    a = traced(ExtraArg(), (3, 8, 8))
    assert tuple(a.output_shape) == (10,) and a.params == 3 * 8 * 9 + 8 + 8 * 10 + 10


@pytest.mark.parametrize("source, ref, says", [
    # a typo in __init__: the line of the typo, with torch.nn's close names
    ("import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
     "        self.fc = nn.Linaer(8, 10)\n", "Net",
     r"net\.py:6: building 'Net' failed: AttributeError: .*'Linaer'; did you mean 'Linear'"),
    # an unclosed bracket: file:line as a compiler says it
    ("import torch.nn as nn\n\nx = nn.Conv2d(3, 8, 3\n\nclass Net(nn.Module):\n    pass\n", "Net",
     r"net\.py:3: SyntaxError: '\(' was never closed"),
    # a failing import at the top of the file
    ("import torch.nn as nn\nimport timmm\n", "Net", r"net\.py:2: running the file failed: ModuleNotFoundError"),
    # the functional import, not a model: named as such, with the file's models
    ("import torch.nn as nn\nimport torch.nn.functional as F\n\nclass Net(nn.Module):\n    pass\n", "F",
     r"'F' is a module, not an nn\.Module class .*nn\.Module classes: Net"),
])
def test_a_file_that_cannot_give_a_model_is_named_at_its_line(source, ref, says, tmp_path):
    from convcli.torch_load import load_module

    (tmp_path / "net.py").write_text(source)
    with pytest.raises(ConvcliError, match=says):
        load_module(f"{tmp_path / 'net.py'}:{ref}")


@pytest.mark.parametrize("returns, says", [
    ("dict", "it returns a dict: return the logits alone"),
    ("tuple", "it returns a tuple: return the logits alone"),
    ("input", "it returns the input unchanged"),
])
def test_a_forward_that_does_not_return_one_tensor_says_what_it_returns(returns, says):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.c(x)
            return {"dict": {"out": y}, "tuple": (y, y.mean((2, 3))), "input": x}[returns]

    with pytest.raises(ConvcliError, match=says):
        traced(Net(), (3, 8, 8))


def test_a_torchscript_module_is_refused_with_what_to_pass():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's own deprecation notice
        scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    with pytest.raises(ConvcliError, match="TorchScript module .* pass the nn.Module it was made from"):
        traced(scripted, (3, 8, 8))


def _shuffle_by_hand(x, groups):
    # ShuffleNet's reference implementation: view as (g, C/g), transpose, view back
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class _ShuffleUnit(torch.nn.Module):
    """ShuffleNet v1 unit: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1, residual add; the
    shuffle written by hand, as nn.ChannelShuffle, or as torch.channel_shuffle."""

    def __init__(self, how, c=24, g=3):
        super().__init__()
        self.how, self.g = how, g
        self.g1 = torch.nn.Conv2d(c, c, 1, groups=g, bias=False)
        self.dw = torch.nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.g2 = torch.nn.Conv2d(c, c, 1, groups=g, bias=False)
        self.shuffle = torch.nn.ChannelShuffle(g)

    def forward(self, x):
        y = torch.relu(self.g1(x))
        y = {"by_hand": lambda t: _shuffle_by_hand(t, self.g), "module": self.shuffle,
             "function": lambda t: torch.channel_shuffle(t, self.g)}[self.how](y)
        return x + self.g2(self.dw(y))


@pytest.mark.parametrize("how", ["by_hand", "module", "function"])
def test_a_channel_shuffle_is_mapped_counted_and_exported(how):
    # params 24*8 (1x1, groups 3) + 24*9 (depthwise) + 24*8 = 600, torch's own count; the shuffle moves whole
    # channels: RF 3 after the depthwise 3x3, as without it; the depthwise and the grouped 1x1 after it are
    # not a depthwise-separable pair (the 1x1 is grouped), the shuffle is seen as one
    from convcli.rules.kinds import find
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml
    from tests.test_export import export_source, load, same_function

    model = _ShuffleUnit(how)
    x = torch.randn(2, 24, 6, 6)
    assert torch.equal(torch.nn.ChannelShuffle(3)(x), _shuffle_by_hand(x, 3))  # torch's op is the recipe
    a = traced(model, (24, 6, 6))
    assert a.params == 600 == sum(p.numel() for p in model.parameters())
    assert [r.facts.op for r in a.layers] == ["conv", "act", "shuffle", "conv", "conv", "join"]
    assert [int(x.r) for x in a.rf_before_global()] == [3, 3] and len(find(a, "channel_shuffle")) == 1
    assert len(find(a, "depthwise_separable")) == 0
    spec = parse_spec(spec_yaml(trace_graph(model, (24, 6, 6), "shuffle.py")), "shuffle.yaml")
    exported = load(export_source(analyze(spec)))["Net"]()
    exported.load_state_dict(dict(zip(exported.state_dict(), model.state_dict().values())), strict=True)
    same_function(exported, model, (24, 6, 6))


def test_a_channel_shuffle_between_depthwise_and_pointwise_keeps_the_pair():
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ChannelShuffle(2),
                                torch.nn.Conv2d(8, 16, 1))
    from convcli.rules.kinds import find

    assert len(find(traced(model, (8, 6, 6)), "depthwise_separable")) == 1


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0"])
def test_torchvisions_shufflenet_v2_matches_its_own_counts(name):
    # its blocks split the channels (x.chunk(2, dim=1)), run one half through convs and shuffle the concat:
    # parameters from torch, MACs from torchvision's documented `_ops` (GMACs, 3 decimals) at 224x224
    model = getattr(torchvision.models, name)(weights=None)
    a = traced(model, (3, 224, 224))
    assert a.params == sum(p.numel() for p in model.parameters())
    assert tuple(a.output_shape) == (1000,)
    for weights in torchvision.models.get_model_weights(name):
        assert a.macs / 1e9 == pytest.approx(weights.meta["_ops"], abs=5e-4), weights


@pytest.mark.parametrize("stride", [1, 2])
def test_a_shufflenet_v2_block_round_trips_through_import_and_export(stride):
    # stride 1 splits the channels in two (x.chunk); stride 2 runs both branches on the whole input
    from torchvision.models.shufflenetv2 import InvertedResidual

    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml
    from tests.test_export import export_source, load, randomise_bn, same_function

    cin = 16 if stride == 1 else 8
    model = InvertedResidual(cin, 16, stride)
    randomise_bn(model)
    a = traced(model, (cin, 8, 8))
    assert a.params == sum(p.numel() for p in model.parameters())
    if stride == 1:  # the split's halves by hand: channels 0..7 and 8..15
        picks = [(r.facts.in_channels, r.facts.out_channels) for r in a.layers if r.facts.op == "select"]
        assert picks == [(16, 8), (16, 8)]
    spec = parse_spec(spec_yaml(trace_graph(model, (cin, 8, 8), "block.py")), "block.yaml")
    exported = load(export_source(analyze(spec)))["Net"]()
    exported.load_state_dict(dict(zip(exported.state_dict(), model.state_dict().values())), strict=True)
    same_function(exported, model, (cin, 8, 8))


@pytest.mark.parametrize("index, channels", [
    ((slice(None), slice(2, 6)), (2, 6)),
    ((slice(None), slice(None, -2), Ellipsis), (0, 6)),
    ((slice(None), slice(4, None), slice(None), slice(None)), (4, 8)),
])
def test_a_channel_slice_is_a_range_of_channels(index, channels):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.c(x)[index]

    a = traced(Net(), (3, 6, 6))
    row = a.layers[-1]
    assert row.facts.op == "select" and tuple(a.output_shape) == (channels[1] - channels[0], 4, 4)
    assert tuple(Net()(torch.zeros(1, 3, 6, 6)).shape[1:]) == tuple(a.output_shape)


def test_a_warning_while_building_the_model_becomes_a_note(tmp_path):
    # torchvision's googlenet warns about its init when built; the table's notes carry it, stderr does not
    import warnings

    from convcli.torch_graph import trace_ref

    (tmp_path / "net.py").write_text(
        "import warnings\nimport torch.nn as nn\n\nclass Net(nn.Sequential):\n    def __init__(self):\n"
        "        warnings.warn('init will change', FutureWarning)\n        super().__init__(nn.Conv2d(3, 4, 3))\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one escaping would fail the test
        graph = trace_ref(f"{tmp_path / 'net.py'}:Net", "3,8,8")
    assert "building Net: FutureWarning: init will change" in graph.notes


def test_a_double_models_size_is_labelled_float64_and_one_number_per_sample_is_a_vector_of_one():
    # conv 3*8*16 + 8 = 392 params of 8 bytes = 3,136 bytes; the critic's x.view(-1) keeps one score per
    # sample, which torch gives as [] and convcli as a vector of one
    from convcli.commands.common import totals

    class Critic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 4, 2, 1)
            self.c2 = torch.nn.Conv2d(8, 1, 4)

        def forward(self, x):
            return torch.sigmoid(self.c2(self.c1(x)).view(-1, 1).squeeze(1))

    a = traced(Critic().double(), (3, 8, 8))
    t = totals(a)
    assert t["dtype"] == "float64" and t["size_mb"] * 1e6 == pytest.approx(8 * (392 + 129))
    assert tuple(a.output_shape) == (1,) and tuple(Critic()(torch.zeros(2, 3, 8, 8)).shape) == (2,)


class _Lossy(torch.nn.Module):
    """Things a spec cannot say, each analysed as its layer would be (shapes, params, RF are right) but
    refused by `convcli import`, which would otherwise write a model computing something else."""

    def __init__(self, what):
        super().__init__()
        self.what = what
        self.c = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.d = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8, track_running_stats=what != "bn_no_stats")
        self.p = torch.nn.AvgPool2d(2, divisor_override=1 if what == "divisor" else None)

    def forward(self, x):
        x = self.bn(self.c(x))
        if self.what == "scaled_residual":
            x = x + 0.2 * self.d(x)
        elif self.what == "add_alpha":
            x = torch.add(x, self.d(x), alpha=-1.0)
        return self.p(x)


@pytest.mark.parametrize("what, says", [
    ("scaled_residual", "mul with the constant 0.2"),
    ("add_alpha", r"torch\.add\(\.\.\., alpha=-1\.0\)"),
    ("bn_no_stats", "track_running_stats=False"),
    ("divisor", r"divisor_override=1"),
])
def test_import_refuses_what_a_spec_cannot_say_while_the_analysis_stands(what, says):
    from convcli.spec_writer import spec_yaml

    model = _Lossy(what)
    a = traced(model, (3, 8, 8))
    # conv 3*8*9 + 8 = 224, BN 16, and the residual's conv 8*8*9 + 8 = 584 where the forward uses it
    assert a.params == 224 + 16 + (584 if what in ("scaled_residual", "add_alpha") else 0)
    assert tuple(a.output_shape) == (8, 4, 4)
    with pytest.raises(ConvcliError, match=f"{says}.* has no spec equivalent"):
        spec_yaml(trace_graph(model, (3, 8, 8), "lossy.py"))


def test_weight_norm_is_named_not_an_internal_check():
    model = torch.nn.Sequential(torch.nn.utils.weight_norm(torch.nn.Conv2d(3, 8, 3)))
    with pytest.raises(ConvcliError, match=r"under torch\.nn\.utils\.weight_norm holds bias, weight_g, weight_v"):
        traced(model, (3, 8, 8))


def test_an_imported_frozen_model_says_its_spec_trains_everything():
    from convcli.spec_writer import spec_yaml

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 1))
    model[0].requires_grad_(False)  # 3*8*9 + 8 = 224 frozen
    assert "The model froze 224 parameters" in spec_yaml(trace_graph(model, (3, 8, 8), "frozen.py"))


def test_layernorm_of_a_feature_vector_is_mapped_and_of_a_map_refused_with_the_reason():
    # LayerNorm(8) after GAP: 8 scales + 8 biases, torch's count; LayerNorm over W of a map is not a layer
    head = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.LayerNorm(8), torch.nn.Linear(8, 10))
    a = traced(head, (3, 8, 8))
    assert a.params == sum(p.numel() for p in head.parameters()) and "norm" in [r.facts.op for r in a.layers]
    with pytest.raises(ConvcliError, match=r"LayerNorm\(\[6\]\) on a \[8, 6, 6\] tensor"):
        traced(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.LayerNorm(6)), (3, 8, 8))


@pytest.mark.parametrize("forward, says", [
    (lambda m, x: m.c(x).max(dim=2)[0].amax(-1), r"x\.max\(dim\)\[0\].*write x\.amax"),
    (lambda m, x: m.c(x)[:, :, -1], r"indexing with .*only a range of channels"),
    (lambda m, x: m.c(x).sum((2, 3)) / 36, r"write x\.mean\(\(2, 3\)\)"),
    (lambda m, x: m.c(x) * m.scale, r"uses the buffer self\.scale directly"),
])
def test_unmapped_idioms_say_what_to_write(forward, says):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3)
            self.register_buffer("scale", torch.ones(1, 4, 1, 1))

        def forward(self, x):
            return forward(self, x)

    with pytest.raises(ConvcliError, match=says):
        traced(Net(), (3, 8, 8))


NET_WITH_BLOCKS = """import torch.nn as nn
from blocks import block


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.C1 = block(3, 16)
        self.O = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.O(self.C1(x))
"""


def test_each_students_own_helper_module_is_the_one_imported(tmp_path):
    # Two folders, the same net.py, each its own blocks.py: the second must not get the first's blocks.
    kernels = {"frank": 3, "gina": 5}
    for student, k in kernels.items():
        (tmp_path / student).mkdir()
        (tmp_path / student / "net.py").write_text(NET_WITH_BLOCKS)
        (tmp_path / student / "blocks.py").write_text(
            "import torch.nn as nn\n\n\ndef block(cin, cout):\n"
            f"    return nn.Conv2d(cin, cout, {k}, padding={k // 2})\n")
    r = run("params", f"{tmp_path}/*/net.py:Net", "--input", "3,32,32", "--json")
    assert r.returncode == 0, r.stderr
    totals = [doc["total"] for doc in json.loads(r.stdout)]
    # by hand: conv 3*16*k*k + 16, linear 16*10 + 10
    assert totals == [3 * 16 * k * k + 16 + 170 for k in kernels.values()]


def test_a_model_file_that_prints_or_exits_while_it_loads(tmp_path):
    printing = tmp_path / "printing.py"
    printing.write_text("import torch.nn as nn\nprint('CUDA Available?', False)\n\n\nclass Net(nn.Module):\n"
                        "    def __init__(self):\n        super().__init__()\n        self.c = nn.Conv2d(3, 4, 3)\n\n"
                        "    def forward(self, x):\n        print(x.shape)\n        return self.c(x)\n")
    r = run("params", f"{printing}:Net", "--input", "3,8,8", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["total"] == 112, r.stdout  # 3*4*9 + 4
    assert "CUDA Available?" in r.stderr  # said, where it cannot break the JSON
    exiting = tmp_path / "exiting.py"
    exiting.write_text("import argparse\nimport torch.nn as nn\n\nargs = argparse.ArgumentParser().parse_args()\n")
    r = run("params", f"{exiting}:Net", "--input", "3,8,8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "exiting.py:4: the file exits while it loads" in r.stderr and "__main__" in r.stderr, r.stderr


def test_the_parameter_rule_says_what_model_parameters_would_count():
    # SpareHead: 224 used (3*8*9 + 8) and a spare Linear(8, 10) of 90 the forward never calls
    a = analyze(trace_graph(students.SpareHead(), (3, 8, 8), "students.py:SpareHead", "SpareHead"))
    from convcli.rules.engine import parse_ruleset

    (check,) = run_checks(a, parse_ruleset({"rules": [{"max_params": {"lt": 200000}}]}, "r.yaml"))
    assert check.ok and check.value == 224
    assert "model.parameters() holds 314: 90 more in modules the forward pass never calls" in check.message


def test_a_structure_failure_says_how_to_name_the_blocks_and_that_fix_passes():
    from torch import nn

    from convcli.rules.engine import parse_ruleset

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convblock1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.convblock2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.out = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

        def forward(self, x):
            return self.out(self.convblock2(self.convblock1(x)))

    rules = parse_ruleset({"rules": [{"structure": ["C1", "C2", "O"]}]}, "r.yaml")
    (check,) = run_checks(analyze(trace_graph(Net(), (3, 8, 8), "net.py:Net", "Net")), rules)
    assert not check.ok
    assert 'block_labels = {"convblock1": "C1", "convblock2": "C2", "out": "O"}' in check.message
    Net.block_labels = {"convblock1": "C1", "convblock2": "C2", "out": "O"}  # the fix it names
    (check,) = run_checks(analyze(trace_graph(Net(), (3, 8, 8), "net.py:Net", "Net")), rules)
    assert check.ok, check.message


def test_a_models_linear_layer_is_described_by_its_class_as_its_convs_are():
    from convcli.views import describe

    a = analyze(trace_graph(students.SpareHead(), (3, 8, 8), "students.py:SpareHead", "SpareHead"))
    assert describe(a.layers[0]).startswith("Conv2d 3→8 3×3")
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    (linear,) = [r for r in analyze(trace_graph(head, (3, 2, 2), "m.py:Head", "Head")).layers if r.facts.op == "linear"]
    assert describe(linear) == "Linear 12→10"


def test_a_pool_row_shows_its_window_and_step():
    # AvgPool2d(7) on 8x8 (a pool short of the whole map) must be visible as such in the Type column
    from convcli.views import describe

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(7))
    a = analyze(trace_graph(net, (3, 16, 16), "m.py:Net", "Net"))
    assert [describe(r) for r in a.layers[1:]] == ["MaxPool2d 2×2 s2", "AvgPool2d 7×7 s7"]
