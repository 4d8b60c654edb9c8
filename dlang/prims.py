"""The primitive operations of the IR: for each, its type rule and its meaning on NumPy values.

This table is the single place that says what an op computes. The reference interpreter and
constant evaluation call `evaluate`; the verifier calls `result_type`. The derivative rules
(in the AD module) are a separate table keyed by the same op names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .ir import BOOL, F64, I64, Type


class TypeRuleError(Exception):
    """An op applied to operands it does not accept; the message is a plain sentence."""


def _np():
    import numpy  # imported lazily: `dlang check` should not pay for NumPy

    return numpy


# ---- elementwise math on float64 (NumPy semantics: IEEE, no exceptions) --------------------

def _sigmoid(x):
    np = _np()
    return np.exp(-np.logaddexp(0.0, -x))


UNARY_MATH: dict[str, Callable] = {
    "neg": lambda x: -x,
    "sin": lambda x: _np().sin(x),
    "cos": lambda x: _np().cos(x),
    "tan": lambda x: _np().tan(x),
    "asin": lambda x: _np().arcsin(x),
    "acos": lambda x: _np().arccos(x),
    "atan": lambda x: _np().arctan(x),
    "exp": lambda x: _np().exp(x),
    "log": lambda x: _np().log(x),
    "log1p": lambda x: _np().log1p(x),
    "sqrt": lambda x: _np().sqrt(x),
    "tanh": lambda x: _np().tanh(x),
    "sinh": lambda x: _np().sinh(x),
    "cosh": lambda x: _np().cosh(x),
    "sigmoid": _sigmoid,
    "relu": lambda x: _np().maximum(x, 0.0),
    "softplus": lambda x: _np().logaddexp(0.0, x),
    "abs": lambda x: _np().abs(x),
    "sign": lambda x: _np().sign(x),
    "floor": lambda x: _np().floor(x),
    "ceil": lambda x: _np().ceil(x),
    "round": lambda x: _np().round(x),
}

BINARY_MATH: dict[str, Callable] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: _np().divide(a, b),
    "pow": lambda a, b: _np().power(a, b),
    "atan2": lambda a, b: _np().arctan2(a, b),
    "min": lambda a, b: _np().minimum(a, b),
    "max": lambda a, b: _np().maximum(a, b),
    # 1.0 where the comparison holds, else 0.0: used by derivative rules at kinks
    "mask_ge": lambda a, b: _np().greater_equal(a, b) * 1.0,
    "mask_gt": lambda a, b: _np().greater(a, b) * 1.0,
}

TERNARY_MATH: dict[str, Callable] = {
    "clamp": lambda x, lo, hi: _np().minimum(_np().maximum(x, lo), hi),
}

INT_OPS = {"add", "sub", "mul", "neg"}  # also defined on i64, giving i64

COMPARE: dict[str, Callable] = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}

ELEMENTWISE = {**UNARY_MATH, **BINARY_MATH, **TERNARY_MATH}


# ---- type rules ------------------------------------------------------------------------------

def _elementwise_type(op: str, ins: list[Type]) -> Type:
    if op in INT_OPS and all(t == I64 for t in ins):
        return I64
    shape: tuple[int, ...] = ()
    for t in ins:
        if t.kind != "f64":
            raise TypeRuleError(f"{op} needs float operands, not {t}")
        if t.shape:
            if shape and t.shape != shape:
                raise TypeRuleError(f"{op} of arrays of different shapes {_shape(shape)} and {_shape(t.shape)}")
            shape = t.shape
    return Type("f64", shape)


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a @ b (matrix or vector operands), or TypeRuleError."""
    if not a or not b:
        raise TypeRuleError("@ needs two arrays; use * to multiply by a scalar")
    inner_a = a[-1]
    inner_b = b[0]
    if inner_a != inner_b:
        raise TypeRuleError(
            f"@ of shapes {_shape(a)} and {_shape(b)}: the inner sizes {inner_a} and {inner_b} differ"
        )
    return a[:-1] + b[1:]


def result_type(op: str, ins: list[Type], params: dict) -> Type:
    """The type of `op` applied to operands of these types, or TypeRuleError."""
    n = len(ins)
    if op in UNARY_MATH and n == 1 or op in BINARY_MATH and n == 2 or op in TERNARY_MATH and n == 3:
        return _elementwise_type(op, ins)
    if op in COMPARE and n == 2:
        a, b = ins
        if a.shape or b.shape or a != b or a == BOOL:
            raise TypeRuleError(f"{op} needs two numbers of one type, not {a} and {b}")
        return BOOL
    if op == "not" and ins == [BOOL]:
        return BOOL
    if op == "to_float" and ins == [I64]:
        return F64
    if op == "zeros" and n == 0:
        return Type("f64", tuple(params["shape"]))
    if op == "matmul" and n == 2 and all(t.kind == "f64" for t in ins):
        return Type("f64", matmul_shape(ins[0].shape, ins[1].shape))
    if op in ("sum", "mean") and n == 1 and ins[0].kind == "f64" and ins[0].shape:
        return F64
    if op == "dot" and n == 2 and all(t.kind == "f64" and len(t.shape) == 1 for t in ins):
        if ins[0].shape != ins[1].shape:
            raise TypeRuleError(f"dot of vectors of different lengths {ins[0].shape[0]} and {ins[1].shape[0]}")
        return F64
    if op == "index" and n >= 2:
        arr, idx = ins[0], ins[1:]
        if arr.kind != "f64" or len(idx) > len(arr.shape) or any(t != I64 for t in idx):
            raise TypeRuleError(f"cannot index {arr} with {len(idx)} int indices")
        return Type("f64", arr.shape[len(idx):])
    if op == "transpose" and n == 1 and ins[0].kind == "f64" and len(ins[0].shape) == 2:
        return Type("f64", ins[0].shape[::-1])
    if op == "outer" and n == 2 and all(t.kind == "f64" and len(t.shape) == 1 for t in ins):
        return Type("f64", ins[0].shape + ins[1].shape)
    if op == "broadcast" and ins == [F64]:
        return Type("f64", tuple(params["shape"]))
    if op == "push" and n == 1:
        raise TypeRuleError("push has no result")
    if op in ("setindex", "addindex") and n >= 3:
        arr, value, idx = ins[0], ins[1], ins[2:]
        if arr.kind != "f64" or len(idx) > len(arr.shape) or any(t != I64 for t in idx):
            raise TypeRuleError(f"cannot index {arr} with {len(idx)} int indices")
        if value != Type("f64", arr.shape[len(idx):]):
            raise TypeRuleError(f"cannot store {value} into an element of {arr}")
        return arr
    raise TypeRuleError(f"no op {op} taking ({', '.join(map(str, ins))})")


# ---- evaluation on NumPy values --------------------------------------------------------------

@dataclass
class IndexOutOfRange(Exception):
    index: tuple[int, ...]
    shape: tuple[int, ...]


def _check_index(idx: tuple[int, ...], shape: tuple[int, ...]) -> None:
    for i, n in zip(idx, shape):
        if not 0 <= i < n:
            raise IndexOutOfRange(idx, shape)


def evaluate(op: str, params: dict, args: list, out_type: Type):
    """Apply op to Python/NumPy values. Floats follow IEEE (no exceptions); ints stay Python ints."""
    if out_type == I64:
        return int({**BINARY_MATH, **UNARY_MATH}[op](*args))
    np = _np()
    if op in ELEMENTWISE:
        with np.errstate(all="ignore"):
            args = [np.float64(a) if not isinstance(a, np.ndarray) else a for a in args]
            value = ELEMENTWISE[op](*args)
        return value.copy() if isinstance(value, np.ndarray) else float(value)
    if op in COMPARE:
        return bool(COMPARE[op](*args))
    if op == "not":
        return not args[0]
    if op == "to_float":
        return float(args[0])
    if op == "zeros":
        return np.zeros(params["shape"])
    if op == "matmul":
        with np.errstate(all="ignore"):
            value = np.matmul(args[0], args[1])
        return value if isinstance(value, np.ndarray) else float(value)
    if op == "sum":
        return float(np.sum(args[0]))
    if op == "mean":
        return float(np.mean(args[0]))
    if op == "dot":
        with np.errstate(all="ignore"):
            return float(np.dot(args[0], args[1]))
    if op == "index":
        idx = tuple(args[1:])
        _check_index(idx, args[0].shape)
        value = args[0][idx]
        return value.copy() if isinstance(value, np.ndarray) else float(value)
    if op in ("setindex", "addindex"):
        idx = tuple(args[2:])
        _check_index(idx, args[0].shape)
        new = args[0].copy()
        if op == "setindex":
            new[idx] = args[1]
        else:
            new[idx] += args[1]
        return new
    if op == "transpose":
        return args[0].T.copy()
    if op == "outer":
        return np.outer(args[0], args[1])
    if op == "broadcast":
        return np.full(params["shape"], float(args[0]))
    raise NotImplementedError(f"the interpreter has no rule for op {op}")


def math_scalar(op: str, args: list[float]) -> float:
    """A float math op on Python floats (for constant evaluation), with IEEE results."""
    return float(evaluate(op, {}, [float(a) for a in args], F64))

