"""The one exception users see: a spec or usage problem they can act on (exit 2, no traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConvcliError(Exception):
    """Anything the user can fix; the CLI prints it and exits with `exit_code`."""

    exit_code = 2
    reported = False  # printed already (see `report`)


def report(exc: ConvcliError) -> None:
    """Print a user error as the CLI's error boundary does, once. A distributed rank 0 prints its error
    before it lets the other ranks go: torchrun may stop it with SIGTERM as soon as one of them exits."""
    if exc.reported:
        return
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True, highlight=False, emoji=False)
    # Wrapped at word boundaries on a terminal; one line per line when piped (grep, CI logs, tests).
    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=not err.is_terminal)
    exc.reported = True


class SpecError(ConvcliError):
    """A problem in a spec file, located by `file:line` and the layer path (`layers[4].conv`)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        path: str | None = None,
        expected: str | None = None,
        got: object = None,
        suggestion: str | None = None,
    ):
        self.message, self.file, self.line, self.path = message, file, line, path
        self.expected, self.got, self.suggestion = expected, got, suggestion
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        head = f"{where}: " + (f"{self.path}: " if self.path else "") + self.message
        parts = [head]
        if self.expected is not None:
            parts.append(f"  expected: {self.expected}")
        if self.got is not None:
            parts.append(f"  got: {self.got!r}" if not isinstance(self.got, str) else f"  got: {self.got}")
        if self.suggestion:
            parts.append(f"  did you mean {self.suggestion}?")
        return "\n".join(parts)


def did_you_mean(word: str, choices: Iterable[str], canonical=None) -> str | None:
    """Close matches rendered as `'kernel'` or `'relu' or 'relu6'` (difflib, as Typer does).
    `canonical` maps an alias to its main name, so a suggestion names each thing once."""
    matches = difflib.get_close_matches(str(word), sorted(set(choices)), n=5, cutoff=0.6)
    # only the near-best: 'epocs' is 'epochs' (0.91), not also 'nproc' (0.6, sharing "p", "o", "c")
    score = {m: difflib.SequenceMatcher(None, str(word), m).ratio() for m in matches}
    matches = [m for m in matches if score[m] >= max(score.values()) - 0.15]
    if canonical is not None:
        matches = list(dict.fromkeys(canonical(m) for m in matches))
    return " or ".join(f"'{m}'" for m in matches[:3]) or None
