"""The primitives of the IR, one record per op: how a program spells it, its type rule, its
meaning on NumPy values, its kernel template and its derivative rules.

Every other table in dlang is derived from REGISTRY: the checker's builtins and their arities,
the functions a const may call, how an op is named in messages, the kernel templates, the
reverse-mode rules and which ops have no derivative. Adding a builtin is one record here (and
a line in docs/language.md); tests/test_registry.py walks every record.

A reverse (VJP) rule gets the reverse-mode builder `b`, the primal equation `e` and `ct`, the
adjoint of its output (d loss / d out). It returns one thunk per input (None for an input
that has no derivative); the traversal calls a thunk only for an active input, so a rule
computes nothing it does not need. A thunk returns the input's contribution: an atom to add to
its adjoint, or `AddAt(value, idx)` for a contribution to one element or row. Primal values are
fetched with `b.p(atom)`, which is how the traversal learns what the reverse sweep reads.
Rules build new equations with `b.op(name, *ins, **params)` and `b.mul(x, y)`.

A forward (JVP) rule gets the forward-mode builder `b`, the primal equation `e` and the
tangents of its inputs in one direction (None for a zero tangent; the transformation calls the
rule once per direction, and only when some input's tangent is not zero). It returns the
output's tangent, or None when it is zero. The builder has the same `b.p`, `b.op` and `b.mul`
(in forward mode every primal value is at hand, so `b.p` gives the atom itself; equal
equations built for different directions are made once). The Jacobian of an elementwise op
is diagonal, so its JVP is the sum over inputs of its VJP with the input's tangent as the
cotangent (`_jvp_elementwise`): one derivative formula per op serves both modes. Linear and
bilinear array ops have their own JVP rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .ir import BOOL, F64, I64, Atom, Lit, Type, size


INT_CONVERT_LIMIT = 9.2e18  # int(x) needs |x| below this (an int is 64 bits)


class IntOutOfRange(Exception):
    """int(x) of a value that is not finite or does not fit an int."""

    def __init__(self, value: float):
        super().__init__(f"int() of {value!r}")
        self.value = value


def _to_int(x: float) -> int:
    if not abs(x) < INT_CONVERT_LIMIT:
        raise IntOutOfRange(float(x))
    return int(x)


class TypeRuleError(Exception):
    """An op applied to operands it does not accept; the message is a plain sentence."""


class MissingRule(Exception):
    """A transformation met a primitive that has no rule for it: a bug in dlang."""

    def __init__(self, op: str, kind: str = "derivative"):
        super().__init__(f"no {kind} rule for the primitive '{op}'")


@dataclass(frozen=True)
class AddAt:
    """A contribution to the elements at `idx` of an array input."""

    value: Atom
    idx: tuple[Atom, ...]


@dataclass(frozen=True)
class Primitive:
    name: str                          # the op's name in the IR
    arity: int                         # inputs in the IR
    type_rule: Callable                # (input types, params) -> output type, or TypeRuleError
    evaluate: Callable | None          # (params, *values) -> value, on floats, ints and NumPy arrays
    vjp: Callable | None = None        # the reverse rule (see above); None with differentiable=False
    jvp: Callable | None = None        # the forward rule
    differentiable: bool = True        # False: the output's derivative is zero (comparisons, floor, ...)
    scalar: str | None = None          # kernel template on scalars, {0} {1} {2} the inputs
    elementwise: bool = False          # on arrays: the scalar template applied element by element
    render: Callable | None = None     # kernel lines for other array ops (see _lines_* below)
    helper: str | None = None          # the runtime helper (dlang/runtime.py) the template calls
    builtin: str | None = None         # how a program calls it: sin(x)
    operator: str | None = None        # how a program writes it as an operator: +
    source_arity: tuple[int, ...] = ()  # arguments a program passes, when not `arity`
    const: bool = False                # a const expression may call it
    checks_index: int | None = None    # the inputs from this one on are indices checked at run time
    guard: str | None = None           # a condition on the inputs ({0} ...) under which the op faults
    structural: bool = False           # tape and sweep markers: handled by the transformations
    expand: Callable | None = None     # a composite builtin: expand(b, *args) builds it from other ops
    doc: str = ""

    def checked_at_run_time(self, ins) -> bool:
        """Whether an equation of this op with these inputs can fault in a kernel (an index
        checked at run time, or a guard on a value): it stays in its row, where a fault is named."""
        if self.checks_index is not None and not all(isinstance(i, Lit) for i in ins[self.checks_index:]):
            return True
        return self.guard is not None and not all(isinstance(i, Lit) for i in ins)

    @property
    def spelling(self) -> str:
        """How a message names the op."""
        return self.operator or self.builtin or self.name

    @property
    def call_arity(self) -> tuple[int, ...]:
        return self.source_arity or (self.arity,)


def _np():
    import numpy  # imported lazily: `dlang check` should not pay for NumPy

    return numpy


# ---- type rules ------------------------------------------------------------------------------

def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _elementwise_type(name: str, ints: bool = False):
    """Float operands of one shape, or arrays with scalars; with ints, all-int gives int."""

    def rule(ins: list[Type], params: dict) -> Type:
        if ints and all(t == I64 for t in ins):
            return I64
        shape: tuple[int, ...] = ()
        for t in ins:
            if t.kind != "f64":
                raise TypeRuleError(f"{name} needs float operands, not {t}")
            if t.shape:
                if shape and t.shape != shape:
                    raise TypeRuleError(f"{name} of arrays of different shapes {_shape_text(shape)} "
                                        f"and {_shape_text(t.shape)}")
                shape = t.shape
        return Type("f64", shape)

    return rule


def _compare_type(name: str):
    def rule(ins, params):
        a, b = ins
        if a.shape or b.shape or a != b or a == BOOL:
            raise TypeRuleError(f"{name} needs two numbers of one type, not {a} and {b}")
        return BOOL

    return rule


def _exactly(want: list[Type], out: Type, name: str):
    def rule(ins, params):
        if ins != want:
            raise TypeRuleError(f"{name} takes ({', '.join(map(str, want))}), not ({', '.join(map(str, ins))})")
        return out

    return rule


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a @ b (matrix or vector operands), or TypeRuleError."""
    if not a or not b:
        raise TypeRuleError("@ needs two arrays; use * to multiply by a scalar")
    if a[-1] != b[0]:
        raise TypeRuleError(f"@ of shapes {_shape_text(a)} and {_shape_text(b)}: "
                            f"the inner sizes {a[-1]} and {b[0]} differ")
    return a[:-1] + b[1:]


def _matmul_type(ins, params):
    if not all(t.kind == "f64" for t in ins):
        raise TypeRuleError("@ needs float operands")
    return Type("f64", matmul_shape(ins[0].shape, ins[1].shape))


def _reduce_type(name: str):
    def rule(ins, params):
        (t,) = ins
        if t.kind != "f64" or not t.shape:
            raise TypeRuleError(f"{name} needs an array, not {t}")
        return F64

    return rule


def _dot_type(ins, params):
    a, b = ins
    if not (a.kind == b.kind == "f64" and len(a.shape) == len(b.shape) == 1):
        raise TypeRuleError(f"dot needs two vectors, not {a} and {b}")
    if a.shape != b.shape:
        raise TypeRuleError(f"dot of vectors of different lengths {a.shape[0]} and {b.shape[0]}")
    return F64


def _index_type(ins, params):
    arr, idx = ins[0], ins[1:]
    if arr.kind != "f64" or not idx or len(idx) > len(arr.shape) or any(t != I64 for t in idx):
        raise TypeRuleError(f"cannot index {arr} with {len(idx)} int indices")
    return Type("f64", arr.shape[len(idx):])


def _store_type(ins, params):
    arr, value, idx = ins[0], ins[1], ins[2:]
    if arr.kind != "f64" or not idx or len(idx) > len(arr.shape) or any(t != I64 for t in idx):
        raise TypeRuleError(f"cannot index {arr} with {len(idx)} int indices")
    if value != Type("f64", arr.shape[len(idx):]):
        raise TypeRuleError(f"cannot store {value} into an element of {arr}")
    return arr


def _transpose_type(ins, params):
    (t,) = ins
    if t.kind != "f64" or len(t.shape) != 2:
        raise TypeRuleError(f"transpose needs a matrix, not {t}")
    return Type("f64", t.shape[::-1])


def _outer_type(ins, params):
    a, b = ins
    if not (a.kind == b.kind == "f64" and len(a.shape) == len(b.shape) == 1):
        raise TypeRuleError(f"outer needs two vectors, not {a} and {b}")
    return Type("f64", a.shape + b.shape)


def _shaped(name: str, takes: list[Type]):
    """zeros and broadcast: an array of params['shape']."""

    def rule(ins, params):
        if ins != takes:
            raise TypeRuleError(f"{name} takes ({', '.join(map(str, takes))}), not ({', '.join(map(str, ins))})")
        shape = tuple(params.get("shape", ()))
        if not shape or not all(isinstance(n, int) and n >= 1 for n in shape):
            raise TypeRuleError(f"{name} needs a shape of positive sizes, not {shape}")
        return Type("f64", shape)

    return rule


def _pack_type(ins, params):
    shape = tuple(params.get("shape", ()))
    if not shape or any(t != F64 for t in ins) or len(ins) != size(Type("f64", shape)):
        raise TypeRuleError(f"pack of shape {shape} takes {size(Type('f64', shape)) if shape else '?'} floats, "
                            f"not ({', '.join(map(str, ins))})")
    return Type("f64", shape)


def _no_result(name: str):
    def rule(ins, params):
        raise TypeRuleError(f"{name} has no result")

    return rule


def _pop_type(ins, params):
    raise TypeRuleError("pop's type is that of the value its push stored")


# ---- evaluation helpers ------------------------------------------------------------------------

def _ufunc(name: str):
    """A NumPy function by name, looked up when first called (NumPy is imported lazily)."""
    return lambda params, *args: getattr(_np(), name)(*args)


def _sigmoid(params, x):
    np = _np()
    return np.exp(-np.logaddexp(0.0, -x))


def _erf(params, x):
    np = _np()
    if isinstance(x, np.ndarray):
        return np.vectorize(math.erf, otypes=[float])(x)
    return math.erf(float(x))


def _lt_weight(params, a, b):
    np = _np()
    return np.where(np.less(a, b), 1.0, np.where(np.equal(a, b), 0.5, 0.0))


def _div_or_zero(params, a, b):
    np = _np()
    b = np.asarray(b, dtype=float)
    safe = np.where(b != 0.0, b, 1.0)
    return np.where(b != 0.0, np.divide(a, safe), 0.0)


def _check_index(idx: tuple[int, ...], shape: tuple[int, ...]) -> None:
    for i, n in zip(idx, shape):
        if not 0 <= i < n:
            raise IndexOutOfRange(idx, shape)


@dataclass
class IndexOutOfRange(Exception):
    index: tuple[int, ...]
    shape: tuple[int, ...]


def _index(params, arr, *idx):
    _check_index(idx, arr.shape)
    value = arr[tuple(idx)]
    return value.copy() if hasattr(value, "copy") and getattr(value, "ndim", 0) else float(value)


def _store(add: bool):
    def evaluate(params, arr, value, *idx):
        _check_index(idx, arr.shape)
        new = arr.copy()
        if add:
            new[tuple(idx)] += value
        else:
            new[tuple(idx)] = value
        return new

    return evaluate


# ---- kernel lines for array ops that are not elementwise -----------------------------------------
#
# render(dest, args, in_types, out_type) -> lines of Python, indented relative to the statement.
# `dest` is the name of the array the result is written into (allocated by the code generator),
# or of the scalar result; `args` are the inputs' names.

def _flat(t: Type) -> str:
    """Element dl_i of an array of type t: [dl_i] on a vector, .flat[dl_i] on a matrix."""
    return "[dl_i]" if len(t.shape) == 1 else ".flat[dl_i]"


def _lines_fill(dest, args, ins, out):
    value = args[0] if args else "0.0"
    return [f"for dl_i in range({size(out)}):", f"    {dest}{_flat(out)} = {value}"]


def _lines_reduce(mean: bool):
    def render(dest, args, ins, out):
        (t,) = ins
        lines = [f"{dest} = 0.0", f"for dl_i in range({size(t)}):", f"    {dest} += {args[0]}{_flat(t)}"]
        if mean:
            lines.append(f"{dest} /= {float(size(t))!r}")
        return lines

    return render


def _lines_dot(dest, args, ins, out):
    a, b = args
    return [f"{dest} = 0.0", f"for dl_i in range({ins[0].shape[0]}):", f"    {dest} += {a}[dl_i] * {b}[dl_i]"]


def _lines_matmul(dest, args, ins, out):
    a, b = args
    sa, sb = ins[0].shape, ins[1].shape
    if len(sa) == len(sb) == 1:
        return _lines_dot(dest, args, ins, out)
    if len(sa) == 2 and len(sb) == 1:  # matrix @ vector
        loops, (n, m), term, put = 1, sa, f"{a}[dl_i, dl_k] * {b}[dl_k]", f"{dest}[dl_i]"
    elif len(sa) == 1:  # vector @ matrix
        loops, (m, n), term, put = 1, sb, f"{a}[dl_k] * {b}[dl_k, dl_i]", f"{dest}[dl_i]"
    else:  # matrix @ matrix
        loops, (n, m), term, put = 2, sa, f"{a}[dl_i, dl_k] * {b}[dl_k, dl_j]", f"{dest}[dl_i, dl_j]"
    lines = [f"for dl_i in range({n}):"]
    pad = "    "
    if loops == 2:
        lines.append(f"    for dl_j in range({sb[1]}):")
        pad = "        "
    return lines + [f"{pad}dl_s = 0.0", f"{pad}for dl_k in range({m}):", f"{pad}    dl_s += {term}",
                    f"{pad}{put} = dl_s"]


def _lines_outer(dest, args, ins, out):
    a, b = args
    return [f"for dl_i in range({ins[0].shape[0]}):", f"    for dl_j in range({ins[1].shape[0]}):",
            f"        {dest}[dl_i, dl_j] = {a}[dl_i] * {b}[dl_j]"]


def _lines_transpose(dest, args, ins, out):
    n, m = ins[0].shape
    return [f"for dl_i in range({n}):", f"    for dl_j in range({m}):",
            f"        {dest}[dl_j, dl_i] = {args[0]}[dl_i, dl_j]"]


def _lines_pack(dest, args, ins, out):
    return [f"{dest}{'[' + str(k) + ']' if len(out.shape) == 1 else '.flat[' + str(k) + ']'} = {a}"
            for k, a in enumerate(args)]


def _lines_index(dest, args, ins, out):
    arr, *idx = args
    if not out.shape:
        return [f"{dest} = {arr}[{', '.join(idx)}]"]
    # a row of a matrix (the only partial index: arrays have at most two dimensions)
    return [f"for dl_i in range({out.shape[0]}):", f"    {dest}[dl_i] = {arr}[{idx[0]}, dl_i]"]


def _lines_store(add: bool):
    def render(dest, args, ins, out):
        arr, value, *idx = args
        op = "+=" if add else "="
        lines = [f"for dl_i in range({size(out)}):", f"    {dest}{_flat(out)} = {arr}{_flat(out)}"]
        if not ins[1].shape:
            return lines + [f"{dest}[{', '.join(idx)}] {op} {value}"]
        return lines + [f"for dl_i in range({ins[1].shape[0]}):", f"    {dest}[{idx[0]}, dl_i] {op} {value}[dl_i]"]

    return render


# ---- reverse (VJP) rules -------------------------------------------------------------------------

ONE = Lit(1.0, F64)
TWO = Lit(2.0, F64)
ZERO = Lit(0.0, F64)


def _unary(derivative):
    """A rule for y = f(x) whose dy/dx is derivative(b, x, y), x and y fetched lazily."""

    def rule(b, e, ct):
        (x,), y = e.ins, e.outs[0]
        return [lambda: b.mul(ct, derivative(b, x, y))]

    return rule


def _vjp_add(b, e, ct):
    return [lambda: ct, lambda: ct]


def _vjp_sub(b, e, ct):
    return [lambda: ct, lambda: b.op("neg", ct)]


def _vjp_mul(b, e, ct):
    x, y = e.ins
    return [lambda: b.mul(ct, b.p(y)), lambda: b.mul(ct, b.p(x))]


def _vjp_div(b, e, ct):
    x, y = e.ins
    out = e.outs[0]
    # d/dy (x / y) = -x / y^2 = -out / y
    return [lambda: b.op("div", ct, b.p(y)),
            lambda: b.op("neg", b.op("div", b.mul(ct, b.p(out)), b.p(y)))]


def _vjp_pow(b, e, ct):
    x, y = e.ins
    out = e.outs[0]
    # d/dx x^y = y x^(y-1); d/dy x^y = x^y log(x)
    return [lambda: b.mul(ct, b.mul(b.p(y), b.op("pow", b.p(x), b.op("sub", b.p(y), ONE)))),
            lambda: b.mul(ct, b.mul(b.p(out), b.op("log", b.p(x))))]


def _vjp_div_or_zero(b, e, ct):
    x, y = e.ins
    out = e.outs[0]
    # as div where y != 0; zero where y == 0 (the output is the constant 0 there)
    return [lambda: b.op("div_or_zero", ct, b.p(y)),
            lambda: b.op("neg", b.op("div_or_zero", b.mul(ct, b.p(out)), b.p(y)))]


def _vjp_atan2(b, e, ct):
    y, x = e.ins

    def denom():
        return b.op("add", b.mul(b.p(x), b.p(x)), b.mul(b.p(y), b.p(y)))

    return [lambda: b.op("div", b.mul(ct, b.p(x)), denom()),
            lambda: b.op("neg", b.op("div", b.mul(ct, b.p(y)), denom()))]


def _vjp_hypot(b, e, ct):
    x, y = e.ins
    h = e.outs[0]
    # d/dx hypot(x, y) = x / hypot(x, y); 0 at the origin, as abs'(0) = 0
    return [lambda: b.mul(ct, b.op("div_or_zero", b.p(x), b.p(h))),
            lambda: b.mul(ct, b.op("div_or_zero", b.p(y), b.p(h)))]


def _vjp_choose(first_weight):
    """min and max: the derivative goes to the operand the forward pass returned, split evenly
    at a tie. first_weight(b, x, y) is the first operand's share: 1, 0.5 or 0."""

    def rule(b, e, ct):
        def weight():
            return first_weight(b, b.p(e.ins[0]), b.p(e.ins[1]))

        return [lambda: b.mul(ct, weight()), lambda: b.mul(ct, b.op("sub", ONE, weight()))]

    return rule


def _vjp_clamp(b, e, ct):
    x, lo, hi = e.ins
    # clamp(x, lo, hi) = min(max(x, lo), hi): the rules of max, then of min, ties split evenly

    def x_share():  # of max(x, lo)
        return b.op("lt_weight", b.p(lo), b.p(x))

    def m_share():  # of min(m, hi), m = max(x, lo)
        return b.op("lt_weight", b.op("max", b.p(x), b.p(lo)), b.p(hi))

    return [lambda: b.mul(ct, b.mul(m_share(), x_share())),
            lambda: b.mul(ct, b.mul(m_share(), b.op("sub", ONE, x_share()))),
            lambda: b.mul(ct, b.op("sub", ONE, m_share()))]


def _vjp_matmul(b, e, ct):
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


def _vjp_sum(b, e, ct):
    return [lambda: b.op("broadcast", ct, shape=e.ins[0].type.shape)]


def _vjp_mean(b, e, ct):
    t = e.ins[0].type
    return [lambda: b.op("broadcast", b.op("div", ct, Lit(float(size(t)), F64)), shape=t.shape)]


def _vjp_index(b, e, ct):
    idx = tuple(b.p(i) for i in e.ins[1:])
    return [lambda: AddAt(ct, idx)] + [None] * len(idx)


def _vjp_setindex(b, e, ct):
    arr, value, *idx = e.ins

    def cleared():
        zero = ZERO if not value.type.shape else b.op("zeros", shape=value.type.shape)
        return b.op("setindex", ct, zero, *(b.p(i) for i in idx))

    return [cleared, lambda: b.op("index", ct, *(b.p(i) for i in idx))] + [None] * len(idx)


def _vjp_addindex(b, e, ct):
    arr, value, *idx = e.ins
    return [lambda: ct, lambda: b.op("index", ct, *(b.p(i) for i in idx))] + [None] * len(idx)


def _vjp_pack(b, e, ct):
    shape = e.outs[0].type.shape
    cells = [divmod(k, shape[1]) if len(shape) == 2 else (k,) for k in range(len(e.ins))]
    return [(lambda idx=idx: b.op("index", ct, *(Lit(i, I64) for i in idx))) for idx in cells]


def _vjp_outer(b, e, ct):
    x, y = e.ins
    return [lambda: b.op("matmul", ct, b.p(y)), lambda: b.op("matmul", b.p(x), ct)]


# ---- forward (JVP) rules ---------------------------------------------------------------------------

def _add_tangents(b, parts: list, out_type: Type):
    """The sum of an output's tangent contributions (None: zero), broadcast to its shape."""
    parts = [t for t in parts if t is not None]
    if not parts:
        return None
    total = parts[0]
    for t in parts[1:]:
        total = b.op("add", total, t)
    if out_type.shape and not total.type.shape:
        total = b.op("broadcast", total, shape=out_type.shape)
    return total


def _jvp_elementwise(b, e, tangents):
    prim = REGISTRY[e.op]
    parts = []
    for k, t in enumerate(tangents):
        if t is not None:
            parts.append(prim.vjp(b, e, t)[k]())
    return _add_tangents(b, parts, e.outs[0].type)


def _jvp_linear(b, e, tangents):
    """An op linear in its one float input: the op applied to the tangent."""
    (t, *rest) = tangents
    params = dict(e.params)
    return b.op(e.op, t, *e.ins[1:], **params)


def _jvp_bilinear(b, e, tangents):
    """matmul, dot, outer: d(x op y) = dx op y + x op dy."""
    x, y = e.ins
    dx, dy = tangents
    parts = [b.op(e.op, dx, b.p(y)) if dx is not None else None, b.op(e.op, b.p(x), dy) if dy is not None else None]
    return _add_tangents(b, parts, e.outs[0].type)


def _zero_like(b, t: Type) -> Atom:
    return b.op("zeros", shape=t.shape) if t.shape else ZERO


def _jvp_store(b, e, tangents):
    """setindex and addindex: the same store, of the value's tangent into the array's."""
    arr, value, *idx = e.ins
    darr, dvalue = tangents[0], tangents[1]
    if dvalue is None:
        if e.op == "addindex":
            return darr
        dvalue = _zero_like(b, value.type)
    base = darr if darr is not None else _zero_like(b, arr.type)
    return b.op(e.op, base, dvalue, *(b.p(i) for i in idx))


def _jvp_pack(b, e, tangents):
    return b.op("pack", *(ZERO if t is None else t for t in tangents), **dict(e.params))


def _one_minus_square(b, y):
    return b.op("sub", ONE, b.mul(b.p(y), b.p(y)))


def _recip_of(b, value):
    return b.op("div", ONE, value)


# ---- soft relaxations ----------------------------------------------------------------------------------

def _soft_eval(kind: str):
    def evaluate(params, *args):
        np = _np()
        if kind == "smoothstep":
            x, t = args
            return _sigmoid(params, np.divide(x, t))
        a, b, t = args
        sign = 1.0 if kind == "softmax2" else -1.0
        return sign * t * np.logaddexp(sign * np.divide(a, t), sign * np.divide(b, t))

    return evaluate


def _vjp_smoothstep(b, e, ct):
    x, t = e.ins
    y = e.outs[0]

    def slope():  # d y / d (x / t) = y (1 - y)
        return b.mul(b.p(y), b.op("sub", ONE, b.p(y)))

    return [lambda: b.op("div", b.mul(ct, slope()), b.p(t)),
            lambda: b.op("neg", b.op("div", b.mul(b.mul(ct, slope()), b.p(x)), b.mul(b.p(t), b.p(t))))]


def _vjp_soft2(first: bool):
    """softmax2 / softmin2 (a, b, t): the weight w of a is sigmoid(+-(a - b) / t); d/dt is
    (out - w a - (1 - w) b) / t."""

    def rule(b, e, ct):
        a, c, t = e.ins
        out = e.outs[0]

        def w():
            gap = b.op("sub", b.p(a), b.p(c)) if first else b.op("sub", b.p(c), b.p(a))
            return b.op("sigmoid", b.op("div", gap, b.p(t)))

        def d_t():
            mix = b.op("add", b.mul(w(), b.p(a)), b.mul(b.op("sub", ONE, w()), b.p(c)))
            return b.op("div", b.op("sub", b.p(out), mix), b.p(t))

        return [lambda: b.mul(ct, w()), lambda: b.mul(ct, b.op("sub", ONE, w())), lambda: b.mul(ct, d_t())]

    return rule


def _logsumexp(params, v):
    np = _np()
    m = np.max(v)
    if not np.isfinite(m):
        return float(m) if not np.isnan(m) else float("nan")
    return float(m + np.log(np.sum(np.exp(v - m))))


def _softmax_vec(params, v, t):
    np = _np()
    z = np.divide(v, t)
    z = np.exp(z - np.max(z))
    return z / np.sum(z)


def _lines_logsumexp(dest, args, ins, out):
    (t,) = ins
    at, n = _flat(t), size(t)
    return [f"dl_m = {args[0]}{at.replace('dl_i', '0')}", f"for dl_i in range({n}):",
            f"    dl_m = max(dl_m, {args[0]}{at})", f"{dest} = 0.0", f"for dl_i in range({n}):",
            f"    {dest} += dl_math.exp({args[0]}{at} - dl_m)", f"{dest} = dl_m + dl_math.log({dest})"]


def _lines_softmax(dest, args, ins, out):
    v, t = args
    at, n = _flat(ins[0]), size(ins[0])
    return [f"dl_m = {v}{at.replace('dl_i', '0')} / {t}", f"for dl_i in range({n}):",
            f"    dl_m = max(dl_m, {v}{at} / {t})", "dl_s = 0.0", f"for dl_i in range({n}):",
            f"    {dest}{at} = dl_math.exp({v}{at} / {t} - dl_m)", f"    dl_s += {dest}{at}",
            f"for dl_i in range({n}):", f"    {dest}{at} = {dest}{at} / dl_s"]


def _vjp_logsumexp(b, e, ct):
    (v,), out = e.ins, e.outs[0]
    return [lambda: b.mul(ct, b.op("exp", b.op("sub", b.p(v), b.p(out))))]


def _jvp_logsumexp(b, e, tangents):
    (v,), out = e.ins, e.outs[0]
    return b.op("sum", b.mul(b.op("exp", b.op("sub", b.p(v), b.p(out))), tangents[0]))


def _vjp_softmax(b, e, ct):
    """s = softmax(u), u = v / t: d u = s (ct - sum(ct s)); d v = d u / t, d t = -sum(d u v) / t^2."""
    v, t = e.ins
    s = e.outs[0]

    def du():
        return b.mul(b.p(s), b.op("sub", ct, b.op("sum", b.mul(ct, b.p(s)))))

    return [lambda: b.op("div", du(), b.p(t)),
            lambda: b.op("neg", b.op("div", b.op("sum", b.mul(du(), b.p(v))), b.mul(b.p(t), b.p(t))))]


def _jvp_softmax(b, e, tangents):
    v, t = e.ins
    s = e.outs[0]
    dv, dt = tangents
    parts = []
    if dv is not None:
        parts.append(b.op("div", dv, b.p(t)))
    if dt is not None:
        parts.append(b.op("neg", b.mul(b.p(v), b.op("div", dt, b.mul(b.p(t), b.p(t))))))
    du = parts[0] if len(parts) == 1 else b.op("add", parts[0], parts[1])
    if not du.type.shape:
        du = b.op("broadcast", du, shape=s.type.shape)
    return b.mul(b.p(s), b.op("sub", du, b.op("sum", b.mul(b.p(s), du))))


def _softmax_type(ins, params):
    if len(ins) != 2 or ins[0].kind != "f64" or not ins[0].shape or ins[1] != F64:
        raise TypeRuleError(f"softmax of an array takes (an array, a temperature), not ({', '.join(map(str, ins))})")
    return ins[0]


def _vector_and_t(name: str):
    def rule(ins, params):
        if len(ins) != 2 or ins[0].kind != "f64" or len(ins[0].shape) != 1 or ins[1] != F64:
            raise TypeRuleError(f"{name} takes (a vector, a temperature), not ({', '.join(map(str, ins))})")
        return ins[0]

    return rule


def _expand_softrank(b, v, t):
    """rank_i = 0.5 + sum_j sigmoid((v_i - v_j) / t): 1 for the smallest ... n for the largest
    as t -> 0 (the j = i term gives 0.5)."""
    _vector_and_t("softrank")([v.type, t.type], {})
    n = v.type.shape[0]
    ones = b.op("broadcast", ONE, shape=(n,))
    gaps = b.op("sub", b.op("outer", v, ones), b.op("outer", ones, v))
    return b.op("add", b.op("matmul", b.op("sigmoid", b.op("div", gaps, t)), ones), Lit(0.5, F64))


def _expand_softsort(b, v, t):
    """The values in ascending order, softly: entry k is the mean of v weighted by
    exp(-(rank_i - k)^2 / t) over i, with soft ranks."""
    _vector_and_t("softsort")([v.type, t.type], {})
    n = v.type.shape[0]
    ones = b.op("broadcast", ONE, shape=(n,))
    ranks = _expand_softrank(b, v, t)
    places = b.op("pack", *(Lit(float(k), F64) for k in range(1, n + 1)), shape=(n,))
    gaps = b.op("sub", b.op("outer", ranks, ones), b.op("outer", ones, places))
    weights = b.op("exp", b.op("neg", b.op("div", b.op("mul", gaps, gaps), t)))
    totals = b.op("matmul", ones, weights)
    return b.op("matmul", v, b.op("div", weights, b.op("outer", ones, totals)))


# ---- the registry ---------------------------------------------------------------------------------

REGISTRY: dict[str, Primitive] = {}


_JVP = {"logsumexp": _jvp_logsumexp, "softmax": _jvp_softmax, "matmul": _jvp_bilinear, "dot": _jvp_bilinear, "outer": _jvp_bilinear, "sum": _jvp_linear,
        "mean": _jvp_linear, "transpose": _jvp_linear, "broadcast": _jvp_linear, "index": _jvp_linear,
        "setindex": _jvp_store, "addindex": _jvp_store, "pack": _jvp_pack}


def _register(*prims: Primitive) -> None:
    """Add records; a differentiable one gets its forward rule: an elementwise op's from its
    reverse rule, another's from _JVP."""
    from dataclasses import replace

    for p in prims:
        assert p.name not in REGISTRY, p.name
        if p.differentiable and not p.structural and p.jvp is None and p.expand is None:
            p = replace(p, jvp=_jvp_elementwise if p.elementwise else _JVP[p.name])
        REGISTRY[p.name] = p


def _math1(name: str, evaluate, derivative, scalar: str, helper: str | None = None, doc: str = "",
           numpy_name: str | None = None, differentiable: bool = True) -> Primitive:
    """A unary math builtin, elementwise on arrays, callable in consts."""
    return Primitive(name, 1, _elementwise_type(name), evaluate or _ufunc(numpy_name or name),
                     vjp=_unary(derivative) if differentiable else None, differentiable=differentiable,
                     scalar=scalar, elementwise=True, helper=helper, builtin=name, const=True, doc=doc)


LN2 = Lit(math.log(2.0), F64)
LN10 = Lit(math.log(10.0), F64)
TWO_OVER_SQRT_PI = Lit(2.0 / math.sqrt(math.pi), F64)

_register(
    # ---- arithmetic operators (add, sub, mul and neg also on ints) ----
    Primitive("add", 2, _elementwise_type("add", ints=True), lambda p, a, b: a + b, _vjp_add,
              scalar="{0} + {1}", elementwise=True, operator="+", doc="addition"),
    Primitive("sub", 2, _elementwise_type("sub", ints=True), lambda p, a, b: a - b, _vjp_sub,
              scalar="{0} - {1}", elementwise=True, operator="-", doc="subtraction"),
    Primitive("mul", 2, _elementwise_type("mul", ints=True), lambda p, a, b: a * b, _vjp_mul,
              scalar="{0} * {1}", elementwise=True, operator="*", doc="multiplication"),
    Primitive("div", 2, _elementwise_type("div"), _ufunc("divide"), _vjp_div,
              scalar="{0} / {1}", elementwise=True, operator="/", doc="division (IEEE: x / 0 is inf or nan)"),
    Primitive("pow", 2, _elementwise_type("pow"), _ufunc("power"), _vjp_pow,
              scalar="{0} ** {1}", elementwise=True, operator="^", builtin="pow", const=True, doc="x to the power y"),
    Primitive("neg", 1, _elementwise_type("neg", ints=True), lambda p, x: -x,
              lambda b, e, ct: [lambda: b.op("neg", ct)], scalar="-{0}", elementwise=True, operator="unary -",
              doc="negation"),
    Primitive("matmul", 2, _matmul_type, lambda p, a, b: _np().matmul(a, b), _vjp_matmul,
              render=_lines_matmul, operator="@", doc="matrix-vector, vector-matrix, matrix-matrix or vector-vector product"),

    # ---- math builtins ----
    _math1("sin", None, lambda b, x, y: b.op("cos", b.p(x)), "dl_math.sin({0})", doc="sine"),
    _math1("cos", None, lambda b, x, y: b.op("neg", b.op("sin", b.p(x))), "dl_math.cos({0})", doc="cosine"),
    _math1("tan", None, lambda b, x, y: b.op("add", ONE, b.mul(b.p(y), b.p(y))), "dl_math.tan({0})", doc="tangent"),
    _math1("asin", None, lambda b, x, y: _recip_of(b, b.op("sqrt", _one_minus_square(b, x))),
           "dl_math.asin({0})", doc="arc sine (nan outside [-1, 1])", numpy_name="arcsin"),
    _math1("acos", None, lambda b, x, y: b.op("neg", _recip_of(b, b.op("sqrt", _one_minus_square(b, x)))),
           "dl_math.acos({0})", doc="arc cosine (nan outside [-1, 1])", numpy_name="arccos"),
    _math1("atan", None, lambda b, x, y: _recip_of(b, b.op("add", ONE, b.mul(b.p(x), b.p(x)))),
           "dl_math.atan({0})", doc="arc tangent", numpy_name="arctan"),
    _math1("exp", None, lambda b, x, y: b.p(y), "dl_math.exp({0})", doc="e to the x"),
    _math1("exp2", None, lambda b, x, y: b.mul(b.p(y), LN2), "2.0 ** {0}", doc="2 to the x"),
    _math1("log", None, lambda b, x, y: _recip_of(b, b.p(x)), "dl_math.log({0})",
           doc="natural logarithm (-inf at 0, nan below)"),
    _math1("log2", None, lambda b, x, y: _recip_of(b, b.mul(b.p(x), LN2)), "dl_math.log2({0})",
           doc="base-2 logarithm"),
    _math1("log10", None, lambda b, x, y: _recip_of(b, b.mul(b.p(x), LN10)), "dl_math.log10({0})",
           doc="base-10 logarithm"),
    _math1("log1p", None, lambda b, x, y: _recip_of(b, b.op("add", ONE, b.p(x))), "dl_math.log1p({0})",
           doc="log(1 + x), exact for small x"),
    _math1("sqrt", None, lambda b, x, y: _recip_of(b, b.mul(TWO, b.p(y))), "dl_math.sqrt({0})",
           doc="square root (nan below 0)"),
    _math1("tanh", None, lambda b, x, y: _one_minus_square(b, y), "dl_math.tanh({0})", doc="hyperbolic tangent"),
    _math1("sinh", None, lambda b, x, y: b.op("cosh", b.p(x)), "dl_math.sinh({0})", doc="hyperbolic sine"),
    _math1("cosh", None, lambda b, x, y: b.op("sinh", b.p(x)), "dl_math.cosh({0})", doc="hyperbolic cosine"),
    _math1("erf", _erf, lambda b, x, y: b.mul(TWO_OVER_SQRT_PI, b.op("exp", b.op("neg", b.mul(b.p(x), b.p(x))))),
           "dl_math.erf({0})", doc="the error function"),
    _math1("sigmoid", _sigmoid, lambda b, x, y: b.mul(b.p(y), b.op("sub", ONE, b.p(y))), "dl_rt.sigmoid({0})",
           "sigmoid", "1 / (1 + exp(-x))"),
    _math1("relu", lambda p, x: _np().maximum(x, 0.0), lambda b, x, y: b.op("mask_gt", b.p(x), ZERO),
           "dl_rt.relu({0})", "relu", "max(x, 0); relu'(0) = 0"),
    _math1("softplus", lambda p, x: _np().logaddexp(0.0, x), lambda b, x, y: b.op("sigmoid", b.p(x)),
           "dl_rt.softplus({0})", "softplus", "log(1 + exp(x)), without overflow"),
    _math1("abs", None, lambda b, x, y: b.op("sign", b.p(x)), "abs({0})", doc="absolute value; abs'(0) = 0"),
    _math1("sign", None, None, "dl_rt.sign({0})", "sign", "-1, 0 or 1 (zero derivative)", differentiable=False),
    _math1("floor", None, None, "dl_np.floor({0})", doc="round down (zero derivative)", differentiable=False),
    _math1("ceil", None, None, "dl_np.ceil({0})", doc="round up (zero derivative)", differentiable=False),
    _math1("round", lambda p, x: _np().round(x), None, "dl_rt.fround({0})", "fround",
           "round half to even (zero derivative)", differentiable=False),
    Primitive("atan2", 2, _elementwise_type("atan2"), _ufunc("arctan2"), _vjp_atan2, scalar="dl_math.atan2({0}, {1})",
              elementwise=True, builtin="atan2", const=True, doc="the angle of the point (x, y): atan2(y, x)"),
    Primitive("hypot", 2, _elementwise_type("hypot"), _ufunc("hypot"), _vjp_hypot, scalar="dl_math.hypot({0}, {1})",
              elementwise=True, builtin="hypot", const=True, doc="sqrt(x^2 + y^2) without overflow; 0 derivative at 0"),
    Primitive("min", 2, _elementwise_type("min"), _ufunc("minimum"),
              _vjp_choose(lambda b, x, y: b.op("lt_weight", x, y)), scalar="dl_rt.fmin({0}, {1})", elementwise=True,
              helper="fmin", builtin="min", const=True, doc="the smaller; a tie splits the derivative evenly"),
    Primitive("max", 2, _elementwise_type("max"), _ufunc("maximum"),
              _vjp_choose(lambda b, x, y: b.op("lt_weight", y, x)), scalar="dl_rt.fmax({0}, {1})", elementwise=True,
              helper="fmax", builtin="max", const=True, doc="the larger; a tie splits the derivative evenly"),
    Primitive("clamp", 3, _elementwise_type("clamp"),
              lambda p, x, lo, hi: _np().minimum(_np().maximum(x, lo), hi), _vjp_clamp,
              scalar="dl_rt.clamp({0}, {1}, {2})", elementwise=True, helper="clamp", builtin="clamp", const=True,
              doc="min(max(x, lo), hi), with their derivatives"),

    # ---- array builtins ----
    Primitive("zeros", 0, _shaped("zeros", []), lambda p: _np().zeros(p["shape"]), differentiable=False,
              render=_lines_fill, builtin="zeros", source_arity=(1, 2), doc="an array of zeros: zeros(N), zeros(N, M)"),
    Primitive("sum", 1, _reduce_type("sum"), lambda p, x: float(_np().sum(x)), _vjp_sum, render=_lines_reduce(False),
              builtin="sum", doc="the sum of an array's elements"),
    Primitive("mean", 1, _reduce_type("mean"), lambda p, x: float(_np().mean(x)), _vjp_mean,
              render=_lines_reduce(True), builtin="mean", doc="the mean of an array's elements"),
    Primitive("dot", 2, _dot_type, lambda p, a, b: float(_np().dot(a, b)), _vjp_mul, render=_lines_dot,
              builtin="dot", doc="the dot product of two vectors"),
    Primitive("index", 2, _index_type, _index, _vjp_index, render=_lines_index, checks_index=1, operator="[]",
              doc="an element, or a row of a matrix: v[i], W[i, j], W[i]"),
    Primitive("setindex", 3, _store_type, _store(False), _vjp_setindex, render=_lines_store(False), checks_index=2,
              operator="[] =", doc="a new array with one element or row replaced (v[i] = x)"),

    # ---- soft relaxations: smooth stand-ins for steps, min, max, sorting, with a temperature t ----
    Primitive("smoothstep", 2, _elementwise_type("smoothstep"), _soft_eval("smoothstep"), _vjp_smoothstep,
              scalar="dl_rt.smoothstep({0}, {1})", elementwise=True, helper="smoothstep", builtin="smoothstep",
              doc="sigmoid(x / t): a soft `x > 0` (0 below, 1 above, over a width of about t)"),
    Primitive("softmax2", 3, _elementwise_type("softmax"), _soft_eval("softmax2"), _vjp_soft2(True),
              scalar="dl_rt.softmax2({0}, {1}, {2})", elementwise=True, helper="softmax2", builtin="softmax",
              doc="softmax(a, b, t) = t log(exp(a/t) + exp(b/t)): a soft max(a, b)"),
    Primitive("softmin2", 3, _elementwise_type("softmin"), _soft_eval("softmin2"), _vjp_soft2(False),
              scalar="dl_rt.softmin2({0}, {1}, {2})", elementwise=True, helper="softmin2", builtin="softmin",
              doc="softmin(a, b, t) = -t log(exp(-a/t) + exp(-b/t)): a soft min(a, b)"),
    Primitive("logsumexp", 1, _reduce_type("logsumexp"), _logsumexp, _vjp_logsumexp, render=_lines_logsumexp,
              builtin="logsumexp", doc="log(sum(exp(v))) without overflow: a soft maximum of an array"),
    Primitive("softmax", 2, _softmax_type, _softmax_vec, _vjp_softmax, render=_lines_softmax, builtin="softmax",
              source_arity=(2, 3),
              doc="softmax(v, t): exp(v / t) / sum(exp(v / t)), weights summing to 1 (softmax(a, b, t): a soft max)"),
    Primitive("softrank", 2, _vector_and_t("softrank"), None, builtin="softrank", expand=_expand_softrank,
              doc="softrank(v, t): each element's rank, 1 for the smallest, smoothly (exact as t -> 0)"),
    Primitive("softsort", 2, _vector_and_t("softsort"), None, builtin="softsort", expand=_expand_softsort,
              doc="softsort(v, t): v in ascending order, smoothly (exact as t -> 0)"),

    # ---- comparisons and logic (conditions only; no derivative) ----
    *(Primitive(name, 2, _compare_type(name), lambda p, a, b, f=f: bool(f(a, b)), differentiable=False,
                scalar="{0} %s {1}" % sym, operator=sym, doc=f"comparison {sym}")
      for name, sym, f in (("lt", "<", lambda a, b: a < b), ("le", "<=", lambda a, b: a <= b),
                           ("gt", ">", lambda a, b: a > b), ("ge", ">=", lambda a, b: a >= b),
                           ("eq", "==", lambda a, b: a == b), ("ne", "!=", lambda a, b: a != b))),
    Primitive("not", 1, _exactly([BOOL], BOOL, "not"), lambda p, a: not a, differentiable=False,
              scalar="not {0}", operator="not", doc="logical not"),

    # ---- internal: made by lowering and by derivative rules, never written in a program ----
    Primitive("to_int", 1, _exactly([F64], I64, "int"), lambda p, a: _to_int(a), differentiable=False,
              scalar="int({0})", guard="not (abs({0}) < %r)" % INT_CONVERT_LIMIT, builtin="int",
              doc="a float to an int, rounding toward zero (zero derivative); a fault when not finite or too large"),
    Primitive("to_float", 1, _exactly([I64], F64, "to_float"), lambda p, a: float(a), differentiable=False,
              scalar="float({0})", doc="int to float (int promotion is explicit in the IR)"),
    Primitive("addindex", 3, _store_type, _store(True), _vjp_addindex, render=_lines_store(True), checks_index=2,
              doc="a new array with value added at one element or row (adjoints of index)"),
    Primitive("transpose", 1, _transpose_type, lambda p, x: x.T.copy(), lambda b, e, ct: [lambda: b.op("transpose", ct)],
              render=_lines_transpose, doc="matrix transpose"),
    Primitive("outer", 2, _outer_type, lambda p, a, b: _np().outer(a, b), _vjp_outer, render=_lines_outer,
              doc="outer product of two vectors"),
    Primitive("pack", 1, _pack_type, lambda p, *xs: _np().array(xs, dtype=float).reshape(p["shape"]), _vjp_pack,
              render=_lines_pack, checks_index=None,
              doc="pack[shape=S] x0 x1 ...: an array of shape S from its elements, row-major (scalarize's way "
                  "back to an array)"),
    Primitive("broadcast", 1, _shaped("broadcast", [F64]), lambda p, x: _np().full(p["shape"], float(x)),
              lambda b, e, ct: [lambda: b.op("sum", ct)], render=_lines_fill, doc="a scalar repeated to params['shape']"),
    Primitive("mask_gt", 2, _elementwise_type("mask_gt"), lambda p, a, b: _np().greater(a, b) * 1.0,
              differentiable=False, scalar="dl_rt.mask_gt({0}, {1})", elementwise=True, helper="mask_gt",
              doc="1.0 where a > b, else 0.0 (relu's derivative)"),
    Primitive("lt_weight", 2, _elementwise_type("lt_weight"), _lt_weight, differentiable=False,
              scalar="dl_rt.lt_weight({0}, {1})", elementwise=True, helper="lt_weight",
              doc="1.0 where a < b, 0.5 where a == b, else 0.0 (the share of min's first operand)"),
    Primitive("div_or_zero", 2, _elementwise_type("div_or_zero"), _div_or_zero, _vjp_div_or_zero,
              scalar="dl_rt.div_or_zero({0}, {1})", elementwise=True, helper="div_or_zero",
              doc="a / b, or 0.0 where b is 0 (hypot's derivative)"),

    # ---- structural: the tape and the start of the reverse sweep ----
    Primitive("push", 1, _no_result("push"), None, structural=True,
              doc="push[tape=T, id=K] x: store x on tape T; the pop with the same id takes it back"),
    Primitive("pop", 0, _pop_type, None, structural=True,
              doc="%y = pop[tape=T, id=K]: the value its push stored, last in first out"),
    Primitive("seal", 0, _no_result("seal"), None, structural=True,
              doc="seal[tape=T]: tape T's pushes all come before this top-level point, its pops after"),
    Primitive("sweep", 0, _no_result("sweep"), None, structural=True,
              doc="sweep[tape=T]: the start of an adjoint program's reverse sweep; seals its tape T"),
)


# ---- tables derived from the registry ---------------------------------------------------------------

BUILTINS: dict[str, Primitive] = {p.builtin: p for p in REGISTRY.values() if p.builtin}
CONST_FUNCTIONS: set[str] = {p.builtin for p in REGISTRY.values() if p.builtin and p.const}
OPERATOR_SPELLING: dict[str, str] = {p.name: p.operator for p in REGISTRY.values() if p.operator}


def builtin_op(name: str, nargs: int) -> Primitive:
    """The record a program's call `name(...)` with nargs arguments means (softmax(v, t) is the
    array softmax, softmax(a, b, t) the soft max of two values)."""
    matches = [p for p in REGISTRY.values() if p.builtin == name]
    exact = [p for p in matches if p.arity == nargs and not p.source_arity]
    return exact[0] if exact else BUILTINS[name]


def get(op: str) -> Primitive:
    try:
        return REGISTRY[op]
    except KeyError:
        raise MissingRule(op, "primitive") from None


def result_type(op: str, ins: list[Type], params: dict) -> Type:
    """The type of `op` applied to operands of these types, or TypeRuleError."""
    prim = REGISTRY.get(op)
    if prim is None:
        raise TypeRuleError(f"no op {op} taking ({', '.join(map(str, ins))})")
    if len(ins) != prim.arity and prim.checks_index is None and op != "pack":
        raise TypeRuleError(f"{op} takes {prim.arity} operand{'s' * (prim.arity != 1)}, not {len(ins)}")
    return prim.type_rule(list(ins), params)


def evaluate(op: str, params: dict, args: list, out_type: Type):
    """Apply op to Python/NumPy values. Floats follow IEEE (no exceptions); ints stay Python ints."""
    prim = REGISTRY.get(op)
    if prim is None or prim.evaluate is None:
        raise MissingRule(op, "evaluation")
    if out_type == I64:
        return int(prim.evaluate(params, *args))
    if out_type == BOOL:
        return bool(prim.evaluate(params, *args))
    np = _np()
    with np.errstate(all="ignore"):
        if prim.elementwise:
            args = [a if isinstance(a, np.ndarray) else np.float64(a) for a in args]
        value = prim.evaluate(params, *args)
    if isinstance(value, np.ndarray) and value.ndim:
        return value.copy() if prim.elementwise else value
    return float(value)


def math_scalar(op: str, args: list[float]) -> float:
    """A float math op on Python floats (for constant evaluation), with IEEE results."""
    return float(evaluate(op, {}, [float(a) for a in args], F64))
