"""Fuzzing with Hypothesis, in process: bad input, faults and hostile programs.

Part 1 feeds the front end (parse_source and compile_source) random bytes, odd Unicode,
random sequences of the language's own tokens, random grammatical programs over a small pool
of colliding names, random mutations of the example programs and random --const overrides.
Every outcome must be a program or a DlangError whose diagnostics are plain sentences at
places inside the source; anything else (IndexError, KeyError, RecursionError, a Lark
internal, ...) is a bug. Programs that compile must also print and re-parse as IR and
differentiate.

Part 2 generates random well-typed programs (data, params, consts, functions, for and while
loops, if/else, arrays, builtins, losses), checks that each compiles cleanly, and compares
the adjoint program's gradient with finite differences of the forward loss: many programs
through the reference interpreter, a few through the compiled Numba kernels, one through
`dlang grad --check`. It also checks that laying a program out differently (comments, `;`,
line ends, newlines inside parentheses) does not change its IR, and that the gradient check
notices a deliberately wrong derivative rule.

The last section holds the bugs the fuzzers found, each as a plain test of its smallest input.

CI runs a few hundred examples per fuzz test (four for the compiled kernels), the whole file
in under a minute. A longer run is one command:

    DLANG_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -q

which runs that many examples in every fuzz test, except the compiled-kernel test, capped at
KERNEL_EXAMPLES_CAP (each example costs a Numba compile), and the layout test, capped at
LAYOUT_EXAMPLES_CAP. Examples are derandomized (a fixed seed per test, no example database),
so a run is repeatable; DLANG_FUZZ_SEED=N draws other examples, as repeatably. When an example
fails, Hypothesis prints the smallest one it found.
"""
from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import seed as fixed_seed
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
FUZZ_SEED = os.environ.get("DLANG_FUZZ_SEED")  # another fixed seed, for examples CI has not seen
KERNEL_EXAMPLES_CAP = 200  # each example costs a Numba compile of 1-3 s
LAYOUT_EXAMPLES_CAP = 5000  # two compiles of a generated program each, and part 2 covers them too


def fuzz_settings(ci_examples: int, cap: int | None = None):
    """CI's example count, or DLANG_FUZZ_EXAMPLES (at most `cap`) for a longer run."""
    n = FUZZ_EXAMPLES or ci_examples
    if cap is not None:
        n = min(n, cap)
    chosen = settings(max_examples=n, deadline=None, database=None, derandomize=FUZZ_SEED is None,
                      suppress_health_check=list(HealthCheck), print_blob=False)
    if FUZZ_SEED is None:
        return chosen
    return lambda test: fixed_seed(int(FUZZ_SEED))(chosen(test))


# ---- part 1: every input gives a program or a plain, located error ------------------------------

PATH = "fuzz.dl"
BIG = "9" * 40  # the longest int literal the parser keeps as written

# Python or Lark text that must never reach a user: reprs, tracebacks, internal token names.
_INTERNAL = re.compile(r"Traceback|File \"|object at 0x|\b(Token|Tree|Span|Lit|Var|Type|Node|Meta)\(|"
                       r"__ANON|\$END|_SEP\b|<class |<built-in|\bNoneType\b|\bNone\b|"
                       r"\b[A-Z][A-Za-z]*(Error|Exception)\b|\bdl_")


def _unquoted(message: str) -> str:
    """The message without the user's own text that it quotes ('...' or "...")."""
    return re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "''", message)


def check_sentences(err: DlangError) -> None:
    """Every diagnostic is a plain one-line sentence (and a note, if any, too)."""
    assert err.diagnostics, f"a {type(err).__name__} with no diagnostics"
    for d in err.diagnostics:
        msg = d.message
        assert isinstance(msg, str) and msg.strip() == msg and msg, f"empty or padded message {msg!r}"
        assert "\n" not in msg, f"a message spread over lines: {msg!r}"
        assert re.search(r"[A-Za-z]{2,}\W+[A-Za-z]{2,}", msg), f"not a sentence: {msg!r}"
        assert not _INTERNAL.search(_unquoted(msg)), f"internal text in a message: {msg!r}"
        if d.note is not None:
            assert d.note.strip() and "\n" not in d.note and not _INTERNAL.search(_unquoted(d.note)), d.note
    assert str(err) == err.render()


def check_error(err: DlangError, source: str) -> None:
    """A DlangError from the front end: plain located sentences, and a rendering that works."""
    assert isinstance(err, ProgramError), f"the front end raised {type(err).__name__}, not ProgramError"
    check_sentences(err)
    text = source.replace("\r\n", "\n").replace("\r", "\n")  # as the front end sees it
    lines = text.split("\n")
    for d in err.diagnostics:
        msg = d.message
        assert d.path == PATH, f"diagnostic without the file's path: {d!r}"
        if d.span is None:
            assert msg == "the program is nested too deeply to check" or msg.startswith("--const "), (
                f"a program error with no place: {msg!r}")
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



# Syntactically valid programs from the grammar, with names drawn from a small pool (so they
# collide: a name declared twice, a function used as a value, an unknown distribution) and
# numbers from the edges: these get past the parser and exercise the checker's error paths.
POOL = ["a", "b", "x", "v", "W", "f", "g", "i", "n", "s", "sin", "zeros", "len", "sum", "dot",
        "mean", "clamp", "min", "pow", "normal", "uniform"]
POOL_NUMBERS = ["0", "1", "2", "3", "0.5", ".5", "3.", "1e-3", "1e400", "0.0", "-1",
                "99999999999999999999", "9223372036854775807", "9223372036854775808", BIG]
BINARY = ["+", "-", "*", "/", "@", "^", "<", "<=", ">", ">=", "==", "!=", "and", "or"]


def _paren(e: str) -> str:
    return e if re.fullmatch(r"[A-Za-z_0-9.]+", e) else f"({e})"


class _Grammar:
    """Draws one program's text; `budget` bounds its size (every expression node costs one)."""

    def __init__(self, draw, budget: int):
        self.draw, self.budget = draw, budget

    def pick(self, options):
        return options[self.draw(st.integers(0, len(options) - 1))]

    def count(self, most: int) -> int:
        return self.draw(st.integers(0, most))

    def expr(self, depth: int = 3) -> str:
        self.budget -= 1
        kind = self.draw(st.integers(0, 6)) if depth > 0 and self.budget > 0 else self.draw(st.integers(0, 2))
        if kind == 0:
            return self.pick(POOL)
        if kind == 1:
            return self.pick(POOL_NUMBERS)
        if kind == 2:
            return self.pick(["true", "false", "x", "1.0"])
        if kind == 3:
            return f"{_paren(self.expr(depth - 1))} {self.pick(BINARY)} {_paren(self.expr(depth - 1))}"
        if kind == 4:
            return self.pick(["-", "not "]) + _paren(self.expr(depth - 1))
        if kind == 5:
            return f"{self.pick(POOL)}({', '.join(self.expr(depth - 1) for _ in range(self.count(3)))})"
        return f"{_paren(self.expr(depth - 1))}[{', '.join(self.expr(depth - 1) for _ in range(1 + self.count(2)))}]"

    def exprs(self, most: int) -> str:
        return ", ".join(self.expr() for _ in range(self.count(most)))

    def block(self, depth: int) -> str:
        stmts = [self.statement(depth - 1) for _ in range(self.count(3))]
        body = "\n".join("    " + line for st_ in stmts for line in st_.split("\n"))
        return "{\n" + body + "\n}" if stmts else "{ }"

    def statement(self, depth: int) -> str:
        kind = self.draw(st.integers(0, 8 if depth > 0 and self.budget > 0 else 4))
        if kind == 0:
            indices = self.exprs(2)
            target = self.pick(POOL) + (f"[{indices}]" if indices else "")
            return f"{target} {self.pick(['=', '=', '+=', '-=', '*=', '/='])} {self.expr()}"
        if kind == 1:
            return f"loss {self.expr()}"
        if kind == 2:
            return f"output {self.pick(POOL)} = {self.expr()}"
        if kind == 3:
            return f"return {self.expr()}"
        if kind == 4:
            return f"const {self.pick(POOL)} = {self.expr()}"
        if kind == 5:
            lo, hi = _paren(self.expr()), _paren(self.expr())
            dots = " .. " if lo.endswith(".") or hi.startswith(".") else ".."  # `3...5` is 3 .. .5
            return f"for {self.pick(POOL)} in {lo}{dots}{hi} {self.block(depth)}"
        if kind == 6:
            return f"while {self.expr()} {self.block(depth)}"
        text = f"if {self.expr()} {self.block(depth)}"
        return text + (f" else {self.block(depth)}" if self.draw(st.booleans()) else "")

    def item(self) -> str:
        kind = self.draw(st.integers(0, 4))
        if kind == 0:
            return self.statement(2)
        if kind == 1:
            items = []
            for _ in range(1 + self.count(2)):
                dims = self.exprs(3)
                items.append(self.pick(POOL) + (f"[{dims}]" if dims else ""))
            return "data " + ", ".join(items)
        dims = self.exprs(3)
        head = f"param {self.pick(POOL)}" + (f"[{dims}]" if dims else "")
        if kind == 2:
            return f"{head} = {self.expr()}"
        if kind == 3:
            return f"{head} ~ {self.pick(POOL)}({self.exprs(3)})"
        params = ", ".join(self.pick(POOL) for _ in range(self.count(3)))
        return f"fn {self.pick(POOL)}({params}) {self.block(2)}"


@st.composite
def grammar_programs(draw) -> str:
    g = _Grammar(draw, budget=40)
    return "\n".join(g.item() for _ in range(draw(st.integers(0, 6)))) + "\n"


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
@given(grammar_programs())
def test_random_grammatical_programs_never_crash_the_front_end(text):
    prog = parse_source(text, PATH)  # well formed by construction
    assert isinstance(prog, nodes.Program)
    prog = front_end(text)
    if prog is not None:
        event("grammatical program compiles")
        deep_checks(prog)


CONST_PROGRAMS = {name: text for name, text in PROGRAM_TEXTS.items() if re.search(r"^const ", text, re.M)}
const_values = st.one_of(
    st.sampled_from(["3", "0", "-1", "2.5", ".5", "1e-3", "1e999", "-0", "9223372036854775807",
                     "9223372036854775808", "-9223372036854775808", "nan", "inf", "1_000", "0x10", " 7 ", ""]),
    st.text(alphabet="0123456789.eE+- x_=", max_size=12),
)


@fuzz_settings(300)
@given(st.sampled_from(sorted(CONST_PROGRAMS)), st.data())
def test_const_overrides_are_a_program_or_a_plain_error(name, data):
    """`--const NAME=VALUE` pairs, right and wrong, on the example programs with consts."""
    source = CONST_PROGRAMS[name]
    names = sorted(set(re.findall(r"^const (\w+)", source, re.M))) + ["x", "no_such", "data", ""]
    pairs = data.draw(st.lists(st.one_of(
        st.tuples(st.sampled_from(names), st.sampled_from(["=", "=", " = ", ":", ""]), const_values).map("".join),
        st.text(alphabet="abcxyz_=0123456789.- ", max_size=10),
    ), max_size=3))
    try:
        prog = compile_source(source, PATH, pairs)
    except ProgramError as err:
        check_error(err, source)
    except DlangError as err:
        check_sentences(err)
        assert all(d.message.startswith("--const ") for d in err.diagnostics), err.render()
    else:
        consts = dict(prog.consts)
        for pair in pairs:  # the last value given for a name is the one used
            key, _, value = pair.partition("=")
            if key.strip() in consts and [p for p in pairs if p.partition("=")[0].strip() == key.strip()][-1] == pair:
                assert consts[key.strip()] == pytest.approx(float(value)), (pair, consts)


@fuzz_settings(300)
@given(mutated_programs())
def test_mutated_example_programs_never_crash_the_front_end(text):
    prog = front_end(text)
    if prog is not None:
        event("mutant compiles")
        deep_checks(prog)


# ---- part 2: random well-typed programs, and their gradients ------------------------------------

class Chooser:
    """The generator's source of choices: Hypothesis draws (shrinkable) or a seeded Random."""

    def __init__(self, draw=None, rng: random.Random | None = None):
        self.draw, self.rng = draw, rng

    def int(self, lo: int, hi: int) -> int:
        if self.draw is not None:
            return self.draw(st.integers(lo, hi))
        return self.rng.randint(lo, hi)

    def chance(self, percent: int) -> bool:
        """True with about this probability (under Hypothesis, the shrunk choice is False)."""
        return self.int(0, 99) >= 100 - percent

    def pick(self, seq):
        seq = list(seq)
        return seq[self.int(0, len(seq) - 1)]

    def num(self, lo: float = -1.0, hi: float = 1.0) -> float:
        """A number with two decimals, so that the source shows it exactly."""
        return self.int(round(lo * 20), round(hi * 20)) / 20


F = ("f",)  # a float; ("v", n) a vector, ("m", n, m) a matrix; ints are only indices and counters


def lit(x: float) -> str:
    text = f"{abs(x):.2f}"
    return f"(-{text})" if x < 0 else text


@dataclass
class FnSig:
    name: str
    args: list  # argument types; None for the elementwise (any float type) argument
    ret: tuple | None  # None: the type of the argument (elementwise functions)


@dataclass
class Scope:
    """What an expression may read here, with each name's type."""

    floats: list = field(default_factory=list)  # (name, type) of float scalars and arrays
    indices: list = field(default_factory=list)  # (name, lo, hi): loop indices and their ranges
    counters: list = field(default_factory=list)  # int locals (while counters)
    smooth_conds: list = field(default_factory=list)  # names whose value does not depend on params
    fns: list = field(default_factory=list)
    in_fn: bool = False
    elementwise_arg: str | None = None  # inside an elementwise function: its argument

    def copy(self) -> "Scope":
        return Scope(list(self.floats), list(self.indices), list(self.counters), list(self.smooth_conds),
                     list(self.fns), self.in_fn, self.elementwise_arg)


@dataclass
class GenProgram:
    source: str
    data: list  # (name, shape) in declaration order
    rows: list  # dicts name -> float or array
    smooth: bool  # no kinks and no branch or trip count that depends on params
    features: set
    seed: int

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"GenProgram(smooth={self.smooth}, rows={self.rows!r}, seed={self.seed}, source=\n{self.source})"


class ProgramGen:
    """Writes one random well-typed program: every name it reads is certainly assigned, every
    index is in range, every value keeps its type, every loop ends after a few steps, and the
    values stay bounded (updates in loops go through tanh, sin, ... or small factors)."""

    SMOOTH1 = ["sin", "cos", "tanh", "sigmoid", "atan"]

    def __init__(self, c: Chooser, smooth: bool):
        self.c, self.smooth = c, smooth
        self.lines: list[str] = []
        self.counter = 0
        self.features: set[str] = set()
        self.sizes = [2, 3] if c.chance(50) else [c.pick([2, 3, 4])]
        self.int_consts: dict[str, int] = {}
        self.budget = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # ---- expressions -------------------------------------------------------------------

    def leaves(self, scope: Scope, t) -> list[str]:
        return [name for name, ty in scope.floats if ty == t]

    def expr(self, scope: Scope, t, depth: int) -> str:
        """An expression of float type t (("f",), ("v", n) or ("m", n, m))."""
        self.budget -= 1
        if depth <= 0 or self.budget <= 0 or self.c.chance(25):
            return self.leaf(scope, t)
        if t == F:
            return self.scalar(scope, depth)
        if t[0] == "v":
            return self.vector(scope, t[1], depth)
        return self.matrix(scope, t[1], t[2], depth)

    def leaf(self, scope: Scope, t) -> str:
        names = self.leaves(scope, t)
        live = [n for n in names if n[0] in "pla"]  # params, locals, arguments: what gradients flow through
        if live and self.c.chance(50):
            return self.c.pick(live)
        if t == F:
            options = names + [lit(self.c.num())]
            if scope.indices:
                options.append(f"{self.c.pick(['0.25', '0.5', '1.0'])} * {self.c.pick(scope.indices)[0]}")
            if scope.counters:
                options.append(f"0.1 * {self.c.pick(scope.counters)}")
            return self.c.pick(options)
        if names and self.c.chance(85):
            return self.c.pick(names)
        zeros = f"zeros({', '.join(map(str, t[1:]))})"
        return f"({zeros} + {lit(self.c.num())})"

    def index(self, scope: Scope, n: int) -> str:
        """An int expression certainly in 0..n-1."""
        options = [str(self.c.int(0, n - 1))]
        for name, lo, hi in scope.indices:
            if lo >= 0 and hi <= n and hi > lo:
                options += [name, name, f"{n - 1} - {name}"]
            if lo >= 0 and hi + 1 <= n and hi > lo:
                options.append(f"{name} + 1")
        for name, value in self.int_consts.items():
            if 0 <= value < n:
                options.append(name)
            if 0 <= value - 1 < n:
                options.append(f"{name} - 1")
        return self.c.pick(options)

    def bounded(self, scope: Scope, t, depth: int) -> str:
        """An expression whose value lies in about [-2, 2] (elementwise)."""
        e = self.expr(scope, t, depth)
        kind = self.c.int(0, 5)
        if kind <= 2:
            return f"{self.c.pick(self.SMOOTH1)}({e})"
        if kind == 3:
            e = self.paren(e)
            return f"{e} / (1.0 + {e} * {e})" if len(e) < 40 else f"tanh({e})"
        if kind == 4 and not self.smooth:
            self.features.add("kink")
            return self.c.pick([f"clamp({e}, -1.0, 1.0)", f"min(tanh({e}), 0.5)", f"max(sin({e}), -0.25)",
                                f"relu(tanh({e}))", f"abs(sin({e}))"])
        return f"cos({e})"

    def scalar(self, scope: Scope, depth: int) -> str:
        c, d = self.c, depth - 1
        kind = c.int(0, 16)
        if kind <= 2:
            return f"{self.paren(self.expr(scope, F, d))} {c.pick(['+', '-', '*'])} {self.paren(self.expr(scope, F, d))}"
        if kind == 3:
            return f"-{self.paren(self.expr(scope, F, d))}"
        if kind == 4:
            return self.bounded(scope, F, d)
        if kind == 5:
            inner = self.bounded(scope, F, d)
            return c.pick([f"exp({inner})", f"exp(-{self.paren(self.expr(scope, F, d))}^2)",
                           f"sqrt(1.0 + {self.paren(self.expr(scope, F, d))}^2)", f"log1p({inner}^2)",
                           f"softplus({inner})", f"cosh({inner})", f"sinh({inner})"])
        if kind == 6:
            e = self.paren(self.expr(scope, F, d))
            return c.pick([f"{e}^2", f"{e}^3", f"{e} * {e}", f"pow(1.5 + sin({e}), {self.bounded(scope, F, d)})",
                           f"(1.25 + cos({e}))^{lit(c.num(-2, 2))}", f"(1.25 + sin({e}))^-{c.int(1, 3)}",
                           f"-{e}^2", f"2.0^-{e}^2", f"atan2({e}, 2.0 + {e}^2)"])
        if kind == 7:
            return f"{self.paren(self.expr(scope, F, d))} / (1.0 + {self.paren(self.expr(scope, F, d))}^2)"
        if kind in (8, 9) and not scope.elementwise_arg:
            n = c.pick(self.sizes)
            v = self.expr(scope, ("v", n), d)
            w = self.expr(scope, ("v", n), d)
            self.features.add("reduction")
            return c.pick([f"sum({v})", f"mean({v})", f"dot({v}, {w})", f"{self.paren(v)} @ {self.paren(w)}",
                           f"{self.paren(v)}[{self.index(scope, n)}]"])
        if kind == 10 and not scope.elementwise_arg:
            n, m = c.pick(self.sizes), c.pick(self.sizes)
            a = self.expr(scope, ("m", n, m), d)
            self.features.add("matrix")
            return c.pick([f"sum({a})", f"mean({a})", f"{self.paren(a)}[{self.index(scope, n)}, {self.index(scope, m)}]",
                           f"{self.paren(a)}[{self.index(scope, n)}][{self.index(scope, m)}]"])
        if kind == 11:
            return self.call(scope, F, d) or self.leaf(scope, F)
        if kind == 12 and not self.smooth:
            self.features.add("kink")
            e, f = self.expr(scope, F, d), self.expr(scope, F, d)
            return c.pick([f"abs({e})", f"relu({e})", f"min({e}, {f})", f"max({e}, {f})",
                           f"clamp({e}, -0.5, {f}^2)", f"0.1 * floor({e})", f"0.1 * sign({e})"])
        return f"{self.paren(self.expr(scope, F, d))} {c.pick(['+', '-'])} {self.paren(self.expr(scope, F, d))}"

    def vector(self, scope: Scope, n: int, depth: int) -> str:
        c, d, t = self.c, depth - 1, ("v", n)
        self.features.add("vector")
        kind = c.int(0, 9)
        if kind <= 1:
            return f"{self.paren(self.expr(scope, t, d))} {c.pick(['+', '-', '*'])} {self.paren(self.expr(scope, t, d))}"
        if kind == 2:
            s = self.paren(self.expr(scope, F, d))
            v = self.paren(self.expr(scope, t, d))
            return c.pick([f"{s} * {v}", f"{v} * {s}", f"{v} + {s}", f"{s} - {v}", f"{v} / (1.0 + {s}^2)"])
        if kind == 3:
            return self.bounded(scope, t, d)
        if kind == 4 and not scope.elementwise_arg:
            m = c.pick(self.sizes)
            self.features.add("matmul")
            if c.chance(50):
                return f"{self.paren(self.expr(scope, ('m', n, m), d))} @ {self.paren(self.expr(scope, ('v', m), d))}"
            return f"{self.paren(self.expr(scope, ('v', m), d))} @ {self.paren(self.expr(scope, ('m', m, n), d))}"
        if kind == 5 and not scope.elementwise_arg:
            m = c.pick(self.sizes)
            self.features.add("matrix")
            return f"{self.paren(self.expr(scope, ('m', m, n), d))}[{self.index(scope, m)}]"
        if kind == 6:
            return self.call(scope, t, d) or self.leaf(scope, t)
        if kind == 7:
            return f"-{self.paren(self.expr(scope, t, d))}"
        return f"{self.paren(self.expr(scope, t, d))} {c.pick(['+', '-'])} {self.paren(self.expr(scope, t, d))}"

    def matrix(self, scope: Scope, n: int, m: int, depth: int) -> str:
        c, d, t = self.c, depth - 1, ("m", n, m)
        self.features.add("matrix")
        kind = c.int(0, 5)
        if kind <= 1:
            return f"{self.paren(self.expr(scope, t, d))} {c.pick(['+', '-', '*'])} {self.paren(self.expr(scope, t, d))}"
        if kind == 2:
            return f"{self.paren(self.expr(scope, F, d))} * {self.paren(self.expr(scope, t, d))}"
        if kind == 3:
            return self.bounded(scope, t, d)
        if kind == 4 and not scope.elementwise_arg:
            k = c.pick(self.sizes)
            self.features.add("matmul")
            return f"{self.paren(self.expr(scope, ('m', n, k), d))} @ {self.paren(self.expr(scope, ('m', k, m), d))}"
        return self.call(scope, t, d) or self.leaf(scope, t)

    def call(self, scope: Scope, t, depth: int) -> str | None:
        if scope.elementwise_arg:
            return None
        fits = [f for f in scope.fns if f.ret == t or f.ret is None]
        if not fits:
            return None
        f = self.c.pick(fits)
        self.features.add("call")
        args = [self.expr(scope, t if a is None else a, depth) for a in f.args]
        return f"{f.name}({', '.join(args)})"

    @staticmethod
    def paren(e: str) -> str:
        return e if re.fullmatch(r"[A-Za-z_0-9.]+(\[[^\[\]]*\])?", e) else f"({e})"

    # ---- conditions --------------------------------------------------------------------

    def condition(self, scope: Scope, depth: int = 1) -> str:
        """A condition: on data, consts, indices and counters only when smooth; on any value otherwise."""
        c = self.c
        kind = c.int(0, 7)
        if kind == 0:
            return c.pick(["true", "false"])
        if kind == 1 and depth > 0:
            return f"{self.condition(scope, depth - 1)} {c.pick(['and', 'or'])} {self.condition(scope, depth - 1)}"
        if kind == 2 and depth > 0:
            return f"not ({self.condition(scope, depth - 1)})"
        if kind == 3 and scope.indices:
            name, lo, hi = c.pick(scope.indices)
            return f"{name} {c.pick(['<', '<=', '>', '>=', '==', '!='])} {c.int(lo, max(lo, hi - 1))}"
        if kind == 4 and scope.counters:
            return f"{c.pick(scope.counters)} {c.pick(['<', '>=', '==', '!='])} {c.int(0, 2)}"
        op = c.pick(["<", "<=", ">", ">="])
        if not self.smooth and c.chance(50):
            self.features.add("value condition")
            return f"{self.expr(scope, F, 2)} {op} {lit(c.num())}"
        if scope.smooth_conds:
            return f"{c.pick(scope.smooth_conds)} {op} {lit(c.num(-1.5, 1.5))}"
        return f"{c.int(0, 3)} {op} {c.int(0, 3)}"

    # ---- statements --------------------------------------------------------------------

    def block(self, scope: Scope, depth: int, most: int) -> list[str]:
        inner = scope.copy()
        out: list[str] = []
        for _ in range(self.c.int(1, most)):
            out += self.statement(inner, depth)
        return out

    def statement(self, scope: Scope, depth: int) -> list[str]:
        """One statement (as lines), updating `scope` with the locals it certainly assigns."""
        c = self.c
        kind = c.int(0, 11) if depth > 0 and self.budget > 0 else c.int(0, 4)
        in_loop = depth < self.top_depth
        if kind <= 1 or not self.writable(scope):
            t = self.pick_type()
            name = self.fresh("l")
            value = self.bounded(scope, t, 2) if in_loop or c.chance(60) else self.expr(scope, t, 2)
            scope.floats.append((name, t))
            return [f"{name} = {value}"]
        if kind <= 3:
            return [self.update(scope, in_loop)]
        if kind == 4:
            if scope.in_fn:
                return [self.update(scope, in_loop)]
            self.features.add("loss")
            return [f"loss {lit(c.num(0.05, 1))} * {self.paren(self.expr(scope, F, 2))}"]
        if kind <= 6:
            return self.for_loop(scope, depth)
        if kind == 7:
            return self.while_loop(scope, depth)
        return self.if_else(scope, depth)

    def pick_type(self):
        c = self.c
        kind = c.int(0, 9)
        if kind <= 5:
            return F
        if kind <= 8:
            return ("v", c.pick(self.sizes))
        return ("m", c.pick(self.sizes), c.pick(self.sizes))

    @staticmethod
    def writable(scope: Scope) -> list:
        """Locals, and inside a function its arguments (local copies)."""
        return [x for x in scope.floats if x[0][0] == "l" or (scope.in_fn and x[0][0] == "a")]

    def update(self, scope: Scope, in_loop: bool) -> str:
        c = self.c
        name, t = c.pick(self.writable(scope))
        if t != F and c.chance(40):  # an element or a row
            idx = self.index(scope, t[1])
            elem = F
            if t[0] == "m":
                if c.chance(50):
                    idx += f", {self.index(scope, t[2])}"
                else:
                    elem = ("v", t[2])
            target = f"{name}[{idx}]"
            self.features.add("element update")
        else:
            target, elem = name, t
        kind = c.int(0, 4)
        if kind == 0:
            return f"{target} = {self.bounded(scope, elem, 2)}"
        if kind == 1:
            return f"{target} += {lit(c.num(0.05, 0.5))} * {self.bounded(scope, elem, 2)}"
        if kind == 2:
            return f"{target} -= {lit(c.num(0.05, 0.5))} * {self.bounded(scope, elem, 2)}"
        if kind == 3:
            return f"{target} *= 0.75 + 0.25 * {self.bounded(scope, elem if elem == F else F, 1)}"
        return f"{target} /= 1.5 + {self.c.pick(['sin', 'cos', 'tanh'])}({self.expr(scope, F, 1)})"

    def for_loop(self, scope: Scope, depth: int) -> list[str]:
        c = self.c
        var = self.fresh("i")
        lo = c.int(0, 1)
        hi = lo + c.int(0, 3)
        hi_text = str(hi)
        names = [k for k, v in self.int_consts.items() if v == hi]
        if names and c.chance(50):
            hi_text = c.pick(names)
        vecs = [name for name, t in scope.floats if t[0] == "v" and t[1] == hi]
        if vecs and c.chance(40):
            hi_text = f"len({c.pick(vecs)})"
        inner = scope.copy()
        inner.indices.append((var, lo, hi))
        body = self.block(inner, depth - 1, 3)
        self.features.add("for")
        return [f"for {var} in {lo}..{hi_text} {{", *("    " + line for line in body), "}"]

    def while_loop(self, scope: Scope, depth: int) -> list[str]:
        c = self.c
        k = self.fresh("k")
        bound = c.int(1, 4)
        cond = f"{k} < {bound}"
        if c.chance(50):
            cond += f" and {self.condition(scope, 0)}"
        inner = scope.copy()
        inner.counters.append(k)
        body = self.block(inner, depth - 1, 3)
        scope.counters.append(k)  # after the loop the counter is an int local like any other
        self.features.add("while")
        return [f"{k} = 0", f"while {cond} {{", *("    " + line for line in body), f"    {k} += 1", "}"]

    def if_else(self, scope: Scope, depth: int) -> list[str]:
        c = self.c
        out = [f"if {self.condition(scope)} {{", *("    " + x for x in self.block(scope, depth - 1, 2))]
        while c.chance(25):
            out += [f"}} else if {self.condition(scope)} {{", *("    " + x for x in self.block(scope, depth - 1, 2))]
        if c.chance(60):
            out += ["} else {", *("    " + x for x in self.block(scope, depth - 1, 2))]
        self.features.add("if")
        return out + ["}"]

    # ---- the program -------------------------------------------------------------------

    def function(self, scope: Scope) -> None:
        c = self.c
        name = self.fresh("f")
        fscope = Scope(floats=[x for x in scope.floats], fns=list(scope.fns), in_fn=True,
                       smooth_conds=list(scope.smooth_conds))
        if c.chance(30):  # elementwise: called with floats and arrays alike
            arg = self.fresh("a")
            fscope.floats = [x for x in fscope.floats if x[1] == F] + [(arg, F)]
            fscope.elementwise_arg = arg
            inner = self.bounded(fscope, F, 2)  # the argument at the top, so the result has its type
            body = c.pick([f"return {arg} * {self.paren(inner)}", f"return {c.pick(self.SMOOTH1)}({arg} + {inner})",
                           f"return {arg} / (1.0 + {arg} * {arg}) - {self.paren(inner)}"])
            self.lines += [f"fn {name}({arg}) {{", f"    {body}", "}"]
            scope.fns.append(FnSig(name, [None], None))
            self.features.add("elementwise fn")
            return
        args = [(self.fresh("a"), self.pick_type()) for _ in range(c.int(1, 3))]
        fscope.floats += args
        ret = self.pick_type() if c.chance(40) else F
        self.top_depth = 1
        body = []
        for _ in range(c.int(0, 2)):
            body += self.statement(fscope, 1)
        body.append(f"return {self.bounded(fscope, ret, 2) if c.chance(70) else self.expr(fscope, ret, 2)}")
        self.lines += [f"fn {name}({', '.join(a for a, _ in args)}) {{", *("    " + x for x in body), "}"]
        scope.fns.append(FnSig(name, [t for _, t in args], ret))
        self.features.add("fn")

    def program(self) -> tuple[str, list, set]:
        c = self.c
        scope = Scope()
        self.budget = 400
        # consts: floats, and ints that can bound loops and size arrays
        for _ in range(c.int(0, 2)):
            name = self.fresh("c")
            value = lit(c.num())
            if scope.floats and c.chance(30):
                value = f"{c.pick([n for n, t in scope.floats])} * 2.0 + sin({value})"
            self.lines.append(f"const {name} = {value}")
            scope.floats.append((name, F))
            scope.smooth_conds.append(name)
        for _ in range(c.int(0, 2)):
            name = self.fresh("n")
            self.int_consts[name] = c.int(1, 4)
            self.lines.append(f"const {name} = {self.int_consts[name]}")

        def size(n: int) -> str:
            names = [k for k, v in self.int_consts.items() if v == n]
            return c.pick(names) if names and c.chance(50) else str(n)

        data = []
        for _ in range(c.int(0, 3)):
            data.append((self.fresh("d"), ()))
        if c.chance(40):
            data.append((self.fresh("dv"), (c.pick(self.sizes),)))
        if data:
            self.lines.append("data " + ", ".join(n + (f"[{size(s[0])}]" if s else "") for n, s in data))
            self.features.add("data")
        for n, s in data:
            scope.floats.append((n, ("v", *s) if s else F))
            if not s:
                scope.smooth_conds.append(n)
            else:
                scope.smooth_conds.append(f"{n}[{c.int(0, s[0] - 1)}]")
        for _ in range(c.int(1, 3)):
            name = self.fresh("p")
            init = lit(c.num()) if c.chance(80) else c.pick(["~ normal(0, 0.5)", "~ uniform(-0.5, 0.5)"])
            self.lines.append(f"param {name} {'= ' + init if not init.startswith('~') else init}")
            scope.floats.append((name, F))
        for _ in range(c.int(0, 2)):
            t = ("v", c.pick(self.sizes)) if c.chance(70) else ("m", c.pick(self.sizes), c.pick(self.sizes))
            name = self.fresh("pv" if t[0] == "v" else "pm")
            init = c.pick(["= 0.3", "= -0.2", "~ normal(0, 0.5)", "~ uniform(-0.8, 0.8)"])
            self.lines.append(f"param {name}[{', '.join(size(k) for k in t[1:])}] {init}")
            scope.floats.append((name, t))
        for _ in range(c.int(0, 2)):
            self.function(scope)
        self.top_depth = 2
        for _ in range(c.int(1, 6)):
            self.lines += self.statement(scope, 2)
            if c.chance(15):
                name = self.fresh("o")
                self.lines.append(f"output {name} = {self.expr(scope, self.pick_type(), 1)}")
                self.features.add("output")
        final = self.expr(scope, F, 3)
        self.lines.append(c.pick([f"loss ({final})^2", f"loss {final}", f"loss tanh({final})"]))
        return "\n".join(self.lines) + "\n", data, self.features


def generate_program(c: Chooser, smooth: bool | None = None, seed: int = 0) -> GenProgram:
    if smooth is None:
        smooth = c.chance(60)
    source, data, features = ProgramGen(c, smooth).program()
    rows = []
    for _ in range(c.int(1, 3) if data else 1):
        row = {}
        for name, shape in data:
            row[name] = np.array([c.num(-2, 2) for _ in range(shape[0])]) if shape else c.num(-2, 2)
        rows.append(row)
    return GenProgram(source, data, rows, smooth, features, seed)


@st.composite
def well_typed_programs(draw, smooth: bool | None = None) -> GenProgram:
    return generate_program(Chooser(draw=draw), smooth, seed=draw(st.integers(0, 3)))



def _directional(loss, params: dict, u: dict, h: float) -> float:
    """d/dt loss(params + t u) at t = 0: central differences with one Richardson step."""
    def at(t):
        return loss({k: params[k] + t * u[k] for k in params})

    d1 = (at(h) - at(-h)) / (2 * h)
    d2 = (at(h / 2) - at(-h / 2)) / h
    return (4 * d2 - d1) / 3


def _one_sided(loss, params: dict, u: dict, h: float, side: int) -> float:
    """The one-sided derivative along u (second order: two forward steps extrapolated)."""
    def at(t):
        return loss({k: params[k] + t * u[k] for k in params})

    f0 = at(0.0)
    return side * (4 * (at(side * h / 2) - f0) - (at(side * h) - f0)) / h


RTOL = 1e-6


@dataclass
class Setup:
    prog: ir.Program
    adjoint: ir.Program
    rows: list
    params: dict
    direction: dict


def setup(g: GenProgram) -> Setup:
    """Compile a generated program (it must compile cleanly) and choose where to differentiate."""
    try:
        prog = compile_source(g.source, "gen.dl")
    except DlangError as err:
        raise AssertionError(f"a generated program does not compile:\n{err.render()}") from None
    assert prog.has_loss and [d.name for d in prog.data] == [name for name, _ in g.data]
    adjoint = reverse_ad(prog)
    verify(adjoint)
    assert parse_program(print_program(adjoint)) == adjoint
    rng = np.random.default_rng(g.seed)
    params = initial_params(prog, seed=g.seed)
    # away from the round numbers the generator writes, so that no kink sits exactly at the point
    params = {k: v + 0.0137 * rng.standard_normal(np.shape(v)) if np.ndim(v) else v + 0.0137 * rng.standard_normal()
              for k, v in params.items()}
    direction = {k: rng.standard_normal(np.shape(v)) if np.ndim(v) else float(rng.standard_normal())
                 for k, v in params.items()}
    return Setup(prog, adjoint, g.rows if prog.data else [{}], params, direction)


def check_interpreted_gradient(g: GenProgram) -> str:
    """The adjoint program, interpreted, against finite differences of the interpreted loss along a
    random direction. Returns "ok", or "kink" for a non-smooth program whose finite differences show
    a kink or jump within the step (never for a smooth one)."""
    s = setup(g)
    rows = s.rows if s.prog.data else None

    def loss(q):
        return program_loss(s.prog, rows, q)

    value = loss(s.params)
    assert math.isfinite(value), f"the loss is {value}"
    per_row = [grad_row(s.adjoint, r, s.params) for r in s.rows]
    adj_loss = float(np.mean([r[0] for r in per_row]))
    assert adj_loss == pytest.approx(value, rel=1e-12, abs=1e-300), "the adjoint program's loss differs"
    grads = {p.name: np.mean([r[1][p.name] for r in per_row], axis=0) for p in s.prog.params}
    for name, gr in grads.items():
        assert np.shape(gr) == np.shape(s.params[name]) and np.all(np.isfinite(gr)), f"d/d{name} = {gr}"
    terms = [np.asarray(grads[k]) * np.asarray(s.direction[k]) for k in grads]
    along = float(sum(np.sum(t) for t in terms))
    fd = _directional(loss, s.params, s.direction, 1e-4)
    # relative to the sum of the terms' sizes, plus the rounding error of the differences
    scale = max(sum(float(np.sum(np.abs(t))) for t in terms), abs(fd))
    floor = 1e-9 * max(1.0, abs(value))

    def close(a, b, rel=RTOL):
        return abs(a - b) <= rel * scale + floor

    if close(along, fd):
        return "ok"
    fd_small = _directional(loss, s.params, s.direction, 1e-5)
    if close(along, fd_small):  # the larger step crossed a kink: fine only in a non-smooth program
        assert not g.smooth, f"finite differences with steps 1e-4 and 1e-5 differ: {fd!r}, {fd_small!r}"
        return "kink"
    left = _one_sided(loss, s.params, s.direction, 1e-5, -1)
    right = _one_sided(loss, s.params, s.direction, 1e-5, +1)
    if not g.smooth and (not close(left, right, 1e-4) or not close(fd, fd_small, 1e-5)):
        return "kink"
    raise AssertionError(f"adjoint gives {along!r} along the direction, finite differences {fd!r} "
                         f"(step 1e-5: {fd_small!r}; one-sided {left!r}, {right!r}); grads {grads}")


def data_matrix(prog: ir.Program, rows: list) -> np.ndarray:
    if not prog.data:
        return np.zeros((1, 0))
    return np.array([np.concatenate([np.atleast_1d(r[d.name]) for d in prog.data]) for r in rows], dtype=float)


@fuzz_settings(300)
@given(well_typed_programs())
def test_generated_programs_interpreted_gradient_matches_finite_differences(g):
    outcome = check_interpreted_gradient(g)
    event(f"{'smooth' if g.smooth else 'non-smooth'} program: {outcome}")
    for f in sorted(g.features):
        event(f"has {f}")


@fuzz_settings(150)
@given(well_typed_programs())
def test_generated_programs_forward_mode_equals_reverse_mode(g):
    """Forward mode (the tangent program along a random direction, interpreted) against the
    adjoint program's gradient dotted with the direction; forward over reverse (H v) against
    reverse over reverse: two transformations of the IR, each checked by the other."""
    from dlang.reverse import gradient_dot_program

    from forward_helpers import hvp_interpreted, jvp_interpreted

    s = setup(g)
    per_row = [grad_row(s.adjoint, r, s.params) for r in s.rows]
    tangents = jvp_interpreted(s.prog, s.rows, s.params, s.direction)
    n_out = 1 + len(s.prog.outputs)
    for (loss, grads), results in zip(per_row, tangents):
        assert results[0] == loss or (math.isnan(results[0]) and math.isnan(loss))
        terms = [np.asarray(grads[k]) * np.asarray(s.direction[k]) for k in grads]
        along = float(sum(np.sum(t) for t in terms))
        scale = sum(float(np.sum(np.abs(t))) for t in terms)
        got = float(results[n_out])
        assert abs(got - along) <= 1e-12 * scale + 1e-300, f"forward mode {got!r}, reverse mode {along!r}"
    _, grads, hv = hvp_interpreted(s.prog, s.rows, s.params, s.direction)
    objective = gradient_dot_program(s.prog)
    dirs = {f"dir_{k}": v for k, v in s.direction.items()}
    twice = [grad_row(reverse_ad(objective), r, {**s.params, **dirs})[1] for r in s.rows]
    for p in s.prog.params:
        want = np.mean([t[p.name] for t in twice], axis=0)
        scale = max(1e-300, float(np.max(np.abs(want), initial=0.0)), float(np.max(np.abs(hv[p.name]), initial=0.0)))
        err = float(np.max(np.abs(np.asarray(hv[p.name]) - want), initial=0.0))
        assert err <= 1e-9 * scale + 1e-12, f"H v of {p.name}: forward over reverse {hv[p.name]}, reverse over reverse {want}"
        np.testing.assert_allclose(grads[p.name], np.mean([r[1][p.name] for r in per_row], axis=0), rtol=1e-13,
                                   atol=1e-300)


@fuzz_settings(150)
@given(well_typed_programs())
def test_generated_programs_event_programs_verify_and_run(g):
    """train --events auto (the default) derives an event program from any program whose loop
    conditions depend on params: it must verify, print back, differentiate, and run where the
    program runs."""
    from dlang.events import event_program
    from dlang.interp import run_body

    s = setup(g)
    ev = event_program(s.prog)
    if ev is None:
        event("no event to correct")
        return
    event("an event program")
    verify(ev)
    assert parse_program(print_program(ev)) == ev
    verify(reverse_ad(ev))
    for row in s.rows:
        exact = run_body(s.prog, row, s.params)[0]
        moved = run_body(ev, row, s.params)[0]
        assert math.isfinite(moved) or not math.isfinite(exact), (exact, moved)


@fuzz_settings(4, cap=KERNEL_EXAMPLES_CAP)
@given(well_typed_programs(smooth=True))
def test_generated_programs_compiled_kernels_match_interpreter_and_finite_differences(g):
    from dlang.pipeline import compile_kernels
    from test_ad import assert_grads_close, richardson_fd

    s = setup(g)
    kernels = compile_kernels(s.prog)
    data = data_matrix(s.prog, s.rows)
    loss, grads = kernels.grad(data, s.params)
    assert kernels.loss(data, s.params) == pytest.approx(loss, rel=1e-12)
    assert loss == pytest.approx(program_loss(s.prog, s.rows if s.prog.data else None, s.params), rel=1e-11)
    per_row = [grad_row(s.adjoint, r, s.params)[1] for r in s.rows]
    for p in s.prog.params:
        interpreted = np.mean([r[p.name] for r in per_row], axis=0)
        size = max(1.0, float(np.max(np.abs(interpreted))))
        np.testing.assert_allclose(grads[p.name], interpreted, rtol=1e-9, atol=1e-11 * size, err_msg=p.name)
    fd = richardson_fd(lambda q: kernels.loss(data, q), s.params)
    assert_grads_close(grads, fd, rel=RTOL, what="compiled kernels")


@fuzz_settings(6, cap=KERNEL_EXAMPLES_CAP)
@given(well_typed_programs())
def test_generated_programs_parallel_kernels_equal_serial_ones_bit_for_bit(g):
    """The chunked path (the switch lowered to 2 rows) gives the same bits with 1 and 2 threads,
    and the one-call serial path's result up to summation order."""
    import numba

    from dlang.abi import PARALLEL_ENV
    from dlang.pipeline import compile_kernels
    from test_parallel import assert_bitwise, run_both

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU")
    s = setup(g)
    kernels = compile_kernels(s.prog)
    data = data_matrix(s.prog, s.rows)
    if s.prog.data:
        data = np.concatenate([data] * 30)  # rows in every chunk, some chunks with more
    with pytest.MonkeyPatch.context() as mp:
        one, two = run_both(kernels, data, s.params, mp)
        assert_bitwise(one, two, g.source)
        mp.setenv(PARALLEL_ENV, str(10**9))
        loss, grads = kernels.grad(data, s.params)
    assert one[0][0] == pytest.approx(loss, rel=1e-11, abs=1e-12)
    for k in grads:
        scale = max(1.0, float(np.max(np.abs(grads[k]))))
        np.testing.assert_allclose(one[0][1][k], grads[k], rtol=1e-9, atol=1e-11 * scale, err_msg=k)


def relayout(source: str, c: Chooser) -> str:
    """The same program laid out differently: indentation, blank and comment lines, trailing
    comments, `;` between statements, `else` on its own line, newlines inside parentheses and
    CRLF or CR line ends. None of it may change the program's IR (apart from source places)."""
    out: list[str] = []
    for line in source.rstrip("\n").split("\n"):
        if c.chance(20):
            out.append(c.pick(["", "   ", "# a comment", "\t# { ( [ ; \\ ", "#"]))
        if line.startswith("} else") and c.chance(50):
            out += ["}", line[2:]]
            continue
        if "(" in line and c.chance(30):
            k = c.pick([i for i, ch in enumerate(line) if ch == "("])
            line = line[:k + 1] + "\n" + c.pick(["", "    ", "# inside parentheses\n"]) + line[k + 1:]
        can_join = out and out[-1].strip() and "#" not in out[-1] and not out[-1].rstrip().endswith(("{", "}"))
        if can_join and not line.lstrip().startswith(("}", "else")) and c.chance(20):
            out[-1] += c.pick(["; ", ";", " ;; "]) + line.lstrip()
            continue
        out.append(c.pick(["", "  ", "\t"]) + line + c.pick(["", "", " ", "  # trailing ; { comment"]))
    return c.pick(["\n", "\r\n", "\r"]).join(out) + c.pick(["\n", "", "\n\n"])


def _without_places(prog: ir.Program) -> str:
    return re.sub(r"  @\d+:\d+", "", print_program(replace(prog, source_path=None)))


@fuzz_settings(150, cap=LAYOUT_EXAMPLES_CAP)
@given(well_typed_programs(), st.integers(0, 2**32))
def test_layout_does_not_change_a_generated_program(g, seed):
    prog = compile_source(g.source, "gen.dl")
    text = relayout(g.source, Chooser(rng=random.Random(seed)))
    note(text)
    again = compile_source(text, "gen.dl")
    assert _without_places(again) == _without_places(prog)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for stmt in ir.walk(again.body):  # every place the IR keeps (for runtime faults) is in the source
        if stmt.loc is not None:
            line, col = stmt.loc
            assert 1 <= line <= len(lines) and 1 <= col <= len(lines[line - 1]), (stmt.loc, stmt)


@pytest.mark.parametrize("op, wrong", [("cos", "sin"), ("div", "mul"), ("pow", "mul"), ("tanh", "sigmoid")])
def test_the_gradient_check_catches_a_wrong_derivative_rule(monkeypatch, op, wrong):
    """The harness has teeth: with one derivative rule swapped for another's, some of the first
    generated programs fail the check (and none fails with the real rules: the test above)."""
    from dataclasses import replace

    from dlang.prims import REGISTRY

    monkeypatch.setitem(REGISTRY, op, replace(REGISTRY[op], vjp=REGISTRY[wrong].vjp))
    for seed in range(200):
        g = generate_program(Chooser(rng=random.Random(seed)), seed=seed % 4)
        try:
            check_interpreted_gradient(g)
        except AssertionError as err:
            assert str(err).startswith("adjoint gives"), err
            return
    pytest.fail(f"no generated program noticed the wrong derivative of {op}")


def _rich_program() -> GenProgram:
    """The first seeded program with data, a function, a for loop, a while loop and an if."""
    want = {"data", "fn", "call", "for", "while", "if", "vector"}
    for seed in range(10_000):
        g = generate_program(Chooser(rng=random.Random(seed)), smooth=True, seed=seed % 4)
        if want <= g.features and len(g.rows) >= 2:
            return g
    raise AssertionError("no seed below 10,000 gives a program with every feature")


def test_generated_program_passes_dlang_grad_check(run_cli, tmp_path):
    g = _rich_program()
    path = tmp_path / "gen.dl"
    path.write_text(g.source)
    csv = tmp_path / "gen.csv"
    header = []
    for name, shape in g.data:
        header += [f"{name}_{k}" for k in range(shape[0])] if shape else [name]
    csv.write_text(",".join(header) + "\n" + "".join(
        ",".join(repr(float(x)) for name, _ in g.data for x in np.atleast_1d(r[name])) + "\n" for r in g.rows))
    assert check_interpreted_gradient(g) == "ok"
    r = run_cli("grad", path, "--data", csv, "--check")
    assert r.code == 0, r.out + r.err
    assert re.search(r"^gradient check passed", r.out, re.M), r.out


# ---- regressions: bugs the fuzzers found, each as its smallest input ----------------------------


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
