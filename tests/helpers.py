"""Small helpers shared by the tests: specs from Python dicts, and building them."""

from __future__ import annotations

import yaml

from convcli.analysis import analyze
from convcli.spec import parse_spec


def spec_text(input_shape, layers, **top) -> str:
    doc = {"name": top.pop("name", "t"), "input": list(input_shape), **top, "layers": layers}
    return yaml.safe_dump(doc, sort_keys=False)


def analyze_layers(input_shape, layers, **top):
    return analyze(parse_spec(spec_text(input_shape, layers, **top), "t.yaml"))


def build(analysis):
    from convcli.build import build_model

    return build_model(analysis)
