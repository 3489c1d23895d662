"""`convcli layers`: the layer registry as a reference (types, aliases, keys with defaults)."""

from __future__ import annotations

import typer

from convcli.commands.common import FORMAT_OPT, Format, output_format

TAIL = ("bias", "bn", "act", "dropout")  # the conv-family row tail, listed once in the footer


def key_text(p) -> str:
    names = "/".join((p.name, *p.aliases[:1]))
    if p.required:
        return f"{names}*"
    if p.default in (None, (), ""):
        return f"{names}={p.default_text}" if p.default_text else names
    return f"{names}={p.default}"


def complete_types(incomplete: str) -> list[str]:
    from convcli.layers.registry import all_names

    return [n for n in all_names() if n.startswith(incomplete)]


def layers(
    name: str = typer.Argument(None, help="Show one type (or alias) only.", metavar="TYPE",
                               autocompletion=complete_types),
    fmt: Format = FORMAT_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List the layer types a spec can use, with every key they accept (* = required) and defaults."""
    from convcli.errors import ConvcliError, did_you_mean
    from convcli.layers.registry import all_names, entries, lookup
    from convcli.render import Column, Output, TableData, emit

    chosen = entries()
    if name:
        entry = lookup(name)
        if entry is None:
            hint = did_you_mean(name, all_names())
            raise ConvcliError(f"unknown layer type '{name}'" + (f"; did you mean {hint}?" if hint else ""))
        chosen = [entry]
    data = [{"type": e.name, "aliases": list(e.aliases), "family": e.family, "kind": e.kind, "doc": e.doc,
             "keys": [{"name": p.name, "aliases": list(p.aliases), "kind": p.kind, "default": p.default,
                       "required": p.required, "help": p.help} for p in e.params]} for e in chosen]
    t = TableData(
        title="Layer types (keys: * = required, =x default; short/long names both work)",
        columns=[Column("type", "Type", False), Column("aliases", "Aliases", False, wrap=True),
                 Column("keys", "Keys", False, wrap=True), Column("doc", "What it is", False, wrap=True)],
        footer=["`name:` labels any layer or block."],
    )
    if any(all(k in [p.name for p in e.params] for k in TAIL) for e in chosen):
        t.footer.insert(0, "+tail: the conv-family row tail, keys bias, bn, act, dropout "
                           "(conv → BN → activation → dropout).")
    for e in chosen:
        names = [p.name for p in e.params]
        has_tail = all(k in names for k in TAIL)
        keys = [key_text(p) for p in e.params if not (has_tail and p.name in TAIL)] + (["+tail"] if has_tail else [])
        t.add({"type": e.name, "aliases": ", ".join(e.aliases) or None, "keys": ", ".join(keys) or None,
               "doc": e.doc})
    emit(Output([t], data=data, records=t), output_format(fmt, as_json))
