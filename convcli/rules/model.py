"""Rule data: limits (`Bound`), one parsed rule (`Rule`), a rule set, and one verdict (`Check`)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from fractions import Fraction

# Limit keys, one vocabulary for every numeric rule. Strict: lt, gt. Inclusive: le/max, ge/min, eq/exactly.
OPS = {
    "lt": ("<", operator.lt),
    "le": ("<=", operator.le),
    "gt": (">", operator.gt),
    "ge": (">=", operator.ge),
    "eq": ("==", operator.eq),
}
SYNONYMS = {"max": "le", "min": "ge", "exactly": "eq"}


def fmt_int(x) -> str:
    return f"{x:,}"


def fmt_number(x) -> str:
    """Integers with thousands separators; other numbers without trailing zeros."""
    if isinstance(x, Fraction):
        x = x.numerator if x.denominator == 1 else float(x)
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.6g}" if abs(x) < 1e6 else f"{x:,.0f}"
    return str(x)


def fmt_percent(x) -> str:
    return f"{float(x) * 100:.4g}%"


def plain(x):
    """A JSON-able copy of a measured value (Fractions become ints or floats, tuples lists)."""
    if isinstance(x, Fraction):
        return x.numerator if x.denominator == 1 else float(x)
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


@dataclass(frozen=True)
class Bound:
    """One comparison `value <op> limit`; op is a canonical key of OPS."""

    op: str
    limit: int | float

    def ok(self, value) -> bool:
        return OPS[self.op][1](value, self.limit)

    def render(self, fmt=fmt_number) -> str:
        return f"{OPS[self.op][0]} {fmt(self.limit)}"

    def ident(self) -> str:
        return f"{OPS[self.op][0]}{self.limit:g}" if isinstance(self.limit, float) else f"{OPS[self.op][0]}{self.limit}"


def bounds_ok(bounds: list[Bound], value) -> bool:
    return all(b.ok(value) for b in bounds)


def render_bounds(bounds: list[Bound], fmt=fmt_number) -> str:
    return ", ".join(b.render(fmt) for b in bounds)


def ident_bounds(bounds: list[Bound]) -> str:
    return ",".join(b.ident() for b in bounds)


@dataclass
class Check:
    """One rule's verdict. ok: True pass, False fail, None not checked (e.g. accuracy before training)."""

    rule: str
    ok: bool | None
    value: object
    limit: str
    message: str
    kind: str = ""  # the rule kind (max_params, count, ...); not part of the JSON
    shown: str | None = None  # the measured value as displayed; default: formatted `value`

    @property
    def measured(self) -> str:
        if self.shown is not None:
            return self.shown
        if self.value is None:
            return "--"
        if isinstance(self.value, (list, tuple)):
            return "[" + ", ".join(fmt_number(v) for v in self.value) + "]"
        return fmt_number(self.value)

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "not checked"}[self.ok]

    def to_json(self) -> dict:
        return {"rule": self.rule, "ok": self.ok, "value": plain(self.value), "limit": self.limit,
                "message": self.message}


@dataclass
class Rule:
    """A parsed rule: `kind` names its entry in the engine's table; `args` are its parsed arguments."""

    id: str
    kind: str
    args: dict
    file: str | None = None
    line: int | None = None
    description: str = ""


@dataclass
class RuleSet:
    name: str
    rules: list[Rule]
    description: str = ""
    source: str = ""  # the file it came from, or "<spec>:line (inline)"

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rules]


def all_ok(checks: list[Check]) -> bool:
    """True when no rule failed (not-checked rules do not fail the gate)."""
    return not any(c.ok is False for c in checks)


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]


__all__ = ["Bound", "Check", "Rule", "RuleSet", "all_ok", "failed", "OPS", "SYNONYMS", "fmt_number",
           "fmt_percent", "plain"]
