"""The front end's pipeline: source text to checked IR, one named step per line."""
from __future__ import annotations

import sys
from pathlib import Path

from . import nodes
from .check import check
from .consts import parse_overrides
from .errors import Diagnostic, InputError, ProgramError, Span
from .ir import Program
from .syntax import normalise_newlines, parse

# Deeply nested programs are valid; the checker walks them recursively.
_RECURSION_LIMIT = 20_000


def read_source(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        raise InputError(Diagnostic("is a directory, not a program file", None, path))
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(Diagnostic("no such file", None, path)) from None
    except OSError as err:
        raise InputError(Diagnostic(f"cannot read the file ({err.strerror})", None, path)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        shown = data.decode("utf-8", errors="replace")
        raise InputError(Diagnostic(f"the file is not UTF-8 text: byte 0x{data[err.start]:02x} cannot be read",
                                    Span(line, col, line, col + 1), path), shown) from None


def parse_source(source: str, path: str | None = None) -> nodes.Program:
    source = normalise_newlines(source)
    with deep_recursion():
        try:
            return parse(source, path)
        except RecursionError:
            raise _too_deep(path, source) from None


def dump_ast(path: str) -> str:
    """The parsed program at `path` as an S-expression (emit --stage ast)."""
    source = normalise_newlines(read_source(path))
    with deep_recursion():
        try:
            return nodes.dump(parse(source, path))
        except RecursionError:
            raise _too_deep(path, source) from None


def check_tree(tree: nodes.Program, consts, path: str | None, source: str, column_rows: int | None = None) -> Program:
    """Check a parsed program and lower it to IR (`consts`: --const NAME=VALUE overrides;
    column_rows: the length of whole data columns, the data's number of rows)."""
    overrides = parse_overrides(as_pairs(consts))
    source = normalise_newlines(source)
    with deep_recursion():
        try:
            return check(tree, overrides, path, source, column_rows)
        except RecursionError:
            raise _too_deep(path, source) from None


def compile_source(source: str, path: str | None = None, consts: dict[str, str] | list[str] | None = None,
                   column_rows: int | None = None) -> Program:
    """Parse and check a program, giving its IR."""
    parse_overrides(as_pairs(consts))  # a bad --const is reported before the program
    return check_tree(parse_source(source, path), consts, path, source, column_rows)


def load_program(path: str, consts: dict[str, str] | list[str] | None = None) -> Program:
    """Read, parse and check the program at `path`."""
    return compile_source(read_source(path), path, consts)


def as_pairs(consts) -> list[str]:
    if consts is None:
        return []
    if isinstance(consts, dict):
        return [f"{k}={v}" for k, v in consts.items()]
    return list(consts)


def _too_deep(path, source) -> ProgramError:
    return ProgramError(Diagnostic("the program is nested too deeply to check", None, path), source)


class deep_recursion:
    """Deeply nested programs are valid: the passes walk them recursively."""

    def __enter__(self):
        self.old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(self.old, _RECURSION_LIMIT))

    def __exit__(self, *exc):
        sys.setrecursionlimit(self.old)
