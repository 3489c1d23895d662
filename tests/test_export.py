"""`convcli export`: the generated file is standalone PyTorch whose state_dict is convcli's model's, so a
`convcli train` checkpoint loads into it with strict=True, and it computes the same function."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import analyze_layers

from convcli.analysis import analyze_file
from convcli.build import build_model
from convcli.errors import ConvcliError
from convcli.export import check_source, class_name, export_source
from convcli.layers.registry import entries, lookup

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "architectures").glob("*.yaml"))

# Building (initialising) and running the big ImageNet nets (AlexNet, VGG16, GoogLeNet, ResNet18/50) costs
# seconds on a shared CPU: for specs over these budgets the test builds both models on the meta device and
# checks that convcli's state_dict loads strictly (keys and shapes; export_source itself compares the module
# trees); every smaller spec (MobileNetV2 at 224x224 included) also runs a forward pass and compares outputs.
FORWARD_MAX_MACS, FORWARD_MAX_PARAMS = 500e6, 5e6


def load(source: str, name: str = "exported"):
    """Exec the generated code in a fresh namespace (as a module named other than __main__)."""
    namespace = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


def same_function(ours, theirs, input_shape, batch=2):
    torch.manual_seed(0)
    x = torch.randn(batch, *input_shape)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


def randomise_bn(model):
    """Non-trivial running statistics, so eval-mode BN is checked too (fresh ones are 0 and 1)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def check_export(analysis, forward=True):
    """Export, load the code, load convcli's model's state_dict into Net (strict) and, with `forward`,
    compare outputs; without it both are built on the meta device (keys and shapes only, no memory)."""
    source = export_source(analysis)
    ns = load(source)
    torch.manual_seed(0)
    with torch.device("cpu" if forward else "meta"):
        model = build_model(analysis)
        net = ns["Net"]()
    state = model.state_dict()
    assert [(k, v.shape) for k, v in net.state_dict().items()] == [(k, v.shape) for k, v in state.items()]
    if forward:
        randomise_bn(model)
        net.load_state_dict(state, strict=True)
        for k, v in net.state_dict().items():
            assert torch.equal(v, state[k]), k
        same_function(net, model, analysis.graph.input)
    else:
        net.load_state_dict(state, strict=True)
    return source, ns


@pytest.mark.parametrize("spec", ZOO, ids=[p.stem for p in ZOO])
def test_every_example_spec_exports(spec):
    analysis = analyze_file(spec)
    forward = analysis.macs <= FORWARD_MAX_MACS and analysis.params <= FORWARD_MAX_PARAMS
    source, ns = check_export(analysis, forward=forward)
    assert class_name(analysis.graph.name) in ns
    compile(source, "net.py", "exec")


def test_the_zoo_is_exported():
    assert len(ZOO) >= 10  # the glob found the example specs


# --------------------------------------------------------------------------- every layer type


def analyze_example(name, shape, opts):
    """As in test_layers: a one-layer spec after the layers its example needs; (C,) from a flatten."""
    before = list(lookup(name).example_before)
    if len(shape) == 1:
        return analyze_layers([shape[0], 1], ["flatten", *before, {name: opts}])
    return analyze_layers(shape, [*before, {name: opts}])


CASES = [pytest.param(e.name, shape, opts, id=f"{e.name}-{i}")
         for e in entries() for i, (shape, opts) in enumerate(e.examples)]


@pytest.mark.parametrize("name,shape,opts", CASES)
def test_every_layer_type_exports(name, shape, opts):
    check_export(analyze_example(name, shape, opts))


OPTIONS = [
    ("conv", [3, 9, 9], {"out": 4, "k": [3, 1], "s": [2, 1], "p": [0, 1], "g": 1, "bias": False}),
    ("conv", [4, 9, 9], {"out": 8, "k": 3, "g": 2, "d": 2, "bn": True, "act": "leaky_relu", "dropout": 0.1}),
    ("conv", [3, 8, 8], {"out": 4, "k": 4, "p": "same"}),
    ("conv", [2, 7, 7, 7], {"out": 3, "k": [3, 1, 3], "bn": True, "act": "silu"}),
    ("maxpool", [3, 9, 9], {"k": 3, "s": 2, "p": 1, "ceil": True}),
    ("avgpool", [3, 9, 9], {"k": 3, "s": 2, "p": 1, "count_include_pad": False, "ceil": True}),
    ("avgpool", [3, 9], {"k": 3, "s": 1, "p": 1}),
    ("adaptivemaxpool", [3, 12, 12], {"size": [6, 4]}),
    ("linear", [6], {"out": 4, "bn": True, "act": "relu6", "dropout": 0.2}),
]


@pytest.mark.parametrize("name,shape,opts", OPTIONS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(OPTIONS)])
def test_layer_options_export(name, shape, opts):
    check_export(analyze_example(name, shape, opts))


# --------------------------------------------------------------------------- reuse, SE (mul), residual

SHARED_SE_RESIDUAL = [
    {"conv": {"out": 4, "bn": True, "act": "relu"}},
    {"conv": {"out": 4, "name": "first"}},
    "relu",
    {"reuse": "first"},
    {"mul": {"branches": [
        [],
        [{"gap": {"keepdim": True}}, {"conv": {"out": 2, "k": 1}}, "relu", {"conv": {"out": 4, "k": 1}}, "sigmoid"],
    ]}},
    {"residual": {"layers": [{"conv": {"out": 8, "s": 2, "bn": True, "act": "relu"}},
                             {"conv": {"out": 8, "bn": True, "act": False}}], "act": "relu"}},
    {"conv": {"out": 8, "k": 1, "name": "mix"}},
    {"concat": [[{"conv": {"out": 4, "k": 1}}], [{"reuse": "mix"}], []]},
    "gap",
    {"linear": {"out": 10}},
]


def test_reuse_se_block_and_residual():
    analysis = analyze_layers([3, 16, 16], SHARED_SE_RESIDUAL, name="shared-se")
    source, ns = check_export(analysis)
    assert "class SharedSe(nn.Sequential):" in source
    assert "Net = SharedSe" in source
    assert "Reuse(first)" in source and "Reuse(mix)" in source
    assert "first = nn.Conv2d(4, 4, 3, padding=1)" in source
    for helper in ("class Parallel", "class Add", "class Concat", "class Mul", "class Reuse"):
        assert helper in source
    assert "class ChannelLayerNorm" not in source and "class DeformConvBlock" not in source
    assert "# layers[4].mul.join" in source and "# layers[5].residual" in source
    net = ns["Net"]()
    # Shared weights exist once: the reused conv is the same module object at both places.
    reuse = net[3]
    assert reuse.target is net[1]
    assert len(reuse.state_dict()) == 0


def test_reused_module_shares_weights_after_loading():
    analysis = analyze_layers([4, 6, 6], [{"conv": {"out": 4, "name": "first"}}, "relu", {"reuse": "first"}])
    ns = load(export_source(analysis))
    net = ns["Net"]()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert net[2].target is net[0]
    assert torch.equal(net[2].target.weight, net[0].weight)


def test_generated_file_is_standalone(tmp_path):
    """Only torch is imported (torchvision for a deformable conv), never convcli; and it runs as a script."""
    analysis = analyze_layers([3, 16, 16], [*SHARED_SE_RESIDUAL[:-2], {"deformconv": {"out": 4, "k": 3}},
                                            {"layernorm": {}}, "gap", {"linear": {"out": 10}}], name="standalone")
    source = export_source(analysis)
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported == {"torch", "torchvision"}
    code = ast.parse(source)
    code.body = code.body[1:]  # the docstring, which says how to load a `convcli train` checkpoint
    assert "convcli" not in ast.unparse(code)  # comments are gone too: they name spec paths
    path = tmp_path / "net.py"
    path.write_text(source)
    code = ("import sys, runpy; runpy.run_path(sys.argv[1], run_name='__main__'); "
            "print('LEAK' if any(m.split('.')[0] == 'convcli' for m in sys.modules) else 'CLEAN')")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "output shape: (1, 10)" in r.stdout
    assert r.stdout.strip().endswith("CLEAN")


def test_loads_a_training_checkpoint(tmp_path):
    """A checkpoint as `convcli train` saves it ({"model": state_dict, ...}) loads with strict=True."""
    analysis = analyze_file(ROOT / "architectures" / "s7.yaml")
    model = build_model(analysis)
    torch.save({"model": model.state_dict(), "mean": [0.5] * 3, "std": [0.25] * 3}, tmp_path / "best.pt")
    ns = load(export_source(analysis))
    net = ns["S7"]()
    ckpt = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(ckpt["model"], strict=True)


# --------------------------------------------------------------------------- names, errors, the check


@pytest.mark.parametrize("name,expected", [("s7", "S7"), ("mobilenet_v2", "MobilenetV2"), ("shared-se", "SharedSe"),
                                           ("7net", "Net7net"), ("", "Net"), ("class", "Class"), ("net", "Net"),
                                           ("Parallel", "ParallelNet")])
def test_class_name(name, expected):
    assert class_name(name) == expected
    assert expected.isidentifier()


def test_hostile_names_stay_in_comments():
    analysis = analyze_layers([4, 8, 8], [{"conv": {"out": 4, "name": 'a"""\nimport os'}},
                                          {"reuse": 'a"""\nimport os'}], name='x"""\nboom()')
    source = export_source(analysis)
    tree = ast.parse(source)
    assert not any(isinstance(n, ast.Import) and n.names[0].name == "os" for n in ast.walk(tree))
    load(source)


def test_unknown_module_is_an_error(monkeypatch):
    analysis = analyze_layers([3, 8, 8], [{"conv": {"out": 4}}, "relu"])

    class Strange(torch.nn.ReLU):  # a subclass may behave differently: never exported as its base
        pass

    def build_strange(a, shape):
        return Strange()

    monkeypatch.setattr(lookup("relu"), "build", build_strange)
    with pytest.raises(ConvcliError, match=r"cannot export .*Strange at layers\[1\]\.relu"):
        export_source(analysis)


def test_check_catches_a_wrong_file():
    analysis = analyze_layers([3, 8, 8], [{"conv": {"out": 4}}])
    source = export_source(analysis)
    with torch.device("meta"):
        model = build_model(analysis)
    with pytest.raises(ConvcliError, match="internal check failed"):
        check_source(source.replace("nn.Conv2d(3, 4, 3, padding=1)", "nn.Conv2d(3, 4, 3, padding=2)"), "T", model,
                     "t.yaml")


# --------------------------------------------------------------------------- the command


def cli(monkeypatch, capsys, *argv):
    """`convcli ARGV` in this process, through the CLI's error boundary: (exit code, stdout, stderr)."""
    from convcli.cli import main

    monkeypatch.setattr(sys, "argv", ["convcli", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    return exit_.value.code or 0, out, err


def test_command_stdout_and_out_file(tmp_path, monkeypatch, capsys):
    spec = str(ROOT / "architectures" / "lenet5.yaml")
    code, out, err = cli(monkeypatch, capsys, "export", spec)
    assert code == 0, err
    assert "class Lenet5(nn.Sequential):" in out
    path = tmp_path / "net.py"
    code, out2, err = cli(monkeypatch, capsys, "export", spec, "--out", str(path))
    assert code == 0, err
    assert out2 == "" and str(path) in err
    assert path.read_text() == out
    ns = load(path.read_text())
    ns["Net"]().load_state_dict(build_model(analyze_file(spec)).state_dict())


def test_command_errors(tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "export", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [3, 32, 32]\nlayers:\n  - maxpol: {k: 2}\n")
    code, _, err = cli(monkeypatch, capsys, "export", str(bad))
    assert code == 2 and "maxpol" in err
    spec = str(ROOT / "architectures" / "lenet5.yaml")
    code, out, err = cli(monkeypatch, capsys, "export", spec, "--out", str(tmp_path / "no" / "dir" / "net.py"))
    assert code == 2 and "cannot write" in err and out == ""
    code, out, err = cli(monkeypatch, capsys, "export", "torchvision.models:resnet18")
    assert code == 2 and "needs a YAML spec" in err and out == ""


# --------------------------------------------------------------------------- traced back (the PyTorch front-end)


@pytest.mark.parametrize("spec", ZOO, ids=[p.stem for p in ZOO])
def test_exported_file_traces_back_to_the_same_analysis(spec, tmp_path):
    """Issue 7: an example spec, exported to Python and traced back with torch.fx, gives the same totals,
    output shape and receptive field (rows differ: the trace has one per torch module)."""
    from convcli.sources import load_analysis

    a = analyze_file(spec)
    path = tmp_path / "net.py"
    path.write_text(export_source(a))
    small = a.macs <= FORWARD_MAX_MACS and a.params <= FORWARD_MAX_PARAMS
    with torch.device("cpu" if small else "meta"):  # the big nets: traced without initialising their weights
        b = load_analysis(f"{path}:Net", ",".join(map(str, a.graph.input)))
    assert (b.params, b.macs, tuple(b.output_shape)) == (a.params, a.macs, tuple(a.output_shape))
    assert b.rf == a.rf
    assert (a.first_global is None) == (b.first_global is None)


def test_reuse_and_se_trace_back(tmp_path):
    from convcli.sources import load_analysis

    a = analyze_layers([3, 16, 16], SHARED_SE_RESIDUAL, name="shared-se")
    path = tmp_path / "net.py"
    path.write_text(export_source(a))
    b = load_analysis(f"{path}:Net", "3,16,16")
    assert (b.params, b.macs, b.rf) == (a.params, a.macs, a.rf)
    assert sum(r.shares is not None for r in b.layers) == sum(r.shares is not None for r in a.layers) == 2


def test_exported_file_keeps_the_block_labels_for_the_rules(tmp_path):
    # A student who submits the exported s7 gets the spec's verdict: C1..O survive as `block_labels`.
    from convcli.rules import resolve_rules, run_checks
    from convcli.sources import load_analysis

    a = analyze_file(ROOT / "architectures" / "s7.yaml")
    path = tmp_path / "net.py"
    path.write_text(export_source(a))
    b = load_analysis(f"{path}:Net", "3,32,32")
    verdicts = [{c.rule: c.ok for c in run_checks(x, resolve_rules(a.spec, "s7"))} for x in (a, b)]
    assert verdicts[0] == verdicts[1] and verdicts[1]["structure"]


ACTIVATION_SETTINGS = {
    "elu": lambda: torch.nn.ELU(alpha=0.5),
    "celu": lambda: torch.nn.CELU(alpha=2.0),
    "softplus": lambda: torch.nn.Softplus(beta=2.0, threshold=5.0),
    "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh"),
    "leaky": lambda: torch.nn.LeakyReLU(0.3),
    "f_elu": lambda: (lambda x: torch.nn.functional.elu(x, 0.5)),
    "f_gelu": lambda: (lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    "f_softplus": lambda: (lambda x: torch.nn.functional.softplus(x, 3.0)),
}


@pytest.mark.parametrize("name", list(ACTIVATION_SETTINGS))
def test_an_activations_settings_survive_tracing_and_export(name):
    # The student's own module is the reference: traced, exported and loaded with its weights, the
    # exported file must compute the same function (alpha, beta, approximate were dropped before).
    from convcli.analysis import analyze
    from convcli.spec import parse_spec
    from convcli.spec_writer import spec_yaml
    from convcli.torch_graph import trace_graph

    act = ACTIVATION_SETTINGS[name]()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(2, 3, 3)
            self.a = act if isinstance(act, torch.nn.Module) else None

        def forward(self, x):
            x = self.c(x)
            return self.a(x) if self.a is not None else act(x)

    torch.manual_seed(0)
    student = Net()
    spec = parse_spec(spec_yaml(trace_graph(student, (2, 8, 8), "net.py")), "net.yaml")  # `convcli import`
    exported = load(export_source(analyze(spec)))["Net"]()
    # The spec names the conv by its layer path: the same tensors, in the same order.
    exported.load_state_dict(dict(zip(exported.state_dict(), student.state_dict().values())), strict=True)
    same_function(exported, student, (2, 8, 8))


def test_what_convcli_cannot_express_is_refused_not_changed():
    from convcli.errors import ConvcliError
    from convcli.torch_graph import trace_graph

    cases = {
        "softmax over W": torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Softmax(dim=-1)),
        "align_corners": torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Upsample(
            scale_factor=2, mode="bilinear", align_corners=True)),
    }
    for what, model in cases.items():
        with pytest.raises(ConvcliError, match="Softmax|align_corners"):
            trace_graph(model, (2, 8, 8), "net.py")
    # Over the channel axis a softmax is fine: dim=1, or dim=-1 on a [N, C] vector.
    head = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(108, 4),
                               torch.nn.Softmax(dim=-1))
    assert trace_graph(head, (2, 8, 8), "net.py").nodes[-1].entry.name == "softmax"
    assert trace_graph(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Softmax(dim=-3)), (2, 8, 8),
                       "net.py").nodes[-1].entry.name == "softmax"
