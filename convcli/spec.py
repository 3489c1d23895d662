"""Architecture specs: YAML files → a validated `Spec` (no torch).

A spec has `input` ([C, L], [C, H, W] or [C, D, H, W]), `layers` (a list of one-key mappings
`{type: {options}}`), and optionally `name`, `classes`, `defaults` (options per layer type or
family), `blocks` (named, reusable sub-networks with `$parameters`), `rules` and `train`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

from convcli.errors import SpecError, did_you_mean
from convcli.layers.registry import MAX_SIZE, LayerType, Param, Where, all_names, entries, lookup
from convcli.yamlio import LineDict, LineList, load_yaml

TOP_KEYS = ("name", "description", "input", "classes", "defaults", "blocks", "layers", "rules", "train")
# Bounds on what a spec file may hold, checked before any recursive processing: a hand-written spec is a
# few kB with a few hundred values, nested a dozen levels; a hostile one (a 50 MB file, YAML aliases
# expanding exponentially, thousands of nested lists) must end with exit 2, not a hang or a crash.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_VALUES = 200_000
MAX_SPEC_NESTING = 100
VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass
class Spec:
    file: str
    name: str
    input: tuple[int, ...]
    layers: list
    classes: int | None = None
    description: str = ""
    defaults: dict = field(default_factory=dict)
    blocks: dict[str, BlockType] = field(default_factory=dict)
    rules: object = None
    train: dict | None = None
    raw: dict = field(default_factory=dict)
    text: str = ""

    def where(self, line: int | None, path: str) -> Where:
        return Where(self.file, line, path)

    def entry(self, type_name: str) -> LayerType | None:
        return self.blocks.get(type_name) or lookup(type_name)

    def type_names(self) -> list[str]:
        return all_names() + list(self.blocks)

    def defaults_for(self, entry: LayerType) -> dict:
        out = dict(self.defaults.get(entry.family, {}))
        out.update(self.defaults.get(entry.name, {}))
        return out

    def variables(self) -> dict:
        return {"classes": self.classes} if self.classes is not None else {}


class BlockType(LayerType):
    """A named block from the spec's `blocks:` section; `$name` in its body takes the caller's value."""

    kind = "seq"
    family = "block"

    def __init__(self, name: str, body: list, declared: dict, spec_vars: dict, line: int):
        self.name, self.body, self.spec_vars, self.line = name, body, spec_vars, line
        used = sorted(set(_vars_in(body)) - set(spec_vars))
        self.params = tuple(
            Param(v, "any", declared.get(v), required=declared.get(v) is None)
            for v in dict.fromkeys(list(declared) + used)
        )
        self.doc = f"block defined in the spec (line {line})"

    def expand(self, a, shape, where):
        return substitute(copy.deepcopy(self.body), {**self.spec_vars, **a}, where)


def _vars_in(node):
    if isinstance(node, str):
        m = VAR.match(node)
        if m:
            yield m.group(1)
    elif isinstance(node, dict):
        for v in node.values():
            yield from _vars_in(v)
    elif isinstance(node, list):
        for v in node:
            yield from _vars_in(v)


def substitute(node, values: dict, where: Where):
    """Replace every "$name" string by its value; an unknown name is an error with a suggestion."""
    if isinstance(node, str):
        m = VAR.match(node)
        if not m:
            return node
        if m.group(1) not in values:
            raise where.error(
                f"unknown variable '{node}'",
                expected="one of " + ", ".join(f"${v}" for v in values) if values else "no variables here",
                suggestion=did_you_mean(m.group(1), values),
            )
        return values[m.group(1)]
    if isinstance(node, dict):
        for k in list(node):
            node[k] = substitute(node[k], values, where)
        return node
    if isinstance(node, list):
        for i, v in enumerate(node):
            node[i] = substitute(v, values, where)
        return node
    return node


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file's top level; layer entries are checked during analysis."""
    path = Path(path)
    file = str(path)
    try:
        size = path.stat().st_size if path.is_file() else 0
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"the file is {size:,} bytes; a spec may be at most {MAX_SPEC_BYTES:,}", file=file)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # Compared without the extension, which every sibling shares (nonexist.yaml is not like e.yaml).
        siblings = {p.stem: p.name for p in path.parent.glob("*.y*ml")} if path.parent.is_dir() else {}
        stems = did_you_mean(path.stem, siblings)
        hint = stems and " or ".join(siblings[m.strip("'")] for m in stems.split(" or "))
        raise SpecError("no such file", file=file, suggestion=hint and hint.replace("'", "")) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", file=file) from None
    return parse_spec(text, file)


def check_bounds(raw, file: str) -> None:
    """Count the values a loaded document expands to (aliases counted at every use), its nesting depth and
    self-references, without recursion and without expanding anything."""
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(raw, False)]
    while stack:
        node, done = stack.pop()
        kids = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else None
        if kids is None:
            continue
        key = id(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes.get(id(k), 1) for k in kids)
            heights[key] = 1 + max((heights.get(id(k), 0) for k in kids), default=0)
            if sizes[key] > MAX_SPEC_VALUES:
                raise SpecError(f"the spec expands beyond {MAX_SPEC_VALUES:,} values (YAML aliases used over "
                                "and over?)", file=file, expected="a spec written out, or blocks: for repetition")
            if heights[key] > MAX_SPEC_NESTING:
                raise SpecError(f"the spec nests more than {MAX_SPEC_NESTING} levels deep", file=file)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise SpecError("the spec refers to itself (a YAML anchor used inside its own value)", file=file)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in kids if isinstance(k, (dict, list)) and id(k) not in sizes)
        if len(on_path) > MAX_SPEC_NESTING:
            raise SpecError(f"the spec nests more than {MAX_SPEC_NESTING} levels deep", file=file)


def parse_spec(text: str, file: str = "<spec>") -> Spec:
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {len(text):,} characters; at most {MAX_SPEC_BYTES:,}", file=file)
    try:
        raw = load_yaml(text, file)
    except RecursionError:
        raise SpecError(f"the spec nests more than {MAX_SPEC_NESTING} levels deep", file=file) from None
    check_bounds(raw, file)
    if raw is None:
        raise SpecError(
            "the spec is empty",
            file=file,
            line=1,
            expected="a mapping with at least `input: [C, H, W]` and `layers: [...]`",
        )
    if not isinstance(raw, dict):
        raise SpecError(
            "a spec must be a mapping",
            file=file,
            line=getattr(raw, "line", 1),
            expected="keys " + ", ".join(TOP_KEYS),
            got="a list (the layers go under `layers:`)" if isinstance(raw, list) else
            "text" if isinstance(raw, str) else repr(raw),
        )

    def err(msg, key=None, **kw):
        return SpecError(msg, file=file, line=raw.line_of(key) if key else raw.line, **kw)

    for key in raw:
        if key not in TOP_KEYS:
            raise err(
                f"unknown top-level key '{key}'",
                key,
                expected="one of " + ", ".join(TOP_KEYS),
                suggestion=did_you_mean(key, TOP_KEYS),
            )
    for key in ("input", "layers"):
        if key not in raw:
            raise err(f"missing '{key}'", expected="input: [C, H, W] and layers: [...]")

    shape = raw["input"]
    if (
        not isinstance(shape, list)
        or not 2 <= len(shape) <= 4
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= MAX_SIZE for x in shape)
    ):
        raise err(f"input must be [C, L], [C, H, W] or [C, D, H, W] with integers from 1 to {MAX_SIZE:,}", "input",
                  got=shape)
    layers = raw["layers"]
    if not isinstance(layers, list) or not layers:
        raise err("layers must be a non-empty list", "layers", got=layers)
    classes = raw.get("classes")
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 1):
        raise err("classes must be a positive integer", "classes", got=classes)
    name = raw.get("name", Path(file).stem)

    spec = Spec(
        file=file,
        name=str(name),
        input=tuple(shape),
        layers=layers,
        classes=classes,
        description=str(raw.get("description", "")),
        rules=raw.get("rules"),
        train=raw.get("train"),
        raw=raw,
        text=text,
    )
    spec.defaults = _parse_defaults(raw, file, err)
    spec.blocks = _parse_blocks(raw, spec, err)
    if spec.train is not None and not isinstance(spec.train, dict):
        raise err("train must be a mapping of training options", "train", got=spec.train)
    return spec


def _parse_defaults(raw: LineDict, file: str, err) -> dict:
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise err("defaults must map a layer type or family to options", "defaults", got=defaults)
    families = {e.family for e in entries()}
    for key, opts in defaults.items():
        line = defaults.line_of(key) if isinstance(defaults, LineDict) else None
        targets = [e for e in entries() if key in (e.name, e.family)] or ([lookup(key)] if lookup(key) else [])
        if not targets:
            raise SpecError(
                f"defaults for unknown layer type or family '{key}'",
                file=file,
                line=line,
                path=f"defaults.{key}",
                suggestion=did_you_mean(key, all_names() + sorted(families)),
            )
        if not isinstance(opts, dict):
            raise SpecError(
                "defaults must be a mapping of options", file=file, line=line, path=f"defaults.{key}", got=opts
            )
        accepted = {k for e in targets for p in e.params for k in (p.name, *p.aliases)}
        for opt in opts:
            if opt not in accepted:
                raise SpecError(
                    f"'{key}' layers take no option '{opt}'",
                    file=file,
                    line=opts.line_of(opt) if isinstance(opts, LineDict) else line,
                    path=f"defaults.{key}",
                    suggestion=did_you_mean(opt, accepted),
                )
    return {(lookup(k).name if lookup(k) and k not in families else k): v for k, v in defaults.items()}


def _parse_blocks(raw: LineDict, spec: Spec, err) -> dict[str, BlockType]:
    blocks = raw.get("blocks") or {}
    if not isinstance(blocks, dict):
        raise err("blocks must map block names to layer lists", "blocks", got=blocks)
    out = {}
    for name, body in blocks.items():
        line = blocks.line_of(name) if isinstance(blocks, LineDict) else raw.line
        if lookup(name) and lookup(name).name == name:  # a block may shadow an alias, not a type name
            raise SpecError(
                f"block name '{name}' is already a layer type",
                file=spec.file,
                line=line,
                path=f"blocks.{name}",
                expected="another name",
            )
        where = Where(spec.file, line, f"blocks.{name}")
        declared = {}
        if isinstance(body, dict):
            declared = body.get("params") or {}
            if not isinstance(declared, dict):
                raise where.error("block params must be a mapping of name: default (null = required)", got=declared)
            body = body.get("layers")
        if not isinstance(body, list) or not body:
            raise where.error("a block is a list of layers, or {params: {...}, layers: [...]}", got=body)
        out[name] = BlockType(name, body, dict(declared), spec.variables(), line)
    return out


def entry_parts(item, where: Where, spec: Spec):
    """Split a layer entry `{type: options}` (or a bare `type` string) into (entry, type name, options)."""
    if isinstance(item, str):
        type_name, options = item, None
    elif isinstance(item, dict) and len(item) == 1:
        type_name, options = next(iter(item.items()))
    else:
        got = list(item) if isinstance(item, dict) else item
        raise where.error(
            "a layer is a mapping with one key, its type", expected="e.g. `- conv: {out: 32, k: 3}`", got=got
        )
    entry = spec.entry(str(type_name))
    head = str(type_name).split("{")[0].split("[")[0].strip()
    if entry is None and head != str(type_name) and spec.entry(head) is not None:  # `- conv {out: 8}`
        raise where.error(f"a ':' is missing after the layer type '{head}'", expected=f"`- {head}: {{...}}`",
                          got=f"{type_name}: ...")
    if entry is None:
        raise where.error(
            f"unknown layer type '{type_name}'",
            expected="a registered type (see `convcli layers`) or a block from `blocks:`",
            suggestion=did_you_mean(
                str(type_name), spec.type_names(), canonical=lambda m: m if m in spec.blocks else lookup(m).name
            ),
        )
    return entry, str(type_name), options


def item_line(container, i: int, default: int | None) -> int | None:
    """The line of layer entry i: its own (a mapping read from YAML knows it, even after a block's layers
    were copied into a plain list), else its line in the YAML list, else the enclosing entry's."""
    if isinstance(container[i], LineDict) and container[i].line:
        return container[i].line
    return container.line_of(i) if isinstance(container, LineList) else default


__all__ = ["Spec", "BlockType", "load_spec", "parse_spec", "entry_parts", "item_line", "substitute", "LineList"]
