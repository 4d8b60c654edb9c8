"""Fuzzing with Hypothesis, in process: bad input, faults and hostile programs.

Part 1 feeds the front end (parse_source and compile_source) random bytes, odd Unicode,
random sequences of the language's own tokens and random mutations of the example programs.
Every outcome must be a program or a DlangError whose diagnostics are plain sentences at
places inside the source; anything else (IndexError, KeyError, RecursionError, a Lark
internal, ...) is a bug.

Part 2 generates random well-typed programs (data, params, consts, functions, for and while
loops, if/else, arrays, builtins, losses), checks that each compiles cleanly, and compares
the adjoint program's gradient with finite differences of the forward loss: many programs
through the reference interpreter, a few through the compiled Numba kernels, one through
`dlang grad --check`.

CI runs a few hundred examples per test (the whole file in well under a minute). A longer
run is one command:

    DLANG_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -q

which runs that many examples in every test, except the compiled-kernel test, which caps
itself at KERNEL_EXAMPLES_CAP (each example there costs a Numba compile of a few seconds).
Examples are derandomized (a fixed seed per test, no example database), so a run is
repeatable.
"""
from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from dlang import ir, nodes
from dlang.errors import DlangError, ProgramError
from dlang.frontend import compile_source, parse_source
from dlang.interp import grad_row, initial_params, program_loss
from dlang.irtext import parse_program, print_program
from dlang.reverse import reverse_ad
from dlang.verify import verify

from conftest import PROGRAMS

# ---- how many examples ------------------------------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("DLANG_FUZZ_EXAMPLES", "0") or 0)
KERNEL_EXAMPLES_CAP = 200


def fuzz_settings(ci_examples: int, cap: int | None = None) -> settings:
    """CI's example count, or DLANG_FUZZ_EXAMPLES (at most `cap`) for a longer run."""
    n = FUZZ_EXAMPLES or ci_examples
    if cap is not None:
        n = min(n, cap)
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# ---- part 1: every input gives a program or a plain, located error ------------------------------

PATH = "fuzz.dl"

# Python or Lark text that must never reach a user: reprs, tracebacks, internal token names.
_INTERNAL = re.compile(r"Traceback|File \"|object at 0x|\b(Token|Tree|Span|Lit|Var|Type|Node|Meta)\(|"
                       r"__ANON|\$END|_SEP\b|<class |<built-in|\bNoneType\b|\bNone\b|"
                       r"\b[A-Z][A-Za-z]*(Error|Exception)\b|\bdl_")


def _unquoted(message: str) -> str:
    """The message without the user's own text that it quotes ('...' or "...")."""
    return re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "''", message)


def check_error(err: DlangError, source: str) -> None:
    """A DlangError from the front end: plain located sentences, and a rendering that works."""
    assert isinstance(err, ProgramError), f"the front end raised {type(err).__name__}, not ProgramError"
    assert err.diagnostics, "a ProgramError with no diagnostics"
    text = source.replace("\r\n", "\n").replace("\r", "\n")  # as the front end sees it
    lines = text.split("\n")
    for d in err.diagnostics:
        msg = d.message
        assert isinstance(msg, str) and msg.strip() == msg and msg, f"empty or padded message {msg!r}"
        assert "\n" not in msg, f"a message spread over lines: {msg!r}"
        assert msg[0].isalnum() or msg[0] == "'", f"not a sentence: {msg!r}"
        assert not _INTERNAL.search(_unquoted(msg)), f"internal text in a message: {msg!r}"
        if d.note is not None:
            assert d.note.strip() and "\n" not in d.note and not _INTERNAL.search(_unquoted(d.note)), d.note
        assert d.path == PATH, f"diagnostic without the file's path: {d!r}"
        if d.span is None:
            assert msg == "the program is nested too deeply to check", f"a program error with no place: {msg!r}"
            continue
        s = d.span
        assert 1 <= s.line <= len(lines) + 1, f"line {s.line} outside a {len(lines)}-line source: {msg!r}"
        assert s.col >= 1 and (s.end_line, s.end_col) >= (s.line, s.col), f"bad span {s} for {msg!r}"
        if s.line <= len(lines):
            assert s.col <= len(lines[s.line - 1]) + 1, (
                f"column {s.col} past the end of line {s.line} ({lines[s.line - 1]!r}): {msg!r}")
        else:
            assert s.col == 1, f"column {s.col} on the line after the end: {msg!r}"
    rendered = err.render()
    assert str(err) == rendered
    for d in err.diagnostics:
        where = f"{PATH}:{d.span.line}:{d.span.col}" if d.span else PATH
        assert f"{where}: error: {d.message}" in rendered
        if d.span and d.span.line <= len(lines):
            assert f"{d.span.line:>4} | " in rendered, "the source line is missing under the message"
            assert "^" in rendered


def front_end(source: str) -> ir.Program | None:
    """Parse and compile `source`; None when it has errors (after checking them)."""
    try:
        tree = parse_source(source, PATH)
    except DlangError as err:
        check_error(err, source)
        tree = None
    else:
        assert isinstance(tree, nodes.Program)
        nodes.dump(tree)  # `dlang emit --stage ast` must print anything that parses
    try:
        prog = compile_source(source, PATH)
    except DlangError as err:
        check_error(err, source)
        return None
    assert tree is not None, "compile_source accepted what parse_source refused"
    assert isinstance(prog, ir.Program)
    return prog


def deep_checks(prog: ir.Program) -> None:
    """A program that compiled: its IR prints and parses back, and it differentiates."""
    assert parse_program(print_program(prog)) == prog
    adjoint = reverse_ad(prog)
    verify(adjoint)
    assert parse_program(print_program(adjoint)) == adjoint


KEYWORDS = ["const", "data", "param", "fn", "return", "for", "in", "while", "if", "else", "loss",
            "output", "and", "or", "not", "true", "false"]
OPERATORS = ["=", "+=", "-=", "*=", "/=", "+", "-", "*", "/", "@", "^", "<", "<=", ">", ">=", "==",
             "!=", "(", ")", "[", "]", "{", "}", ",", ";", "..", "~", "\n", "\n", "\n"]
NAMES = ["x", "y", "v", "W", "i", "j", "n", "k", "s", "p", "w", "b", "f", "g", "loss_", "_", "x1",
         "sin", "exp", "tanh", "sqrt", "log", "zeros", "len", "sum", "mean", "dot", "min", "max",
         "clamp", "atan2", "pow", "normal", "uniform", "None", "print", "__import__", "lambda"]
NUMBERS = ["0", "1", "2", "3", "10", "0.5", ".5", "3.", "1e-3", "2.5E+4", "1e400", "0..3", "1..",
           "99999999999999999999", "9223372036854775807", "9223372036854775808", "0.0", "4.0"]
ODD = ["#", "# a comment\n", "\t", " ", "\r", "\r\n", "\f", "\x00", "\u00e9", "\u03c0", "\u200b",
       "\u2028", "\ufeff", "\\", "$", "'", '"', "`", ".", ":", "?", "!", "&", "|", "%"]
TOKENS = KEYWORDS + OPERATORS + NAMES + NUMBERS

odd_text = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),  # anything, control characters and exotic Unicode included
        st.sampled_from(list("(){}[]=+-*/^@<>!,;.~#\n\r\t 0123456789eE_xyz") + ODD),
    ),
    max_size=200,
).map("".join)


@st.composite
def token_programs(draw) -> str:
    """A sequence of real tokens, joined by spaces, nothing or newlines."""
    tokens = draw(st.lists(st.one_of(st.sampled_from(TOKENS), st.sampled_from(ODD)), max_size=60))
    seps = draw(st.lists(st.sampled_from([" ", " ", "", "\n", ";"]), min_size=len(tokens),
                         max_size=len(tokens)))
    return "".join(t + s for t, s in zip(tokens, seps))


PROGRAM_TEXTS = {p.stem: p.read_text() for p in sorted(PROGRAMS.glob("*.dl"))}
_UNITS = {
    "char": re.compile(r".", re.S),
    "token": re.compile(r"#[^\n]*|\n|[ \t]+|[A-Za-z_][A-Za-z0-9_]*|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\.|"
                        r"\.\d+|[+\-*/<>=!]=|.", re.S),
    "line": re.compile(r"[^\n]*\n|[^\n]+"),
}


def split_units(text: str, level: str) -> list[str]:
    units = _UNITS[level].findall(text)
    assert "".join(units) == text
    return units


@st.composite
def mutated_programs(draw) -> str:
    """An example program with a few random edits to its characters, tokens or lines."""
    name = draw(st.sampled_from(sorted(PROGRAM_TEXTS)))
    text = PROGRAM_TEXTS[name]
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        level = draw(st.sampled_from(["char", "token", "token", "line"]))
        units = split_units(text, level)
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace"]))
        if not units:
            units = [""]
        i = draw(st.integers(0, len(units) - 1))
        k = draw(st.integers(1, 3))
        if op == "delete":
            del units[i:i + k]
        elif op == "duplicate":
            units[i:i] = units[i:i + k]
        elif op == "swap":
            j = draw(st.integers(0, len(units) - 1))
            units[i], units[j] = units[j], units[i]
        else:
            if level == "char":
                new = draw(st.one_of(st.sampled_from(list("(){}[]=+-*/^@<>,;.~#\n 0123456789")),
                                     st.sampled_from(ODD), st.characters(codec="utf-8")))
            elif level == "token":
                new = draw(st.one_of(st.sampled_from(TOKENS), st.sampled_from(units)))
                new = draw(st.sampled_from([new, f" {new} ", new + " "]))
            else:
                other = PROGRAM_TEXTS[draw(st.sampled_from(sorted(PROGRAM_TEXTS)))]
                new = draw(st.sampled_from(split_units(other, "line") or ["\n"]))
            if op == "insert":
                units.insert(i, new)
            else:
                units[i] = new
        edits.append(f"{op} {level} {i}")
        text = "".join(units)
    note(f"{name}.dl after {', '.join(edits)}")
    return text


@fuzz_settings(300)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_front_end(raw):
    front_end(raw.decode("utf-8", errors="replace"))


@fuzz_settings(300)
@given(odd_text)
def test_odd_unicode_text_never_crashes_the_front_end(text):
    front_end(text)


@fuzz_settings(300)
@given(token_programs())
def test_random_token_sequences_never_crash_the_front_end(text):
    prog = front_end(text)
    if prog is not None:
        deep_checks(prog)


@fuzz_settings(300)
@given(mutated_programs())
def test_mutated_example_programs_never_crash_the_front_end(text):
    prog = front_end(text)
    if prog is not None:
        event("mutant compiles")
        deep_checks(prog)


# ---- regressions: bugs the fuzzers found, each as its smallest input ----------------------------

BIG = "9" * 40  # the longest int literal the parser keeps as written


@pytest.mark.parametrize("source", [
    f"const a = {' * '.join([BIG] * 9)} / 2\n",  # an int past float's range, then float arithmetic
    f"const a = sin({' * '.join([BIG] * 9)})\n",
    f"const a = atan2(1, {' * '.join([BIG] * 9)})\n",
    f"x = zeros({' * '.join([BIG] * 9)} / 2)\n",
])
def test_const_int_arithmetic_past_float_range_is_a_plain_error(source):
    """Was OverflowError: int too large to convert to float (dlang/consts.py)."""
    with pytest.raises(ProgramError) as info:
        compile_source(source, PATH)
    check_error(info.value, source)
    assert "overflows" in info.value.diagnostics[0].message


def test_const_int_overflow_inside_an_expression_is_reported():
    source = "const a = (9223372036854775807 + 1) - 1\n"
    with pytest.raises(ProgramError) as info:
        compile_source(source, PATH)
    (d,) = info.value.diagnostics
    assert "too large for an int" in d.message and (d.span.line, d.span.col) == (1, 12)


@pytest.mark.parametrize("source, expected", [
    ("param p = 0.5\nx = 0.0\nfor i in 0..2 {\n  x = sin(p)\n}\nloss x\n", math.cos(0.5)),
    ("param p = 0.5\nx = 0.0\nfor i in 0..2 {\n  for j in 0..2 {\n    x = p * p\n  }\n}\nloss x\n", 1.0),
    ("param p = 0.5\nx = 0.0\nk = 0\nwhile k < 3 {\n  x = 2.0 * p\n  k += 1\n}\nloss x\n", 2.0),
])
def test_loop_that_overwrites_a_carried_local_differentiates(source, expected):
    """Was AttributeError: 'Lit' object has no attribute 'hint' in reverse_ad (dlang/reverse.py):
    the value carried into the loop has a zero adjoint, a literal."""
    prog = compile_source(source, PATH)
    adjoint = reverse_ad(prog)
    verify(adjoint)
    assert parse_program(print_program(adjoint)) == adjoint
    _, grads = grad_row(adjoint, {}, {"p": 0.5})
    assert grads["p"] == pytest.approx(expected, rel=1e-12)
