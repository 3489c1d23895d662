"""A fingerprint of an analysed network, so a training run can be matched to the spec it trained.

The hash covers what makes two networks the same for training purposes, read from the analysis's
layer rows (every leaf row: layers and joins, in order) plus the input shape:

    op, pool, join, kernel, stride, dilation, groups, in/out channels, output shape, params, act, bn

Names, labels, comments, YAML layout and the `train:` section do not count, so a spec that was only
reformatted or relabelled keeps its fingerprint; a changed width, kernel, stride, activation or an
added layer changes it.

For the training code (`convcli train` records both in summary.json):

    from convcli.fingerprint import run_record
    summary.update(run_record(analysis))   # {"fingerprint": "v1:...", "layers": [...]}

`inspect --run` compares the fingerprints and, when they differ, names the first differing layer with
`first_difference(layer_records(analysis), summary["layers"])`.
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction

VERSION = "v1"
FIELDS = ("op", "pool", "join", "kernel", "stride", "dilation", "groups", "in_channels", "out_channels",
          "out_shape", "params", "act", "bn")


def _norm(v):
    """JSON-stable values: tuples as lists, fractions as 'a/b', floats by repr."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, Fraction):
        return v.numerator if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    if isinstance(v, float):
        return int(v) if v.is_integer() else repr(v)
    return str(v)


def _rows(source) -> list:
    rows = getattr(source, "rows", source)
    return [r for r in rows if getattr(r, "kind", "layer") != "block"]


def layer_records(source) -> list[dict]:
    """One record per leaf row of an Analysis (or a list of its rows): `path` plus the FIELDS."""
    out = []
    for r in _rows(source):
        f = r.facts
        out.append({
            "path": r.path,
            "op": f.op if f else r.type,
            "pool": f.pool if f else None,
            "join": f.join if f else None,
            "kernel": _norm(f.kernel) if f else [],
            "stride": _norm(f.stride) if f else [],
            "dilation": _norm(f.dilation) if f else [],
            "groups": f.groups if f else 1,
            "in_channels": f.in_channels if f else None,
            "out_channels": f.out_channels if f else None,
            "out_shape": _norm(r.out_shape),
            "params": r.params,
            # v1 records a conv/linear block's activation only: a standalone relu row's own name is left
            # out, so runs fingerprinted before standalone rows carried it still match
            "act": f.act if f and f.op not in ("act", "softmax") else None,
            "bn": bool(f.bn) if f else False,
        })
    return out


def fingerprint_of_records(records: list[dict], input_shape) -> str:
    payload = {"input": _norm(list(input_shape)), "layers": [[_norm(rec.get(k)) for k in FIELDS] for rec in records]}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{VERSION}:{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def fingerprint(analysis, input_shape=None) -> str:
    """`v1:` + 20 hex digits of a SHA-256 over the layer records and the input shape. `analysis` is an
    Analysis, or a list of its rows with `input_shape` given."""
    shape = input_shape if input_shape is not None else analysis.input_shape
    return fingerprint_of_records(layer_records(analysis), shape)


def run_record(analysis) -> dict:
    """What a training run stores in summary.json to be matched later."""
    return {"fingerprint": fingerprint(analysis), "input": list(analysis.input_shape),
            "layers": layer_records(analysis)}


def _show(v) -> str:
    if isinstance(v, list):
        return "×".join(map(str, v)) if v else "-"
    return "-" if v is None else str(v)


def first_difference(ours, theirs, our_input=None, their_input=None, names=("the spec", "the run")) -> str | None:
    """The first layer at which two networks differ, in words; None when they agree. `ours`/`theirs` are
    layer-record lists (or Analyses / row lists)."""
    a = ours if ours and isinstance(ours[0], dict) else layer_records(ours) if ours else []
    b = theirs if theirs and isinstance(theirs[0], dict) else layer_records(theirs) if theirs else []
    x, y = names
    if our_input is not None and their_input is not None and list(our_input) != list(their_input):
        return f"input {_show(list(our_input))} in {x}, {_show(list(their_input))} in {y}"
    for i, (p, q) in enumerate(zip(a, b)):
        for k in FIELDS:
            if _norm(p.get(k)) != _norm(q.get(k)):
                where = p.get("path") or f"layer {i + 1}"
                other = q.get("path")
                at = where if not other or other == where else f"{where} ({other} in {y})"
                return f"{at}: {k.replace('_', ' ')} {_show(_norm(p.get(k)))} in {x}, {_show(_norm(q.get(k)))} in {y}"
    if len(a) != len(b):
        longer, n = (x, len(b)) if len(a) > len(b) else (y, len(a))
        extra = (a if len(a) > len(b) else b)[n]
        return (f"{x} has {len(a)} layers, {y} {len(b)}: {longer} goes on with "
                f"{extra.get('path') or 'layer ' + str(n + 1)} ({extra.get('op')})")
    return None


__all__ = ["fingerprint", "layer_records", "run_record", "first_difference", "fingerprint_of_records", "FIELDS",
           "VERSION"]
