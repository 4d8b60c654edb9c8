"""Terminal rendering for the CLI: highlighted program text, summaries and error messages."""
from __future__ import annotations

import sys

from .errors import DlangError
from .ir import Program, walk


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


_IR_STYLES = [
    (r"@\d+:\d+", "dim"),
    (r"%[A-Za-z0-9_.]+", "cyan"),
    (r"\b(?:f64|i64|bool)(?:\[[0-9,]+\])?", "yellow"),
    (r"^\s*(?:const|data|param|output|loss|body)\b", "bold magenta"),
    (r"\b(?:for|while|cond|do|if|else|yield|return)\b", "bold magenta"),
    (r"= ([a-z_0-9]+)", "bold green"),
]


def show(text: str, kind: str) -> None:
    """Print program text: highlighted on a terminal, exactly as is when piped."""
    console = _console()
    if not console.is_terminal:
        sys.stdout.write(text)
        return
    if kind == "ast":
        from rich.syntax import Syntax

        console.print(Syntax(text.rstrip("\n"), "scheme", background_color="default", word_wrap=False))
        return
    from rich.text import Text

    for line in text.rstrip("\n").split("\n"):
        styled = Text(line)
        for pattern, style in _IR_STYLES:
            styled.highlight_regex(pattern, style)
        console.print(styled)


def summary(path: str, prog: Program) -> str:
    eqns = sum(1 for _ in walk(prog.body))
    parts = [f"{len(prog.params)} param{'s' * (len(prog.params) != 1)}",
             f"{len(prog.data)} data input{'s' * (len(prog.data) != 1)}",
             f"{len(prog.outputs)} output{'s' * (len(prog.outputs) != 1)}",
             f"{eqns} IR statement{'s' * (eqns != 1)}"]
    return f"{path}: ok ({', '.join(parts)})"


def print_error(err: DlangError) -> None:
    console = _console(stderr=True)
    text = err.render()
    if not console.is_terminal:
        sys.stderr.write(text + "\n")
        return
    from rich.text import Text

    styled = Text(text)
    styled.highlight_regex(r"error:", "bold red")
    styled.highlight_regex(r"note:", "bold cyan")
    styled.highlight_regex(r"\^+", "bold red")
    console.print(styled)
