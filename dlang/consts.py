"""Compile-time constants: evaluating const expressions and parsing --const overrides."""
from __future__ import annotations

import math
import re

from . import nodes as n
from .errors import InputError, Span
from .prims import CONST_FUNCTIONS, REGISTRY, math_scalar

# A number as dlang writes it, with an optional sign: nothing else is accepted from --const.
NUMBER_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?)")
INT_RE = re.compile(r"[+-]?[0-9]+")
INT_MAX = 2**63 - 1

_ARITH = ("add", "sub", "mul", "div", "pow")
CONST_MATH = CONST_FUNCTIONS  # the math builtins a const expression may call


def parse_overrides(pairs: list[str] | None) -> dict[str, int | float]:
    """`NAME=VALUE` strings to a dict; the value must be a number and nothing else."""
    out: dict[str, int | float] = {}
    for pair in pairs or []:
        name, eq, text = pair.partition("=")
        name, text = name.strip(), text.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"--const {pair!r}: expected NAME=VALUE, for example --const steps=200")
        if not NUMBER_RE.fullmatch(text):
            raise InputError(f"--const {name}={text!r}: the value must be a number, such as 3, 0.5 or 1e-3")
        if INT_RE.fullmatch(text):
            value: int | float = int(text)
            if abs(value) > INT_MAX:
                raise InputError(f"--const {name}={text}: the integer is too large")
        else:
            value = float(text)
            if not math.isfinite(value):
                raise InputError(f"--const {name}={text}: the value is too large")
        out[name] = value
    return out


class ConstEvaluator:
    """Evaluates const declarations (in any order, cycles refused) and other const expressions."""

    def __init__(self, decls: dict[str, n.ConstDecl], overrides: dict[str, int | float],
                 report, path: str | None):
        self.decls = decls
        self.overrides = overrides
        self.report = report  # report(message, span, note=None)
        self.path = path
        self.values: dict[str, int | float | None] = {}
        self._active: list[str] = []
        self.lengths: dict[str, int] = {}  # len(NAME) of the data and params declared so far

    def value_of(self, name: str, span: Span) -> int | float | None:
        if name in self.values:
            return self.values[name]
        if name in self._active:
            cycle = " -> ".join(self._active[self._active.index(name):] + [name])
            self.report(f"const {name} depends on itself ({cycle})", self.decls[name].span)
            self.values[name] = None
            return None
        decl = self.decls[name]
        self._active.append(name)
        value = self.eval(decl.value, what=f"the value of const {name}")
        self._active.pop()
        if name in self.overrides and value is not None:
            value = self._override(name, value, decl)
        self.values[name] = value
        return value

    def _override(self, name, declared, decl):
        new = self.overrides[name]
        if isinstance(declared, int) and not isinstance(new, int):
            self.report(f"--const {name}={new}: {name} is an int const, so the value must be an int", decl.span)
            return None
        return float(new) if isinstance(declared, float) else new

    def eval(self, e: n.Expr, what: str) -> int | float | None:
        """The value of a const expression, or None after reporting why it is not one."""
        value = self._eval(e, what)
        if isinstance(value, float) and not math.isfinite(value):
            self.report(f"{what} is not a finite number", e.span)
            return None
        if isinstance(value, int) and abs(value) > INT_MAX:
            self.report(f"{what} is too large for an int", e.span)
            return None
        return value

    def size(self, e: n.Expr, what: str) -> int | None:
        """A compile-time array size: a positive int."""
        value = self.eval(e, what)
        if value is None:
            return None
        if not isinstance(value, int):
            self.report(f"{what} must be an int, not a float", e.span)
            return None
        if value < 1:
            self.report(f"{what} must be at least 1, not {value}", e.span)
            return None
        return value

    def _eval_chain(self, e: n.Binary, what):
        """`e` and the left-deep chain under it (1 + 2 - 3 ...), folded in a loop, not one call per term."""
        chain = [e]
        while isinstance(chain[-1].left, n.Binary) and chain[-1].left.op in _ARITH:
            chain.append(chain[-1].left)
        a = self._eval(chain[-1].left, what)
        for node in reversed(chain):
            b = self._eval(node.right, what)
            a = None if a is None or b is None else self._arith(node, a, b)
        return a

    def _arith(self, e: n.Binary, a, b):
        if isinstance(a, int) and isinstance(b, int) and e.op in ("add", "sub", "mul"):
            value = {"add": a + b, "sub": a - b, "mul": a * b}[e.op]
            if abs(value) > INT_MAX:  # checked here, so no int is ever too large for a float
                self.report(f"this int arithmetic overflows: the result {value} is too large for an int", e.span)
                return None
            return value
        return math_scalar(e.op, [a, b])

    def _eval(self, e, what):
        if isinstance(e, n.Num):
            return e.value
        if isinstance(e, n.Name):
            if e.id in self.decls:
                return self.value_of(e.id, e.span)
            self.report(f"{what} must be known at compile time, but '{e.id}' is not a const", e.span)
            return None
        if isinstance(e, n.Unary) and e.op == "neg":
            v = self._eval(e.operand, what)
            return None if v is None else -v
        if isinstance(e, n.Binary) and e.op in _ARITH:
            return self._eval_chain(e, what)
        if (isinstance(e, n.Call) and e.func == "len" and len(e.args) == 1 and isinstance(e.args[0], n.Name)
                and e.args[0].id in self.lengths):
            return self.lengths[e.args[0].id]
        if isinstance(e, n.Call) and e.func == "int" and len(e.args) == 1:  # const weeks = int(days / 7)
            v = self._eval(e.args[0], what)
            if v is None:
                return None
            if not abs(v) < INT_MAX:
                self.report(f"int({v!r}): the value is not finite or too large for an int", e.span)
                return None
            return int(v)
        if isinstance(e, n.Call) and e.func in CONST_MATH:
            args = [self._eval(a, what) for a in e.args]
            if any(a is None for a in args):
                return None
            want = REGISTRY[e.func].arity
            if len(args) != want:
                self.report(f"{e.func} takes {want} argument{'s' * (want != 1)}, but {len(args)} were given", e.span)
                return None
            return math_scalar(e.func, args)
        self.report(
            f"{what} must be known at compile time: use numbers, consts, arithmetic, math functions and "
            "len of a data or param array",
            e.span,
        )
        return None

