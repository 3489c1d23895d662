"""YAML loading that remembers line numbers, so every error can point at `file:line`."""

from __future__ import annotations

import yaml

from convcli.errors import SpecError


class LineDict(dict):
    """A mapping that knows its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict

    def line_of(self, key) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    line: int = 0
    item_lines: list

    def line_of(self, i: int) -> int:
        return self.item_lines[i] if 0 <= i < len(self.item_lines) else self.line


def repeat_lines(items: list, times: int) -> list:
    """`items * times`, keeping each copy's YAML lines (for errors inside a `repeat`)."""
    out = LineList(list(items) * times)
    out.line = getattr(items, "line", 0)
    out.item_lines = list(getattr(items, "item_lines", [out.line] * len(items))) * times
    return out


class _Loader(yaml.SafeLoader):
    root = None  # the composed document, to name where a duplicate key sits

    def construct_document(self, node):
        self.root = node
        return super().construct_document(node)


def _path_to(root, target) -> str | None:
    """The YAML path of the mapping that holds key node `target`, e.g. layers[1].conv."""
    stack, seen = [(root, "")], set()
    while stack:
        node, path = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))  # aliases make a graph; visit each node once
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k is target:
                    return path or None
                stack.append((v, f"{path}.{k.value}" if path else str(k.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
    return None


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    out = LineDict()
    out.line, out.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise SpecError(f"duplicate key '{key}'", file=loader.name, line=key_node.start_mark.line + 1,
                            path=_path_to(loader.root, key_node), expected="each key once per mapping")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load_yaml(text: str, file: str):
    """Parse YAML (safe: no tags that run code) into LineDict/LineList; syntax errors become SpecError at
    the line of the mistake, in plain words, with the line and a caret."""
    loader = _Loader(text)
    loader.name = file
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        line, col, message = explain_syntax_error(exc, text)
        raise SpecError(f"YAML syntax error: {message}" + excerpt(text, line, col), file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", file=file) from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- syntax errors in plain words

CLOSERS = {"flow mapping": ("{", "}"), "flow sequence": ("[", "]")}


def _content_end(line: str) -> int:
    """Column just after the last character that is not a comment or trailing space."""
    body = line
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1] in " \t"):
            body = line[:i]
            break
    return len(body.rstrip())


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _unclosed_at(lines: list[str], start: int, stop: int) -> int:
    """The line (0-based) where an unclosed { or [ opened on `start` should have been closed: the opening
    line itself, unless it ends with ',' or the opener (a collection meant to go on over several lines);
    then the last line before the first line indented no deeper than the opening one."""
    first = lines[start] if start < len(lines) else ""
    body = first[: _content_end(first)]
    if not body.endswith((",", "{", "[")):
        return start
    base = _indent(first)
    last = start
    for i in range(start + 1, min(stop + 1, len(lines))):
        if not _is_content(lines[i]):
            continue
        if _indent(lines[i]) <= base:
            break
        last = i
    return last


def explain_syntax_error(exc, text: str) -> tuple[int | None, int | None, str]:
    """(1-based line, 0-based column, plain message) for a PyYAML error. PyYAML reports where it noticed
    the problem, often the next token: a missing `}` on line 15 is noticed at line 16's `:`, a missing
    `:` at the start of the next line. The mistake is on the line where it was made."""
    lines = text.splitlines()
    pm, cm = exc.problem_mark, exc.context_mark
    problem, context = exc.problem or "", exc.context or ""
    p_line = pm.line if pm else None  # 0-based
    p_col = pm.column if pm else None

    def last_content(before: int, floor: int) -> int:
        for i in range(min(before, len(lines)) - 1, floor - 1, -1):
            if _is_content(lines[i]):
                return i
        return floor

    # An unclosed { or [: the closer is missing where the collection's last line ends.
    for kind, (opener, closer) in CLOSERS.items():
        if f"parsing a {kind}" in context and cm is not None and p_line is not None:
            if p_line > cm.line or "end of" in problem or "stream end" in problem:
                at = _unclosed_at(lines, cm.line, p_line)
                where = "on this line" if at == cm.line else f"on line {cm.line + 1}"
                return (at + 1, _content_end(lines[at]) if at < len(lines) else 0,
                        f"the '{opener}' opened {where} is not closed: add '{closer}' at the end of this line")
            found = lines[p_line][p_col] if p_line < len(lines) and p_col < len(lines[p_line]) else ""
            if found in "]}" and found and found != closer:  # {out: 16, k: 3] — closed with the other bracket
                where = "on this line" if cm.line == p_line else f"on line {cm.line + 1}"
                return (p_line + 1, p_col, f"the '{opener}' opened {where} (column {cm.column + 1}) is still open "
                        f"at this '{found}': close it with '{closer}' (or write '{closer}' for this '{found}')")
            return (p_line + 1, p_col, f"expected ',' or '{closer}' here: a ',' is missing between two entries of "
                    f"the '{opener}...{closer}', or a value holds ': ' (quote it)")
    if "quoted scalar" in context and cm is not None:
        quote = lines[cm.line][cm.column] if cm.line < len(lines) and cm.column < len(lines[cm.line]) else "'"
        return cm.line + 1, cm.column, f"the {quote} opened here is never closed"
    if "simple key" in context and cm is not None:
        return (cm.line + 1, _content_end(lines[cm.line]) if cm.line < len(lines) else cm.column,
                "a ':' is missing: each line must be 'key: value' or '- item'")
    if p_line is None:
        return None, None, problem or str(exc)
    line_text = lines[p_line] if p_line < len(lines) else ""
    if "\t" in problem or "'\\t'" in problem:
        return p_line + 1, p_col, "a tab character: indent YAML with spaces only"
    if "expected <block end>" in problem:
        col = _indent(line_text)
        if p_col > col:  # found inside the line, after a complete value: not an indentation problem
            before = line_text[:p_col].rstrip()
            what = f"after the closing '{before[-1]}'" if before.endswith(("}", "]")) else "after the value"
            return (p_line + 1, p_col, f"unexpected text {what}: put it on its own line, or make it a comment "
                    "with '#'")
        found = "list item" if "'-'" in problem or "sequence" in problem else "key"
        prev = last_content(p_line, 0) if p_line > 0 else None
        above = f" but the line above {_indent(lines[prev])}" if prev is not None and prev != p_line else ""
        return (p_line + 1, col, f"bad indentation: this {found} is indented {col} spaces{above}; line it up with "
                "the entries it belongs with")
    if "mapping values are not allowed" in problem:
        prev = last_content(p_line, 0) if p_line > 0 else None
        col = _indent(line_text)
        key_first = line_text[col:].find(": ") == p_col - col or line_text[col:].rstrip().endswith(":")
        if prev is not None and prev != p_line and col > _indent(lines[prev]) and key_first:
            return (p_line + 1, col, "bad indentation: this line is indented deeper than the line above, so "
                    "YAML reads it as the rest of that line's value; line it up with its siblings")
        return (p_line + 1, p_col, "a ':' here starts a mapping inside a plain value; quote the value "
                "(\"a: b\") or put the mapping on its own indented line")
    if "could not find expected ':'" in problem and cm is None:
        at = last_content(p_line, 0)
        return at + 1, _content_end(lines[at]), "a ':' is missing: each line must be 'key: value' or '- item'"
    return p_line + 1, p_col, problem or str(exc)


def excerpt(text: str, line: int | None, col: int | None) -> str:
    """The offending line and a caret under the column, as lines to append to an error message."""
    lines = text.splitlines()
    if line is None or not 1 <= line <= len(lines):
        return ""
    src = lines[line - 1].replace("\t", " ")
    num = f"{line:>4} | "
    caret = " " * (len(num) - 2) + "| " + " " * max(0, min(col or 0, len(src))) + "^"
    return f"\n{num}{src.rstrip()}\n{caret}"
