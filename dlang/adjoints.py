"""Derivative rules: the adjoint of every primitive, one entry per op, apart from the traversal.

A rule gets the reverse-mode builder `b`, the primal equation and `ct`, the adjoint of its
output (d loss / d out). It returns one thunk per input; the traversal calls a thunk only
for an input that is active, so a rule computes nothing it does not need. A thunk returns
the input's contribution: an atom to add to the input's adjoint (summed down to a scalar
by the traversal when the input was broadcast), or `AddAt(value, idx)` for a contribution to
one element or row. Primal values are fetched with `b.p(atom)`, which is how the traversal
learns what the reverse sweep reads (and so what must be taped inside loops).
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import F64, Atom, Eqn, Lit


@dataclass(frozen=True)
class AddAt:
    """A contribution to the elements at `idx` of an array input."""

    value: Atom
    idx: tuple[Atom, ...]


NONDIFFERENTIABLE = {"sign", "floor", "ceil", "round", "lt", "le", "gt", "ge", "eq", "ne", "not",
                     "to_float", "mask_ge", "mask_gt", "zeros", "push", "pop"}

ONE = Lit(1.0, F64)
TWO = Lit(2.0, F64)
ZERO = Lit(0.0, F64)


def _unary(derivative):
    """A rule for y = f(x) whose d/dx is derivative(b, x, y) (x, y fetched lazily)."""

    def rule(b, e: Eqn, ct):
        (x,), y = e.ins, e.outs[0]
        return [lambda: b.mul(ct, derivative(b, x, y))]

    return rule


def _add(b, e, ct):
    return [lambda: ct, lambda: ct]


def _sub(b, e, ct):
    return [lambda: ct, lambda: b.op("neg", ct)]


def _mul(b, e, ct):
    x, y = e.ins
    return [lambda: b.mul(ct, b.p(y)), lambda: b.mul(ct, b.p(x))]


def _div(b, e, ct):
    x, y = e.ins
    out = e.outs[0]
    # d/dy (x / y) = -x / y^2 = -out / y
    return [lambda: b.op("div", ct, b.p(y)),
            lambda: b.op("neg", b.op("div", b.mul(ct, b.p(out)), b.p(y)))]


def _pow(b, e, ct):
    x, y = e.ins
    out = e.outs[0]
    # d/dx x^y = y x^(y-1); d/dy x^y = x^y log(x)
    return [lambda: b.mul(ct, b.mul(b.p(y), b.op("pow", b.p(x), b.op("sub", b.p(y), ONE)))),
            lambda: b.mul(ct, b.mul(b.p(out), b.op("log", b.p(x))))]


def _atan2(b, e, ct):
    y, x = e.ins

    def denom():
        return b.op("add", b.mul(b.p(x), b.p(x)), b.mul(b.p(y), b.p(y)))

    return [lambda: b.op("div", b.mul(ct, b.p(x)), denom()),
            lambda: b.op("neg", b.op("div", b.mul(ct, b.p(y)), denom()))]


def _choose(first_taken):
    """min/max: the derivative goes to the operand the forward pass returned."""

    def rule(b, e, ct):
        def mask():
            return first_taken(b, b.p(e.ins[0]), b.p(e.ins[1]))

        return [lambda: b.mul(ct, mask()), lambda: b.mul(ct, b.op("sub", ONE, mask()))]

    return rule


def _clamp(b, e, ct):
    x, lo, hi = e.ins
    # clamp = min(max(x, lo), hi): x passes if x >= lo and max(x, lo) <= hi

    def above_lo():
        return b.op("mask_ge", b.p(x), b.p(lo))

    def below_hi():
        return b.op("mask_ge", b.p(hi), b.op("max", b.p(x), b.p(lo)))

    return [lambda: b.mul(ct, b.mul(above_lo(), below_hi())),
            lambda: b.mul(ct, b.mul(b.op("sub", ONE, above_lo()), below_hi())),
            lambda: b.mul(ct, b.op("sub", ONE, below_hi()))]


def _matmul(b, e, ct):
    x, y = e.ins
    xs, ys = x.type.shape, y.type.shape
    if len(xs) == 2 and len(ys) == 1:  # A @ v
        return [lambda: b.op("outer", ct, b.p(y)), lambda: b.op("matmul", ct, b.p(x))]
    if len(xs) == 2 and len(ys) == 2:  # A @ B
        return [lambda: b.op("matmul", ct, b.op("transpose", b.p(y))),
                lambda: b.op("matmul", b.op("transpose", b.p(x)), ct)]
    if len(xs) == 1 and len(ys) == 2:  # v @ B
        return [lambda: b.op("matmul", b.p(y), ct), lambda: b.op("outer", b.p(x), ct)]
    return [lambda: b.mul(ct, b.p(y)), lambda: b.mul(ct, b.p(x))]  # v @ w


def _sum(b, e, ct):
    shape = e.ins[0].type.shape
    return [lambda: b.op("broadcast", ct, shape=shape)]


def _mean(b, e, ct):
    shape = e.ins[0].type.shape
    size = 1
    for n in shape:
        size *= n
    return [lambda: b.op("broadcast", b.op("div", ct, Lit(float(size), F64)), shape=shape)]


def _dot(b, e, ct):
    x, y = e.ins
    return [lambda: b.mul(ct, b.p(y)), lambda: b.mul(ct, b.p(x))]


def _index(b, e, ct):
    idx = tuple(b.p(i) for i in e.ins[1:])
    return [lambda: AddAt(ct, idx)] + [None] * len(idx)


def _setindex(b, e, ct):
    arr, value, *idx = e.ins

    def cleared():
        row = value.type
        zero = ZERO if not row.shape else b.op("zeros", shape=row.shape)
        return b.op("setindex", ct, zero, *(b.p(i) for i in idx))

    return [cleared, lambda: b.op("index", ct, *(b.p(i) for i in idx))] + [None] * len(idx)


def _transpose(b, e, ct):
    return [lambda: b.op("transpose", ct)]


def _outer(b, e, ct):
    x, y = e.ins
    return [lambda: b.op("matmul", ct, b.p(y)), lambda: b.op("matmul", b.p(x), ct)]


def _broadcast(b, e, ct):
    return [lambda: b.op("sum", ct)]


def _addindex(b, e, ct):
    arr, value, *idx = e.ins
    return [lambda: ct, lambda: b.op("index", ct, *(b.p(i) for i in idx))] + [None] * len(idx)


def _one_minus_square(b, y):
    return b.op("sub", ONE, b.mul(b.p(y), b.p(y)))


RULES = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "div": _div,
    "pow": _pow,
    "atan2": _atan2,
    "min": _choose(lambda b, x, y: b.op("mask_ge", y, x)),  # min returned x where x <= y
    "max": _choose(lambda b, x, y: b.op("mask_ge", x, y)),  # max returned x where x >= y
    "clamp": _clamp,
    "neg": lambda b, e, ct: [lambda: b.op("neg", ct)],
    "sin": _unary(lambda b, x, y: b.op("cos", b.p(x))),
    "cos": _unary(lambda b, x, y: b.op("neg", b.op("sin", b.p(x)))),
    "tan": _unary(lambda b, x, y: b.op("add", ONE, b.mul(b.p(y), b.p(y)))),
    "asin": _unary(lambda b, x, y: b.op("div", ONE, b.op("sqrt", _one_minus_square(b, x)))),
    "acos": _unary(lambda b, x, y: b.op("neg", b.op("div", ONE, b.op("sqrt", _one_minus_square(b, x))))),
    "atan": _unary(lambda b, x, y: b.op("div", ONE, b.op("add", ONE, b.mul(b.p(x), b.p(x))))),
    "exp": _unary(lambda b, x, y: b.p(y)),
    "log": _unary(lambda b, x, y: b.op("div", ONE, b.p(x))),
    "log1p": _unary(lambda b, x, y: b.op("div", ONE, b.op("add", ONE, b.p(x)))),
    "sqrt": _unary(lambda b, x, y: b.op("div", ONE, b.mul(TWO, b.p(y)))),
    "tanh": _unary(lambda b, x, y: _one_minus_square(b, y)),
    "sinh": _unary(lambda b, x, y: b.op("cosh", b.p(x))),
    "cosh": _unary(lambda b, x, y: b.op("sinh", b.p(x))),
    "sigmoid": _unary(lambda b, x, y: b.mul(b.p(y), b.op("sub", ONE, b.p(y)))),
    "relu": _unary(lambda b, x, y: b.op("mask_gt", b.p(x), ZERO)),
    "softplus": _unary(lambda b, x, y: b.op("sigmoid", b.p(x))),
    # abs took x where x >= 0, else -x
    "abs": _unary(lambda b, x, y: b.op("sub", b.mul(TWO, b.op("mask_ge", b.p(x), ZERO)), ONE)),
    "matmul": _matmul,
    "sum": _sum,
    "mean": _mean,
    "dot": _dot,
    "index": _index,
    "setindex": _setindex,
    "addindex": _addindex,
    "transpose": _transpose,
    "outer": _outer,
    "broadcast": _broadcast,
}


class MissingRule(Exception):
    def __init__(self, op: str):
        super().__init__(f"no derivative rule for the primitive '{op}'")
