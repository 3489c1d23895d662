"""The assignment rules engine: kinds recognised from what layers are, limits with exact strictness,
profiles, inline rules, verdict rendering and JUnit output.

Small hand-worked nets first; every expected number is derived in a comment, not copied from output.
Conv params with the spec defaults `bn: true, bias: false`: in/g * k*k * out (weights) + 2*out (BN).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from convcli.analysis import analyze, analyze_file
from convcli.errors import SpecError
from convcli.rules import (
    KINDS,
    accuracy_from_run,
    all_ok,
    batch_rows,
    batch_table,
    load_rules,
    resolve_rules,
    run_checks,
    summary_line,
    tally,
    verdict_table,
    write_junit,
)
from convcli.rules.engine import parse_ruleset
from convcli.rules.kinds import find
from convcli.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
S7 = ROOT / "tests" / "specs" / "s7_course.yaml"
S7_TEXT = S7.read_text()
BN = {"conv": {"bn": True, "act": "relu", "bias": False}}


def net(layers, input_shape=(3, 32, 32), rules=None, **top) -> str:
    doc = {"name": top.pop("name", "t"), "input": list(input_shape), "defaults": top.pop("defaults", BN), **top}
    if rules is not None:
        doc["rules"] = rules
    doc["layers"] = layers
    return yaml.safe_dump(doc, sort_keys=False)


def analysis_of(text: str, file: str = "t.yaml"):
    return analyze(parse_spec(text, file))


def checks_for(text: str, profile: str = "s7", accuracy=None, tmp: Path | None = None):
    if tmp is not None:
        path = tmp / "spec.yaml"
        path.write_text(text)
        a = analyze_file(path)
    else:
        a = analysis_of(text)
    return run_checks(a, resolve_rules(a.spec, profile), accuracy=accuracy)


def failing(checks) -> set[str]:
    return {c.rule for c in checks if c.ok is False}


def mutate(old: str, new: str, count: int = 1) -> str:
    assert S7_TEXT.count(old) == count, f"s7.yaml changed: {old!r} found {S7_TEXT.count(old)} times"
    return S7_TEXT.replace(old, new)


# The s7 profile's rule ids (the id scheme: kind + limit, see convcli/rules/engine.py).
S7_IDS = ["input==[3,32,32]", "structure", "count(maxpool)==3", "rf>44", "count(depthwise_separable)>=1",
          "count(dilated)>=1", "gap_before_classifier", "params<1000000", "accuracy>=0.8"]


def seq(name, layers):
    return {"seq": {"name": name, "layers": layers}}


# --------------------------------------------------------------------------- a hand-worked net with RF 44
#
# RF recurrence: r_out = r_in + (k_eff - 1) * j_in, j_out = j_in * s, k_eff = d*(k-1) + 1; start r=1, j=1.
#   C1  conv k3             r = 1 + 2*1 = 3
#       conv k3             r = 3 + 2*1 = 5
#       maxpool k2 s2       r = 5 + 1*1 = 6,   j = 2     (32 -> 16)
#   C2  dwsconv k3          r = 6 + 2*2 = 10             (depthwise k3; pointwise 1x1 adds 0)
#       conv k3             r = 10 + 2*2 = 14
#       maxpool             r = 14 + 1*2 = 16, j = 4     (16 -> 8)
#   C3  conv k3             r = 16 + 2*4 = 24
#       conv k3 d2 (k_eff 5) r = 24 + 4*4 = 40
#       maxpool             r = 40 + 1*4 = 44, j = 8     (8 -> 4)
#   C4  conv k1             r = 44 + 0*8 = 44            <- the last layer before GAP: RF exactly 44
#   O   gap, linear 10
# With C4 = conv k3 instead: r = 44 + 2*8 = 60.
def rf44_net(c4_kernel: int = 1) -> str:
    return net([
        seq("C1", [{"conv": {"out": 16, "k": 3, "p": 1}}, {"conv": {"out": 16, "k": 3, "p": 1}},
                   {"maxpool": {"k": 2}}]),
        seq("C2", [{"dwsconv": {"out": 32, "k": 3, "p": 1}}, {"conv": {"out": 32, "k": 3, "p": 1}},
                   {"maxpool": {"k": 2}}]),
        seq("C3", [{"conv": {"out": 64, "k": 3, "p": 1}}, {"conv": {"out": 64, "k": 3, "p": 2, "d": 2}},
                   {"maxpool": {"k": 2}}]),
        seq("C4", [{"conv": {"out": 64, "k": c4_kernel, "p": c4_kernel // 2}}]),
        seq("O", ["gap", {"linear": {"out": 10}}]),
    ])


def test_rf44_net_hand_numbers():
    a = analysis_of(rf44_net())
    row = a.last_spatial_row()
    assert row.path == "layers[3].seq[0].conv"
    assert [ax.r for ax in row.rf_out] == [44, 44]
    assert [ax.r for ax in analysis_of(rf44_net(3)).last_spatial_row().rf_out] == [60, 60]


def test_rf_exactly_44_fails_only_the_strict_rf_rule():
    assert failing(checks_for(rf44_net(1))) == {"rf>44"}
    assert failing(checks_for(rf44_net(3))) == set()


def test_rf_strictness_is_explicit():
    a = analysis_of(rf44_net())
    for rule, ok in [({"gt": 44}, False), ({"ge": 44}, True), ({"min": 44}, True), (44, True), ({"gt": 43}, True)]:
        rs = parse_ruleset({"rules": [{"min_rf": rule}]}, "r.yaml")
        (check,) = run_checks(a, rs)
        assert check.ok is ok, rule
        assert check.value == 44
    (check,) = run_checks(a, parse_ruleset({"rules": [{"min_rf": {"gt": 44}}]}, "r.yaml"))
    assert check.limit == "> 44" and check.rule == "rf>44"
    assert "layers[3].seq[0].conv (C4)" in check.message and "before GAP" in check.message


def test_rf_at_label_path_and_output():
    a = analysis_of(rf44_net())
    rs = parse_ruleset({"rules": [
        {"max_rf": {"le": 6, "at": "C1"}},                                  # C1's output: r = 6 (above)
        {"min_rf": {"ge": 10, "at": "layers[1].seq[0].dwsconv"}},            # after the dwsconv: r = 10
        {"min_rf": {"gt": 44, "at": "output"}, "name": "rf-output"},         # after GAP: global, r grows
    ]}, "r.yaml")
    c1, dws, out = run_checks(a, rs)
    assert (c1.ok, c1.value, c1.rule) == (True, 6, "rf@C1<=6")
    assert (dws.ok, dws.value) == (True, 10)
    assert out.rule == "rf-output" and "global" in out.message


def test_rf_at_a_missing_label_is_a_bad_rules_file_not_a_fail():
    a = analysis_of(rf44_net())
    rs = parse_ruleset({"rules": [{"min_rf": {"gt": 1, "at": "C9"}}]}, "r.yaml")
    with pytest.raises(SpecError) as exc:
        run_checks(a, rs)
    assert "'C9'" in str(exc.value) and "C1, C2" in str(exc.value)  # the labels it could have meant


def test_rf_per_axis_uses_min_for_min_rf_and_max_for_max_rf():
    # One conv with k = [3, 7]: r = 3 on H, 7 on W.
    a = analysis_of(net([{"conv": {"out": 4, "k": [3, 7], "p": [1, 3]}}], input_shape=(1, 16, 16)))
    lo, hi = run_checks(a, parse_ruleset({"rules": [{"min_rf": {"ge": 5}}, {"max_rf": {"le": 5}}]}, "r.yaml"))
    assert (lo.value, lo.ok) == (3, False) and "3×7" in lo.message and "minimum" in lo.message
    assert (hi.value, hi.ok) == (7, False) and "maximum" in hi.message


# --------------------------------------------------------------------------- s7.yaml and its mutations


def test_s7_passes_s7():
    checks = checks_for(S7_TEXT)
    assert [c.rule for c in checks] == S7_IDS
    assert failing(checks) == set()
    accuracy = checks[-1]
    assert accuracy.ok is None and accuracy.value is None  # not checked without a trained model
    assert all_ok(checks)


def test_s7_spec_names_its_profile():
    a = analyze_file(S7)
    rs = resolve_rules(a.spec, None)  # from the spec's own `rules: s7`
    assert rs is not None and rs.name == "s7" and rs.ids == S7_IDS
    assert resolve_rules(a.spec, "none") is None


def test_s7_hand_params():
    # C1: conv 3->32 k3: 3*9*32 + 64 = 928; conv 32->32: 32*9*32 + 64 = 9,280
    # C2: dwsconv 32->64: depthwise 1*9*32 + 64 = 352, pointwise 32*64 + 128 = 2,176; conv d2 64->64: 36,864 + 128
    # C3: conv 64->128: 73,728 + 256 = 73,984; dwsconv 128->128: 1,152 + 256 = 1,408 and 16,384 + 256 = 16,640
    # C4: 2 x dwsconv 128->128: 2 x (1,408 + 16,640) = 36,096
    # backbone: 928 + 9,280 + 352 + 2,176 + 36,992 + 73,984 + 1,408 + 16,640 + 36,096 = 177,856
    # O: linear 128->10 with bias: 1,290  -> 179,146
    assert analyze_file(S7).params == 177_856 + 1_290


@pytest.mark.parametrize("case, old, new, count, expected", [
    ("a 4th max-pool", "        - dwsconv: {out: 128, k: 3, p: 1}        # RF 56",
     "        - maxpool: {k: 2}\n        - dwsconv: {out: 128, k: 3, p: 1}", 1, {"count(maxpool)==3"}),
    ("no dilation", "{out: 64, k: 3, p: 2, d: 2}", "{out: 64, k: 3, p: 1}", 1, {"count(dilated)>=1"}),
    # every dwsconv becomes a plain conv (same k, p: RF unchanged; params grow but stay < 1M)
    ("no depthwise-separable", "- dwsconv:", "- conv:", 4, {"count(depthwise_separable)>=1"}),
    ("no GAP", "        - gap ", "        - flatten ", 1, {"gap_before_classifier"}),
    # 6,423 classes: backbone 177,856 (test_s7_hand_params) + linear 128*6,423 + 6,423 = 1,006,423 params.
    ("1,006,423 params", "classes: 10", "classes: 6423", 1, {"params<1000000"}),
])
def test_s7_mutations_fail_exactly_the_expected_rule(case, old, new, count, expected):
    text = mutate(old, new, count)
    assert failing(checks_for(text)) == expected, case


def test_one_million_params_exactly_and_boundary():
    # 1,000,000 params exactly: backbone 177,856 + linear 128 -> 6,423 without bias: 128 * 6,423 = 822,144.
    text = mutate("linear: {out: $classes}", "linear: {out: $classes, bias: false}")
    text = text.replace("classes: 10", "classes: 6423")
    a = analysis_of(text)
    assert a.params == 1_000_000
    strict, inclusive, bare = run_checks(a, parse_ruleset({"rules": [
        {"max_params": {"lt": 1_000_000}}, {"max_params": {"le": 1_000_000}}, {"max_params": 999_999}]}, "r.yaml"))
    assert (strict.ok, inclusive.ok, bare.ok) == (False, True, False)
    assert strict.limit == "< 1,000,000" and strict.value == 1_000_000
    assert bare.limit == "<= 999,999" and bare.rule == "params<=999999"


def test_accuracy_is_checked_only_when_given():
    a = analyze_file(S7)
    rs = resolve_rules(a.spec, "s7")
    assert run_checks(a, rs, accuracy=0.81)[-1].ok is True
    low = run_checks(a, rs, accuracy=0.79)
    assert failing(low) == {"accuracy>=0.8"} and low[-1].limit == ">= 80%"
    assert run_checks(a, rs, accuracy=0.80)[-1].ok is True  # min: inclusive
    with pytest.raises(ValueError):
        run_checks(a, rs, accuracy=85.0)  # a percentage, not a fraction


def test_accuracy_from_a_run_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"best_acc": 0.8123, "final_test_acc": 0.80}))
    assert accuracy_from_run(tmp_path) == 0.8123
    assert accuracy_from_run({"best_acc": None, "final_test_acc": 0.7}) == 0.7
    assert accuracy_from_run({"best_acc": None}) is None
    with pytest.raises(SpecError, match="no summary.json"):
        accuracy_from_run(tmp_path / "nope")


# --------------------------------------------------------------------------- kinds from what layers are


def count(text_or_analysis, kind):
    a = analysis_of(text_or_analysis) if isinstance(text_or_analysis, str) else text_or_analysis
    return len(find(a, kind))


def test_depthwise_separable_written_as_two_plain_convs():
    layers = [{"conv": {"out": 32, "k": 3, "p": 1}},
              {"conv": {"out": 32, "k": 3, "p": 1, "g": 32}},     # groups == in_channels (32) > 1
              {"conv": {"out": 64, "k": 1}}]                      # 1x1, groups 1
    assert count(net(layers), "depthwise_separable") == 1
    assert count(net(layers), "depthwise") == 1 and count(net(layers), "pointwise") == 1


@pytest.mark.parametrize("layers, expected", [
    # depthwise + pointwise written separately
    ([{"depthwise": {"k": 3}}, {"pointwise": {"out": 16}}], 1),
    # with standalone BN / activation / dropout between: still a pair
    ([{"depthwise": {"k": 3}}, "batchnorm", "relu", {"dropout": 0.1}, {"pointwise": {"out": 16}}], 1),
    # a 3x3 conv after the depthwise: not separable
    ([{"depthwise": {"k": 3}}, {"conv": {"out": 16, "k": 3}}, {"conv": {"out": 16, "k": 1}}], 0),
    # grouped (g = 2 < in = 8) then 1x1: not depthwise, not separable
    ([{"conv": {"out": 8, "k": 3, "g": 2}}, {"conv": {"out": 16, "k": 1}}], 0),
    # a pointwise completes one pair only: dw, dw, pw -> 1 (the first dw is followed by a dw)
    ([{"depthwise": {"k": 3}}, {"depthwise": {"k": 3}}, {"pointwise": {"out": 16}}], 1),
    # dw, pw, pw -> 1
    ([{"depthwise": {"k": 3}}, {"pointwise": {"out": 16}}, {"pointwise": {"out": 16}}], 1),
    # two dwsconvs -> 2
    ([{"dwsconv": {"out": 8}}, {"dwsconv": {"out": 16}}], 2),
    # depthwise at the end of a concat branch; the next branch starts with a 1x1 conv on the block input:
    # no data flows from the depthwise into that 1x1, so no pair
    ([{"concat": [[{"depthwise": {"k": 3}}], [{"conv": {"out": 8, "k": 1}}]]}], 0),
    # depthwise then a residual whose body starts with the 1x1: the 1x1 consumes the depthwise output
    ([{"depthwise": {"k": 3}}, {"residual": [{"conv": {"out": 8, "k": 1}}]}], 1),
    # a 1x1 depthwise conv is a per-channel scale: with a 1x1 after it, the pair is one 1x1 conv in effect
    ([{"depthwise": {"k": 1}}, {"pointwise": {"out": 16}}], 0),
    # a 3x1 depthwise filters along one axis: a (spatially separable) depthwise-separable pair
    ([{"depthwise": {"k": [3, 1]}}, {"pointwise": {"out": 16}}], 1),
    # a channel shuffle between them moves whole channels: still a pair
    ([{"depthwise": {"k": 3}}, {"channelshuffle": 2}, {"pointwise": {"out": 16}}], 1),
    # MobileNetV3 / EfficientNet: depthwise, then an SE gate (x * sigmoid(fc(GAP(x))), a per-channel scale
    # mixing neither channels nor positions), then the 1x1: still a pair
    ([{"depthwise": {"k": 3}}, {"mul": [[], [{"gap": {"keepdim": True}}, {"pointwise": {"out": 2, "act": "relu"}},
                                             {"pointwise": {"out": 8, "act": "sigmoid"}}]]},
      {"pointwise": {"out": 16}}], 1),
    # a spatial gate (a 3x3 conv to a 1-channel sigmoid map, broadcast over the channels) scales positions:
    # still a pair
    ([{"depthwise": {"k": 3}}, {"mul": [[], [{"conv": {"out": 1, "k": 3, "p": 1, "act": "sigmoid"}}]]},
      {"pointwise": {"out": 16}}], 1),
    # the gate's own 1x1 convs sit on the GAP branch and do not read the depthwise map: no pair without
    # the 1x1 after the gate
    ([{"depthwise": {"k": 3}}, {"mul": [[], [{"gap": {"keepdim": True}}, {"pointwise": {"out": 2, "act": "relu"}},
                                             {"pointwise": {"out": 8, "act": "sigmoid"}}]]}], 0),
])
def test_depthwise_separable_recognition(layers, expected):
    assert count(net(layers, input_shape=(8, 16, 16)), "depthwise_separable") == expected


def test_dilated_strided_and_downsampling_kinds():
    layers = [{"conv": {"out": 8, "k": 3, "p": 2, "d": 2}},        # dilated
              {"conv": {"out": 8, "k": 3, "p": 1, "d": [1, 2]}},   # dilated on one axis
              {"conv": {"out": 8, "k": 3, "p": 1, "s": 2}},        # strided conv, downsampling (16 -> 8)
              {"maxpool": {"k": 2}},                               # downsampling (8 -> 4), not a conv
              {"maxpool": {"k": 3, "s": 1, "p": 1}},              # stride 1: neither
              {"conv": {"out": 8, "k": 1, "d": 3}},                # k=1: span d(k-1)+1 = 1, not dilated
              {"conv": {"out": 8, "k": [3, 1], "d": [1, 2], "p": [1, 0]}},  # d only on the 1-wide axis: not
              "gap", {"linear": {"out": 10}}]
    a = analysis_of(net(layers, input_shape=(3, 16, 16)))
    assert count(a, "dilated") == 2
    assert count(a, "strided_conv") == 1
    assert count(a, "downsampling") == 2
    assert count(a, "maxpool") == 2 and count(a, "gap") == 1 and count(a, "linear") == 1


def test_residual_projection_does_not_count_twice():
    # body: conv s2 (16 -> 8) + conv; the auto shortcut is a 1x1 stride-2 projection: one resolution drop
    layers = [{"residual": [{"conv": {"out": 16, "k": 3, "p": 1, "s": 2}}, {"conv": {"out": 16, "k": 3, "p": 1}}]}]
    a = analysis_of(net(layers, input_shape=(8, 16, 16)))
    assert count(a, "conv") == 3  # the projection is a conv layer...
    assert count(a, "strided_conv") == 1 and count(a, "downsampling") == 1  # ...but not a second downsampling


def test_the_classifier_chain_names_each_function():
    a = analysis_of(net([{"conv": {"out": 16}}, "gap", "relu", {"linear": {"out": 10}}, "log_softmax"],
                        input_shape=(8, 8, 8)))
    (check,) = run_checks(a, parse_ruleset({"rules": [{"gap_before_classifier": True}]}, "r.yaml"))
    assert check.ok and check.measured == "gap -> relu -> linear -> log_softmax"


def test_gap_kinds_and_classifier_head():
    def gap_ok(layers):
        (check,) = run_checks(analysis_of(net(layers, input_shape=(8, 8, 8))),
                              parse_ruleset({"rules": [{"gap_before_classifier": True}]}, "r.yaml"))
        return check.ok

    assert gap_ok([{"conv": {"out": 16}}, "gap", {"dropout": 0.1}, {"linear": {"out": 10}}, "log_softmax"])
    assert gap_ok([{"conv": {"out": 16}}, {"gap": {"keepdim": True}}, {"conv": {"out": 10, "k": 1}}, "flatten"])
    assert gap_ok([{"conv": {"out": 10, "k": 1}}, "gap"])  # 1x1 conv to classes, then GAP as the last layer
    assert gap_ok([{"conv": {"out": 16}}, {"adaptiveavgpool": 1}, "flatten", {"linear": {"out": 10}}])
    assert not gap_ok([{"conv": {"out": 16}}, "flatten", {"linear": {"out": 10}}])  # no GAP
    assert not gap_ok([{"conv": {"out": 16}}, {"adaptiveavgpool": 2}, "flatten", {"linear": {"out": 10}}])
    # strided convs down to a 1x1 map (8 -> 4 -> 2 -> 1), then the GAP written as an adaptive pool to 1 (as in
    # resnet18 at 32x32): it averages one position, and it is still the network's global average pool
    to_1x1 = [{"conv": {"out": 16, "s": 2, "p": 1}}] * 3
    assert gap_ok([*to_1x1, {"adaptiveavgpool": 1}, "flatten", {"linear": {"out": 10}}])
    assert gap_ok([*to_1x1, "gap", {"linear": {"out": 10}}])
    assert not gap_ok([*to_1x1, "flatten", {"linear": {"out": 10}}])  # the same map flattened: no GAP written
    # a 3x3 conv on the 1x1 map after GAP is not a classifier
    assert not gap_ok([{"conv": {"out": 16}}, {"gap": {"keepdim": True}}, {"conv": {"out": 10, "k": 3, "p": 1}}])


def test_every_kind_has_a_description_and_runs():
    a = analyze_file(S7)
    for name, kind in KINDS.items():
        assert kind.description
        assert isinstance(kind.find(a), list), name


# --------------------------------------------------------------------------- s7-strided


# A stride-2 design, hand-worked (RF: r_out = r_in + (k_eff-1)*j_in):
#   C1  conv 3->16 k3           r 3                 params 3*9*16 + 32   = 464
#       conv 16->32 k3 s2       r 5,  j 2 (32->16)  params 16*9*32 + 64  = 4,672
#   C2  dwsconv 32->64 k3       r 9                 params (288 + 64) + (2,048 + 128) = 2,528
#       conv 64->64 k3 d2       r 9 + 4*2 = 17      params 36,864 + 128  = 36,992
#       conv 64->64 k3 s2       r 21, j 4 (16->8)   36,992
#   C3  conv 64->64 k3          r 29                36,992
#       conv 64->64 k3 s2       r 37, j 8 (8->4)    36,992
#   C4  conv 64->64 k3          r 53 (> 44)         36,992
#   O   gap, linear 64->10                          650
#   total 464 + 4,672 + 2,528 + 5 * 36,992 + 650 = 193,274 (< 200,000)
def strided_net() -> str:
    c = {"out": 64, "k": 3, "p": 1}
    return net([
        seq("C1", [{"conv": {"out": 16, "k": 3, "p": 1}}, {"conv": {"out": 32, "k": 3, "p": 1, "s": 2}}]),
        seq("C2", [{"dwsconv": {"out": 64, "k": 3, "p": 1}}, {"conv": {"out": 64, "k": 3, "p": 2, "d": 2}},
                   {"conv": {**c, "s": 2}}]),
        seq("C3", [{"conv": c}, {"conv": {**c, "s": 2}}]),
        seq("C4", [{"conv": c}]),
        seq("O", ["gap", {"linear": {"out": 10}}]),
    ])


def test_strided_design_passes_s7_strided():
    a = analysis_of(strided_net())
    assert a.params == 193_274
    assert [ax.r for ax in a.last_spatial_row().rf_out] == [53, 53]
    checks = checks_for(strided_net(), "s7-strided", accuracy=0.86)
    assert failing(checks) == set() and all(c.ok for c in checks)
    # ...and fails s7 on the max-pool count only
    assert failing(checks_for(strided_net(), "s7")) == {"count(maxpool)==3"}


def test_s7_fails_s7_strided_on_maxpool_and_strides():
    assert failing(checks_for(S7_TEXT, "s7-strided")) == {"forbid(maxpool)", "count(strided_conv)==3"}


# --------------------------------------------------------------------------- structure


def test_structure_needs_labels_in_order():
    a = analysis_of(net([seq("C1", [{"conv": {"out": 8}}]), seq("O", ["gap"])]))
    rs = parse_ruleset({"rules": [{"structure": ["C1", "O"]}, {"structure": ["C1", "C2", "O"], "name": "s2"}]},
                       "r.yaml")
    ok, bad = run_checks(a, rs)
    assert ok.ok and not bad.ok and "C1 O" in bad.message
    unlabelled = run_checks(analysis_of(net([{"conv": {"out": 8}}, "gap"])), rs)[0]
    assert unlabelled.ok is False and "labels no blocks" in unlabelled.message
    # labels nested inside a labelled block are not part of the structure
    nested = analysis_of(net([seq("C1", [{"conv": {"out": 8, "name": "inner"}}]), seq("O", ["gap"])]))
    assert run_checks(nested, rs)[0].ok


# --------------------------------------------------------------------------- rule files and resolution


def test_profiles_load_and_have_stable_ids():
    s7 = load_rules(ROOT / "architectures" / "rules" / "s7.yaml")
    assert s7.ids == S7_IDS
    strided = load_rules(ROOT / "architectures" / "rules" / "s7-strided.yaml")
    assert "forbid(maxpool)" in strided.ids and "params<200000" in strided.ids and "accuracy>=0.85" in strided.ids


def test_inline_rules_and_relative_paths(tmp_path):
    inline = net([{"conv": {"out": 8}}, "gap"], rules={"name": "mine", "rules": [{"max_params": {"lt": 100}}]})
    # conv 3->8 k3 with BN: 3*9*8 + 16 = 232 params
    checks = checks_for(inline, profile=None, tmp=tmp_path)
    assert [(c.rule, c.ok, c.value) for c in checks] == [("params<100", False, 232)]
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "small.yaml").write_text("rules:\n  - max_params: {le: 232}\n")
    relative = net([{"conv": {"out": 8}}, "gap"], rules="rules/small.yaml")
    assert [(c.rule, c.ok) for c in checks_for(relative, profile=None, tmp=tmp_path)] == [("params<=232", True)]
    # --rules overrides the spec's rules
    assert failing(checks_for(relative, profile=str(tmp_path / "rules" / "small.yaml"), tmp=tmp_path)) == set()


def write_rules(tmp_path, text) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, line, hint", [
    ("name: x\nrules:\n  - max_params: {lt: 10}\n  - max_param: {lt: 10}\n", 4, "'max_params'"),
    ("rules:\n  - count: {kind: maxpol, exactly: 3}\n", 2, "'maxpool'"),
    ("rules:\n  - forbid: depthwise_seperable\n", 2, "'depthwise_separable'"),
    ("rules:\n  - min_rf:\n      gt: 44\n      att: before_gap\n", 4, "'at'"),
    ("rules:\n  - max_params: {lte: 10}\n", 2, "'lt'"),
    ("name: x\nrule:\n  - max_params: 10\n", 2, "'rules'"),
])
def test_bad_rule_file_gives_line_and_did_you_mean(tmp_path, text, line, hint):
    path = write_rules(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        load_rules(path)
    err = exc.value
    assert err.file == str(path) and err.line == line
    assert hint in (err.suggestion or ""), err.render()
    assert f"{path}:{line}" in err.render()
    assert err.exit_code == 2


@pytest.mark.parametrize("text, fragment", [
    ("rules:\n  - max_params: {gt: 10}\n", "unknown limit key"),          # max_* takes lt/le only
    ("rules:\n  - accuracy: {min: 85}\n", "fraction"),
    ("rules:\n  - count: {kind: maxpool}\n", "no limit"),
    ("rules:\n  - max_params: 10\n  - max_params: 10\n", "two rules with the id"),
    ("rules:\n  - {max_params: 10, min_params: 1}\n", "exactly one rule kind"),
    ("rules: []\n", "non-empty"),
    ("rules:\n  - gap_before_classifier: false\n", "takes `true`"),
])
def test_bad_rule_values(tmp_path, text, fragment):
    with pytest.raises(SpecError, match=fragment):
        load_rules(write_rules(tmp_path, text))


def test_unknown_profile_points_at_the_spec_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(net([{"conv": {"out": 8}}, "gap"], rules="s7_strided"))
    a = analyze_file(path)
    with pytest.raises(SpecError) as exc:
        resolve_rules(a.spec, None)
    assert exc.value.line == a.spec.raw.line_of("rules") and "'s7-strided'" in (exc.value.suggestion or "")
    assert "s7, s7-strided" in exc.value.render()
    with pytest.raises(SpecError, match="no such rules file"):
        resolve_rules(a.spec, "missing/rules.yaml")


# --------------------------------------------------------------------------- output


def test_json_table_and_summary():
    checks = checks_for(S7_TEXT)
    for c in checks:
        assert set(c.to_json()) == {"rule", "ok", "value", "limit", "message"}
    json.dumps([c.to_json() for c in checks])
    params = next(c for c in checks if c.rule == "params<1000000").to_json()
    assert params["limit"] == "< 1,000,000" and params["ok"] is True
    assert verdict_table(checks).row_count == len(checks)
    bad = checks_for(mutate("{out: 64, k: 3, p: 2, d: 2}", "{out: 64, k: 3, p: 1}"))
    assert summary_line(bad).startswith("1 of 9 rules failed: count(dilated)>=1")


def test_batch_and_junit(tmp_path):
    good = analyze_file(S7)
    bad = analysis_of(mutate("{out: 64, k: 3, p: 2, d: 2}", "{out: 64, k: 3, p: 1}"))
    rs = resolve_rules(good.spec, "s7")
    results = [("s7.yaml", run_checks(good, rs), good), ("nodil.yaml", run_checks(bad, rs), bad),
               ("broken.yaml", SpecError("unknown layer type 'convv'", file="broken.yaml", line=3), None)]
    header, rows = batch_rows(results)
    assert header[:2] == ["Spec", "Status"] and header[2:-1] == S7_IDS and header[-1] == "Reason"
    assert rows[0][1] == "PASS" and rows[0][header.index("params<1000000")] == "179,146"
    assert rows[0][header.index("rf>44")] == "72"  # worked by hand in test_cli.test_rf_json_has_documented_keys
    # Without the dilated conv: no dilation anywhere, so the rule's measured count is 0, marked failed.
    assert rows[1][header.index("count(dilated)>=1")] == "0 ✗" and rows[1][1] == "FAIL"
    assert rows[1][-1].startswith("count(dilated)>=1: 0 dilated")
    assert rows[2][1] == "ERROR" and "unknown layer type 'convv'" in rows[2][-1] and "broken.yaml:3" in rows[2][-1]
    assert batch_table(results).row_count == 3
    assert tally(results) == "1 pass, 1 fail, 1 error"

    out = write_junit(tmp_path / "junit" / "rules.xml", results)
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["s7", "nodil", "broken"]
    assert {c.get("classname") for c in suites[1].iter("testcase")} == {"nodil"}
    assert [(s.get("tests"), s.get("failures"), s.get("skipped"), s.get("errors")) for s in suites] == [
        ("9", "0", "1", "0"), ("9", "1", "1", "0"), ("1", "0", "0", "1")]
    failure = suites[1].find("testcase[@name='count(dilated)>=1']/failure")
    assert failure is not None and "0 dilated" in failure.get("message")
    skipped = suites[0].find("testcase[@name='accuracy>=0.8']/skipped")
    assert skipped is not None and not skipped.attrib and "not checked" in skipped.text
    assert root.get("failures") == "1" and root.get("tests") == "19" and root.get("errors") == "1"
    assert "skipped" not in root.attrib  # the strict Jenkins schema has no skipped= on <testsuites>


def test_rules_stay_torch_free():
    code = ("import sys\nfrom convcli.analysis import analyze_file\nfrom convcli.rules import resolve_rules, "
            "run_checks, render_checks, write_junit\na = analyze_file(sys.argv[1])\n"
            "run_checks(a, resolve_rules(a.spec, None))\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(S7)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_depthwise_conv_without_its_pointwise_is_named_in_the_failure():
    # depthwise 3x3 then a 3x3 conv: no 1x1 follows it, so it is not depthwise-separable; the reason says so.
    a = analysis_of(net([{"depthwise": {"k": 3}}, {"conv": {"out": 8, "k": 3}}],
                        rules=[{"count": {"kind": "depthwise_separable", "min": 1}}]))
    [check] = run_checks(a, resolve_rules(a.spec, None))
    assert not check.ok and "layers[0].depthwise: no 1x1 conv follows it" in check.message


def test_dilation_on_a_1_wide_kernel_is_named_as_the_near_miss():
    # k=1, d=2: every tap is still one pixel, so the net has no dilated conv, and the reason says why.
    a = analysis_of(net([{"conv": {"out": 8, "k": 1, "d": 2}}, "gap"],
                        rules=[{"count": {"kind": "dilated", "min": 1}}]))
    [check] = run_checks(a, resolve_rules(a.spec, None))
    assert not check.ok and "layers[0].conv: its dilation is on 1-wide kernel axes" in check.message


def test_a_1x1_depthwise_conv_is_named_as_the_near_miss():
    a = analysis_of(net([{"depthwise": {"k": 1}}, {"pointwise": {"out": 8}}],
                        rules=[{"count": {"kind": "depthwise_separable", "min": 1}}]))
    [check] = run_checks(a, resolve_rules(a.spec, None))
    assert not check.ok and "layers[0].depthwise: a 1x1 depthwise conv only scales each channel" in check.message


def test_a_1x1_strided_max_pool_subsamples_and_does_not_count():
    # MaxPool(1, stride=2) takes the max of one value: a subsample, not a pooling; a 3x3 stride-1 pool
    # (Inception's pool branch) does pool. So one max-pool counts here, and the 1x1 one is the named near miss.
    a = analysis_of(net([{"conv": {"out": 8}}, {"maxpool": {"k": 1, "s": 2}}, {"maxpool": {"k": 3, "s": 1, "p": 1}}],
                        rules=[{"count": {"kind": "maxpool", "eq": 2}}]))
    [check] = run_checks(a, resolve_rules(a.spec, None))
    assert not check.ok and check.value == 1
    assert "layers[1].maxpool: a 1x1 window at stride 2x2 pools nothing: it subsamples" in check.message


@pytest.mark.parametrize("head, gap_ok", [
    ({"add": [[{"adaptiveavgpool": 1}], [{"adaptivemaxpool": 1}]]}, False),  # GAP + global max: not only GAP
    ({"concat": [[{"adaptiveavgpool": 1}], [{"adaptivemaxpool": 1}]]}, False),  # fastai's concat pool
    ({"add": [[{"adaptiveavgpool": 1}], [{"adaptiveavgpool": 1}, "relu"]]}, True),  # two GAP heads, joined after
])
def test_global_ops_on_parallel_paths_end_the_map_together(head, gap_ok):
    # By hand: conv k3 (RF 3), maxpool 2 (4, j 2), conv k3 (4 + 2*2 = 8), maxpool 2 (10, j 4) -> a 4x4 map.
    # The pools on the two paths read that map: the RF before them is 10, not the union after GAP (22)
    layers = [{"conv": {"out": 8}}, {"maxpool": {"k": 2}}, {"conv": {"out": 8}}, {"maxpool": {"k": 2}}, head,
              "flatten", {"linear": {"out": 10}}]
    a = analysis_of(net(layers, input_shape=(3, 16, 16)))
    assert [int(x.r) for x in a.rf_before_global()] == [10, 10] and len(a.global_ops) == 2
    (check,) = run_checks(a, parse_ruleset({"rules": [{"gap_before_classifier": True}]}, "r.yaml"))
    assert check.ok is gap_ok
    if not gap_ok:
        assert "global_maxpool" in check.message


def test_an_se_blocks_gap_is_not_where_the_map_ends():
    # the SE gate's GAP is multiplied back into the map, which the identity path carries on: the map ends at
    # the classifier's GAP (RF 3 + 2 = 5 after two 3x3 convs), not at the SE's
    gate = [{"gap": {"keepdim": True}}, {"pointwise": {"out": 8, "act": "sigmoid"}}]
    layers = [{"conv": {"out": 8}}, {"mul": [[], gate]}, {"conv": {"out": 8}}, "gap", {"linear": {"out": 10}}]
    a = analysis_of(net(layers, input_shape=(3, 16, 16)))
    assert len(a.global_ops) == 1 and a.global_ops[0].path.startswith("layers[3]")
    assert [int(x.r) for x in a.rf_before_global()] == [5, 5]


def test_an_average_pool_short_of_the_whole_map_is_named_as_the_missing_gap():
    # avgpool k7 s7 on 8x8: floor((8 - 7)/7) + 1 = 1, so a 1x1 map, but row 8 and column 8 are never averaged
    a = analysis_of(net([{"conv": {"out": 16, "k": 3, "p": 1}}, {"avgpool": {"k": 7}}, {"conv": {"out": 10, "k": 1}},
                         "flatten"], input_shape=(3, 8, 8)))
    (check,) = run_checks(a, parse_ruleset({"rules": [{"gap_before_classifier": True}]}, "r.yaml"))
    assert not check.ok and check.shown == "flatten, not GAP"
    assert "averages a 7x7 window of the 8x8 map, not all of it: a GAP is kernel 8x8" in check.message
