"""Rule kinds and the engine: parse a rule set's YAML into `Rule`s, run them over an `Analysis`.

Every rule kind is one entry of `RULE_KINDS` (its YAML parser and its check together), so adding a
rule kind touches only this file. See `convcli/rules/__init__.py` for the YAML format.

Rule ids (stable, used in verdict tables, JSON, JUnit and exit messages): a rule's `name:` when given,
otherwise derived from the rule: `params<1000000`, `params>=1000`, `macs<=5000000`, `rf>44`,
`rf@output<=200`, `count(maxpool)==3`, `count(dilated)>=1`, `forbid(maxpool)`, `gap_before_classifier`,
`input==[3,32,32]`, `structure`, `accuracy>=0.8`. Two rules with the same id in one set are an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from convcli.errors import did_you_mean
from convcli.layers.registry import Where
from convcli.rules import kinds as K
from convcli.rules.model import (
    OPS,
    SYNONYMS,
    Bound,
    Check,
    Rule,
    RuleSet,
    bounds_ok,
    fmt_int,
    fmt_number,
    fmt_percent,
    ident_bounds,
    plain,
    render_bounds,
)
from convcli.yamlio import LineDict, LineList

RULESET_KEYS = ("name", "description", "rules")
ENTRY_KEYS = ("name", "description")  # allowed next to the rule kind in one list item
RF_AT = ("before_gap", "output")


class RuleRefError(Exception):
    """A rule names something the network does not have (`at: nowhere`): the rules file is wrong, not the
    network, so it is exit 2 at the rule's line, not a FAIL."""

    def __init__(self, message: str, **kw):
        super().__init__(message)
        self.message, self.kw = message, kw


@dataclass(frozen=True)
class RuleKind:
    name: str
    doc: str
    parse: Callable  # (value, Where) -> (args: dict, default id: str)
    check: Callable  # (analysis, args, accuracy) -> Check (rule id filled in by the engine)
    example: str = ""


RULE_KINDS: dict[str, RuleKind] = {}


def rule_kind(name: str, doc: str, example: str = ""):
    def deco(cls):
        if name in RULE_KINDS:
            raise RuntimeError(f"rule kind '{name}' defined twice")
        RULE_KINDS[name] = RuleKind(name, doc, cls.parse, cls.check, example)
        return cls

    return deco


# --------------------------------------------------------------------------- parsing helpers


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _line(container, key, default):
    if isinstance(container, (LineDict, LineList)):
        return container.line_of(key)
    return default


def parse_bounds(value, here: Where, *, allowed: tuple[str, ...], bare: str | None, extras: tuple[str, ...] = ()):
    """A number (→ `bare`, e.g. le for max_*) or a mapping of limit keys; returns (bounds, extra values)."""
    if _is_number(value) and bare:
        return [Bound(bare, value)], {}
    accepted = [k for k in OPS if k in allowed] + [s for s, k in SYNONYMS.items() if k in allowed]
    expected = "a number or a mapping of " + ", ".join(accepted) + (
        " (lt/gt strict; le/ge/min/max/eq/exactly inclusive)")
    if not isinstance(value, dict):
        raise here.error("wrong limit", expected=expected, got=value)
    bounds, extra = [], {}
    for key, v in value.items():
        sub = Where(here.file, _line(value, key, here.line), here.path)
        if key in extras:
            extra[key] = v
            continue
        op = SYNONYMS.get(key, key)
        if op not in allowed:
            raise sub.error(f"unknown limit key '{key}'", expected=", ".join(accepted + list(extras)),
                            suggestion=did_you_mean(str(key), accepted + list(extras)))
        if not _is_number(v):
            raise sub.error(f"the limit '{key}' must be a number", got=v)
        bounds.append(Bound(op, v))
    if not bounds:
        raise here.error("no limit given", expected=expected, got=value)
    if len({b.op for b in bounds}) < len(bounds):
        raise here.error("the same limit given twice (e.g. both `ge` and `min`)", got=value)
    return bounds, extra


def parse_kind(value, here: Where) -> str:
    if not isinstance(value, str):
        raise here.error("a layer kind must be a name", expected="one of " + ", ".join(K.KINDS), got=value)
    name = K.canonical(value)
    if name is None:
        raise here.error(f"unknown layer kind '{value}'", expected="one of " + ", ".join(K.KINDS),
                         suggestion=K.suggest(value))
    return name


def describe(row, analysis) -> str:
    """`layers[1].seq[2].maxpool (C2)`: the row path and the label of its nearest labelled block."""
    label = None
    best = -1
    for r in analysis.rows:
        if r.label and (r is row or row.path.startswith(r.path) and row.path[len(r.path):][:1] in ("[", ".")):
            if len(r.path) > best:
                label, best = r.label, len(r.path)
    return f"{row.path} ({label})" if label else row.path


def _list_rows(rows, analysis, limit: int = 6) -> str:
    shown = [describe(r, analysis) for r in rows[:limit]]
    more = f", ... ({len(rows) - limit} more)" if len(rows) > limit else ""
    return ", ".join(shown) + more


# --------------------------------------------------------------------------- numeric totals


def _total_kind(term: str, direction: str, measure: Callable, unit: str, doc: str, example: str):
    allowed = ("lt", "le") if direction == "max" else ("gt", "ge")
    bare = "le" if direction == "max" else "ge"

    class Total:
        @staticmethod
        def parse(value, here):
            bounds, _ = parse_bounds(value, here, allowed=allowed, bare=bare)
            return {"bounds": bounds}, term + ident_bounds(bounds)

        @staticmethod
        def check(analysis, args, accuracy):
            value = measure(analysis)
            bounds = args["bounds"]
            ok = bounds_ok(bounds, value)
            limit = render_bounds(bounds, fmt_int)
            if ok:
                msg = f"{fmt_int(value)} {unit}, within {limit}"
            else:
                msg = f"{fmt_int(value)} {unit}, limit {limit}"
            unused = analysis.graph.unused_params if term == "params" else 0
            if unused:  # what a grader counting model.parameters() sees
                msg += (f" (model.parameters() holds {fmt_int(value + unused)}: {fmt_int(unused)} more in modules "
                        "the forward pass never calls)")
            return Check("", ok, value, limit, msg)

    rule_kind(f"{direction}_{term}", doc, example)(Total)


_total_kind("params", "max", lambda a: a.params, "parameters",
            "total parameters at most (bare number: <=; `lt:` strict)", "max_params: {lt: 1000000}")
_total_kind("params", "min", lambda a: a.params, "parameters",
            "total parameters at least (bare number: >=; `gt:` strict)", "min_params: {ge: 10000}")
_total_kind("macs", "max", lambda a: a.macs, "MACs",
            "multiply-accumulates per sample at most (conv/linear weights; bare number: <=)",
            "max_macs: {le: 50000000}")
_total_kind("macs", "min", lambda a: a.macs, "MACs",
            "multiply-accumulates per sample at least (bare number: >=)", "min_macs: {ge: 1000000}")


# --------------------------------------------------------------------------- receptive field


def rf_site(analysis, at: str):
    """(row, RF per axis, text) where `at` measures the RF, or (None, None, reason)."""
    if at == "before_gap":
        glob = analysis.first_global_row()
        row = analysis.last_spatial_row()
        if glob is not None:
            return row or glob, analysis.rf_before_global(), "the last layer before GAP/flatten"
        if row is None:
            return None, None, "no layer before the first global op (GAP/flatten)"
        return row, row.rf_out, "the last layer (no GAP/flatten)"
    if at == "output":
        return analysis.layers[-1], analysis.rf, "the output"
    labelled = [r for r in analysis.rows if r.label == at]
    by_path = [r for r in analysis.rows if r.path == at]
    row = (labelled or by_path or [None])[0]
    if row is None:
        labels = [r.label for r in analysis.rows if r.label]
        raise RuleRefError(f"no block labelled or layer at '{at}'",
                           expected="before_gap, output, a block label (" + (", ".join(labels) or "none here")
                           + ") or a layer path", suggestion=did_you_mean(at, labels + [r.path for r in analysis.rows]))
    return row, row.rf_out, "the output of " + ("block " + at if labelled else at)


def _rf_kind(direction: str):
    allowed = ("lt", "le") if direction == "max" else ("gt", "ge")
    bare = "le" if direction == "max" else "ge"
    over = min if direction == "min" else max
    word = "minimum" if direction == "min" else "maximum"

    class RF:
        @staticmethod
        def parse(value, here):
            bounds, extra = parse_bounds(value, here, allowed=allowed, bare=bare, extras=("at",))
            at = extra.get("at", "before_gap")
            if not isinstance(at, str) or not at:
                raise here.error("`at` names where the RF is measured",
                                 expected="before_gap (default), output, a block label (C3) or a layer path",
                                 got=at)
            if at in ("before-gap", "beforegap", "last_spatial"):
                at = "before_gap"
            suffix = "" if at == "before_gap" else f"@{at}"
            return {"bounds": bounds, "at": at}, f"rf{suffix}" + ident_bounds(bounds)

        @staticmethod
        def check(analysis, args, accuracy):
            bounds = args["bounds"]
            limit = render_bounds(bounds)
            row, axes, text = rf_site(analysis, args["at"])
            if row is None:
                return Check("", False, None, limit, text)
            sizes = [plain(a.r) for a in axes]
            value = over(sizes)
            ok = bounds_ok(bounds, value)
            where = f"{describe(row, analysis)}, {text}"
            if len(set(sizes)) == 1:
                msg = f"RF {fmt_number(value)} at {where}"
            else:
                msg = (f"RF {'×'.join(fmt_number(s) for s in sizes)} per axis at {where}; "
                       f"the {word} over axes ({fmt_number(value)}) is checked")
            if any(a.glob for a in axes):
                msg += "; global (after GAP/flatten every unit sees the whole input)"
            return Check("", ok, value, limit, msg + ("" if ok else f"; needs {limit}"))

    return RF


rule_kind("min_rf", "receptive field at least; per-axis RFs: the smallest axis is checked; `at:` before_gap "
          "(default: the last layer before GAP/flatten), output, a block label or a layer path",
          "min_rf: {gt: 44, at: before_gap}")(_rf_kind("min"))
rule_kind("max_rf", "receptive field at most; per-axis RFs: the largest axis is checked; `at:` as min_rf",
          "max_rf: {le: 100}")(_rf_kind("max"))


# --------------------------------------------------------------------------- layer kinds


@rule_kind("count", "number of layers of a kind (see `KINDS`): exactly/min/max/lt/gt/le/ge/eq",
           "count: {kind: maxpool, exactly: 3}")
class Count:
    @staticmethod
    def parse(value, here):
        if not isinstance(value, dict) or "kind" not in value:
            raise here.error("count needs a kind and a limit", expected="{kind: maxpool, exactly: 3}", got=value)
        kind_here = Where(here.file, _line(value, "kind", here.line), here.path)
        name = parse_kind(value["kind"], kind_here)
        bounds, _ = parse_bounds(value, here, allowed=tuple(OPS), bare=None, extras=("kind",))
        return {"kind": name, "bounds": bounds}, f"count({name})" + ident_bounds(bounds)

    @staticmethod
    def check(analysis, args, accuracy):
        kind = K.KINDS[args["kind"]]
        rows = kind.find(analysis)
        bounds = args["bounds"]
        ok = bounds_ok(bounds, len(rows))
        limit = render_bounds(bounds)
        how = " along the path with the most" if kind.counting == "path" else ""
        msg = f"{len(rows)} {kind.name}{how}" + (f": {_list_rows(rows, analysis)}" if rows else "")
        if not ok:
            msg += f"; needs {limit}"
            near = kind.near_misses(analysis) if kind.near_misses else []
            reasons = {why: [r for r, w in near if w == why] for _, why in near}
            for why, rows_ in reasons.items():  # what almost counts, and why not: the student's fix
                msg += f" ({_list_rows(rows_, analysis)}: {why})"
        return Check("", ok, len(rows), limit, msg)


@rule_kind("forbid", "no layer of this kind may appear", "forbid: maxpool")
class Forbid:
    @staticmethod
    def parse(value, here):
        if isinstance(value, dict) and set(value) == {"kind"}:
            value = value["kind"]
        name = parse_kind(value, here)
        return {"kind": name}, f"forbid({name})"

    @staticmethod
    def check(analysis, args, accuracy):
        rows = K.KINDS[args["kind"]].find(analysis)
        if not rows:
            return Check("", True, 0, "none", f"no {args['kind']}")
        return Check("", False, len(rows), "none", f"{len(rows)} {args['kind']} (forbidden): "
                     + _list_rows(rows, analysis))


# --------------------------------------------------------------------------- structure


def _need_true(name):
    def parse(value, here):
        if value is not True:
            raise here.error(f"`{name}` takes `true`", expected=f"{name}: true (leave the rule out to skip it)",
                             got=value)
        return {}, name

    return parse


@rule_kind("gap_before_classifier", "a global average pool is the first global op, and only linear, flatten, "
           "dropout, activation, softmax, norm or 1x1 convs on the 1x1 map follow it", "gap_before_classifier: true")
class GapBeforeClassifier:
    parse = staticmethod(_need_true("gap_before_classifier"))
    LIMIT = "GAP, then classifier layers only"

    @staticmethod
    def check(analysis, args, accuracy):
        layers = analysis.layers
        limit = GapBeforeClassifier.LIMIT
        ops = analysis.global_ops  # one GAP, or several global ops on parallel paths (GAP + global max)
        if not ops:
            return Check("", False, None, limit, "no global average pool (gap, adaptive average pool to 1, a "
                         "whole-map average pool or a spatial mean)", shown="no GAP")
        other = [r for r in ops if not K.is_gap(r)]
        if other:
            what = ", ".join(f"{K.op_of(r)} at {describe(r, analysis)}" for r in other)
            many = "the first global ops are" if len(ops) > 1 else "the first global op is"
            return Check("", False, None, limit, f"{many} {' + '.join(K.op_of(r) for r in ops)}: {what} is not a "
                         "global average pool" + _almost_gap(analysis),
                         shown=f"{'+'.join(K.op_of(r) for r in ops)}, not GAP")
        gap = ops[0]
        succ, below, todo = analysis.consumers(), set(), list(ops)  # every layer downstream of the global ops
        while todo:
            for r in succ.get(id(todo.pop()), []):
                if id(r) not in below:
                    below.add(id(r))
                    todo.append(r)
        after = [r for r in layers if id(r) in below]
        shown = " -> ".join(["+".join(["gap"] * len(ops)) if len(ops) > 1 else "gap", *(K.op_of(r) for r in after)])
        bad = [r for r in after if not K.is_classifier_like(r)]
        if bad:
            return Check("", False, gap.path, limit, f"GAP at {describe(gap, analysis)} is followed by "
                         f"non-classifier layers: {_list_rows(bad, analysis)}", shown=shown)
        tail = ", then " + ", ".join(K.op_of(r) for r in after) if after else " (the last layer)"
        return Check("", True, gap.path, limit, f"GAP at {describe(gap, analysis)}{tail}", shown=shown)


def _almost_gap(analysis) -> str:
    """An average pool that leaves a 1x1 map without covering the whole input map (AvgPool2d(7) on 8x8 skips
    the last row and column): the likely mistake behind a missing GAP, named with its fix."""
    for r in analysis.layers:
        f = K.facts(r)
        if f is not None and f.op == "pool" and f.pool == "avg" and r.out_shape[1:] and set(r.out_shape[1:]) == {1} \
                and len(r.in_shape) > 1:
            size = "x".join(map(str, r.in_shape[1:]))
            return (f"; {describe(r, analysis)} averages a {'x'.join(map(str, f.kernel))} window of the {size} map, "
                    f"not all of it: a GAP is kernel {size} (or AdaptiveAvgPool2d(1))")
    return ""


@rule_kind("input_shape", "the input shape [C, H, W] (channels first, no batch)", "input_shape: [3, 32, 32]")
class InputShape:
    @staticmethod
    def parse(value, here):
        if not isinstance(value, list) or not value or not all(_is_number(x) and x > 0 and int(x) == x
                                                                 for x in value):
            raise here.error("input_shape must be a list of positive integers", expected="[3, 32, 32]", got=value)
        shape = [int(x) for x in value]
        return {"shape": shape}, "input==[" + ",".join(map(str, shape)) + "]"

    @staticmethod
    def check(analysis, args, accuracy):
        got, want = list(analysis.input_shape), args["shape"]
        ok = got == want
        return Check("", ok, got, f"== {want}", f"input {got}" + ("" if ok else f", expected {want}"))


def outer_labels(analysis) -> list[str]:
    """Labels of the outermost labelled rows, in order (labels nested inside a labelled block are skipped)."""
    out, open_paths = [], []
    for r in analysis.rows:
        if not r.label:
            continue
        if r.kind != "block" and not r.params:
            continue  # a labelled weightless layer between blocks (self.gap = nn.AdaptiveAvgPool2d(1)) is no block
        if any(r.path.startswith(p) and r.path[len(p):][:1] in ("[", ".") for p in open_paths):
            continue
        open_paths.append(r.path)
        out.append(r.label)
    return out


@rule_kind("structure", "the labels of the outermost labelled blocks, in order (`name: C1` on a seq block)",
           "structure: [C1, C2, C3, C4, O]")
class Structure:
    @staticmethod
    def parse(value, here):
        if not isinstance(value, list) or not value or not all(isinstance(x, (str, int)) for x in value):
            raise here.error("structure is a list of block labels", expected="[C1, C2, C3, C4, O]", got=value)
        return {"labels": [str(x) for x in value]}, "structure"

    @staticmethod
    def check(analysis, args, accuracy):
        want = args["labels"]
        found = outer_labels(analysis)
        limit = " ".join(want)
        if not found:
            return Check("", False, [], limit, "the spec labels no blocks: give each block a `name:` "
                         f"({', '.join(want)})", shown="no labels")
        ok = found == want
        msg = "blocks " + " ".join(found) + ("" if ok else f"; expected {' '.join(want)}")
        if not ok and len(found) == len(want):  # the right number of blocks, other names: say how to name them
            if any(r.module for r in analysis.layers):  # a PyTorch model: its top-level attributes
                pairs = ", ".join(f'"{f}": "{w}"' for f, w in zip(found, want))
                msg += f" (name the attributes {', '.join(want)}, or give the class block_labels = {{{pairs}}})"
            else:
                msg += f" (give the blocks name: {', '.join(want)}, in order)"
        return Check("", ok, found, limit, msg, shown=" ".join(found))


# --------------------------------------------------------------------------- after training


@rule_kind("accuracy", "test accuracy at least (a fraction: 0.85 = 85%); checked only when an accuracy is "
           "given (after `convcli train`/`eval`), otherwise reported as not checked", "accuracy: {min: 0.85}")
class Accuracy:
    @staticmethod
    def parse(value, here):
        bounds, _ = parse_bounds(value, here, allowed=("gt", "ge"), bare="ge")
        for b in bounds:
            if not 0 <= b.limit <= 1:
                raise here.error("accuracy is a fraction between 0 and 1", expected="e.g. {min: 0.85} for 85%",
                                 got=b.limit)
        return {"bounds": bounds}, "accuracy" + ident_bounds(bounds)

    @staticmethod
    def check(analysis, args, accuracy):
        bounds = args["bounds"]
        limit = render_bounds(bounds, fmt_percent)
        if accuracy is None:
            return Check("", None, None, limit, "not checked: needs a trained model's test accuracy "
                         "(convcli train / eval)", shown="--")
        ok = bounds_ok(bounds, accuracy)
        return Check("", ok, accuracy, limit, f"test accuracy {fmt_percent(accuracy)}"
                     + ("" if ok else f"; needs {limit}"), shown=fmt_percent(accuracy))


# --------------------------------------------------------------------------- rule sets


def parse_rule(item, here: Where) -> Rule:
    if isinstance(item, str):
        item = {item: None}
    if not isinstance(item, dict) or not item:
        raise here.error("a rule is a mapping with one rule kind", expected="e.g. `- max_params: {lt: 1000000}`",
                         got=item)
    kinds = [k for k in item if k not in ENTRY_KEYS]
    for key in kinds:
        if key not in RULE_KINDS:
            raise Where(here.file, _line(item, key, here.line), here.path).error(
                f"unknown rule kind '{key}'", expected="one of " + ", ".join(RULE_KINDS),
                suggestion=did_you_mean(str(key), list(RULE_KINDS) + list(ENTRY_KEYS)))
    if len(kinds) != 1:
        raise here.error("a rule has exactly one rule kind" + (" (plus optional name, description)"),
                         expected="one of " + ", ".join(RULE_KINDS), got=list(item))
    name = kinds[0]
    sub = Where(here.file, _line(item, name, here.line), f"{here.path}.{name}")
    args, ident = RULE_KINDS[name].parse(item[name], sub)
    if "name" in item:
        if not isinstance(item["name"], (str, int)) or str(item["name"]).strip() == "":
            raise here.error("a rule's name must be a non-empty string", got=item["name"])
        ident = str(item["name"])
    return Rule(id=ident, kind=name, args=args, file=here.file, line=sub.line,
                description=str(item.get("description", "") or ""))


def parse_ruleset(value, file: str | None, line: int | None = None, default_name: str = "rules",
                  path: str = "") -> RuleSet:
    """A rule set from YAML data: a mapping {name, description, rules: [...]} or just the list of rules."""
    here = Where(file, getattr(value, "line", None) or line, path or "rules")
    prefix = f"{path}.rules" if path else "rules"
    if isinstance(value, list):
        value, prefix = {"rules": value}, path or "rules"
    if not isinstance(value, dict):
        raise here.error("a rule set is a mapping", expected="{name: ..., rules: [- max_params: ..., ...]}",
                         got=value)
    for key in value:
        if key not in RULESET_KEYS:
            raise Where(file, _line(value, key, here.line), here.path).error(
                f"unknown rule-set key '{key}'", expected="one of " + ", ".join(RULESET_KEYS),
                suggestion=did_you_mean(str(key), RULESET_KEYS))
    items = value.get("rules")
    if not isinstance(items, list) or not items:
        raise Where(file, _line(value, "rules", here.line), here.path).error(
            "a rule set needs a non-empty `rules:` list", expected="rules: [- max_params: {lt: 1000000}, ...]",
            got=items)
    rules, seen = [], {}
    for i, item in enumerate(items):
        item_here = Where(file, _line(items, i, here.line), f"{prefix}[{i}]")
        rule = parse_rule(item, item_here)
        if rule.id in seen:
            raise item_here.error(f"two rules with the id '{rule.id}' (the first at line {seen[rule.id]})",
                                  expected="distinct rules, or a `name:` on one of them")
        seen[rule.id] = rule.line
        rules.append(rule)
    return RuleSet(name=str(value.get("name", default_name)), rules=rules,
                   description=str(value.get("description", "") or ""), source=file or "")


def run_checks(analysis, ruleset: RuleSet | None, accuracy: float | None = None) -> list[Check]:
    """One `Check` per rule, in the rule set's order. `accuracy` (a fraction, e.g. a run's test accuracy)
    is used by `accuracy` rules; without it they are not checked (ok None)."""
    if ruleset is None:
        return []
    if accuracy is not None:
        if not _is_number(accuracy):
            raise TypeError(f"accuracy must be a number, got {accuracy!r}")
        if accuracy > 1:
            raise ValueError(f"accuracy is a fraction in [0, 1], got {accuracy} (pass 0.853 for 85.3%)")
    checks = []
    for rule in ruleset.rules:
        try:
            check = RULE_KINDS[rule.kind].check(analysis, rule.args, accuracy)
        except RuleRefError as exc:
            raise Where(rule.file, rule.line, f"rule {rule.id}").error(exc.message, **exc.kw) from None
        check.rule, check.kind = rule.id, rule.kind
        checks.append(check)
    return checks


__all__ = ["RULE_KINDS", "RuleKind", "rule_kind", "parse_ruleset", "parse_rule", "run_checks", "outer_labels",
           "rf_site", "describe"]
