"""User-facing errors: one exception type carrying source spans, rendered with a caret."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A place in a source file: 1-based line and column, end exclusive."""

    line: int
    col: int
    end_line: int
    end_col: int

    def to(self, other: "Span") -> "Span":
        """The span from the start of this one to the end of `other`."""
        return Span(self.line, self.col, other.end_line, other.end_col)

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a user's file: where, and a plain sentence."""

    message: str
    span: Span | None = None
    path: str | None = None
    note: str | None = None
    severity: str = "error"  # or "warning": said, and the command goes on

    def render(self, source: str | None) -> str:
        """file:line:col: error: sentence, then the source line with a caret."""
        where = self.path or "dlang"
        if self.span is not None:
            where += f":{self.span.line}:{self.span.col}"
        lines = [f"{where}: {self.severity}: {self.message}"]
        if self.span is not None and source is not None:
            lines += _excerpt(source, self.span)
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _excerpt(source: str, span: Span) -> list[str]:
    text_lines = source.split("\n")  # line numbers count "\n" only, as the lexer does
    if not 1 <= span.line <= len(text_lines):
        return []
    text = text_lines[span.line - 1].expandtabs(1)
    gutter = f"{span.line:>4} | "
    width = 1
    if span.end_line == span.line and span.end_col > span.col:
        width = span.end_col - span.col
    width = max(1, min(width, len(text) - span.col + 1))
    return [gutter + text, " " * (len(gutter) - 2) + "| " + " " * (span.col - 1) + "^" * width]


def span_at(loc, width: int = 1) -> Span | None:
    """The span of `width` characters at an IR location (line, col), or None without one."""
    return Span(loc[0], loc[1], loc[0], loc[1] + width) if loc else None


def source_text(path: str | None) -> str | None:
    """A program's text for the excerpt under an error found after checking (a fault, a limit),
    or None if the file is gone."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            return f.read()
    except OSError:
        return None


class DlangError(Exception):
    """Every error a user can cause. Holds one or more diagnostics; the CLI prints them and exits 1."""

    def __init__(self, diagnostics: "Diagnostic | list[Diagnostic] | str", source: str | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self.diagnostics)


class ProgramError(DlangError):
    """A problem in a .dl program (syntax, names, types)."""


class RuntimeFault(DlangError):
    """A problem found while running a program on a row (an index out of range, say)."""


class InputError(DlangError):
    """A problem in a data file, params file or command-line option."""


class DlangWarning(UserWarning):
    """Something a user should know that does not stop the command (the kernel cache could not
    be written, say): library code warns with it, and the CLI prints it as one line."""
