"""Helpers the generated kernels call: scalar math with NumPy's semantics that `math` lacks,
and moving arrays onto and off the tape. Array arithmetic is not here: the kernels write it as
loops of their own (see codegen.Writer.loops). Compiled by Numba, cached on disk."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_FLAGS = dict(cache=True)


# Scalar forms (an elementwise op on arrays is a loop over one of these in the kernel).

@njit(**_FLAGS)
def sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@njit(**_FLAGS)
def softplus(x):
    # log(1 + exp(x)) without overflow
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(**_FLAGS)
def relu(x):
    return x if x > 0.0 or x != x else 0.0


@njit(**_FLAGS)
def sign(x):
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return x  # 0.0, -0.0 or nan


@njit(**_FLAGS)
def fround(x):
    return np.rint(x)  # half to even, like NumPy's round


@njit(**_FLAGS)
def fmin(a, b):
    return a if a <= b or a != a else b


@njit(**_FLAGS)
def fmax(a, b):
    return a if a >= b or a != a else b


@njit(**_FLAGS)
def clamp(x, lo, hi):
    m = x if x >= lo or x != x else lo
    return m if m <= hi or m != m else hi


@njit(**_FLAGS)
def mask_gt(a, b):
    return 1.0 if a > b else 0.0


@njit(**_FLAGS)
def lt_weight(a, b):
    """min's share of the derivative for its first operand: ties split evenly."""
    if a < b:
        return 1.0
    return 0.5 if a == b else 0.0


@njit(**_FLAGS)
def div_or_zero(a, b):
    return a / b if b != 0.0 else 0.0


@njit(**_FLAGS)
def tape_put(tape, top, x):
    """Store array x's elements on a float tape from index top (no temporary array)."""
    for i in range(x.size):
        tape[top + i] = x.flat[i]


@njit(**_FLAGS)
def tape_take(out, tape, top):
    """Fill out (any shape) from a float tape from index top; returns out."""
    for i in range(out.size):
        out.flat[i] = tape[top + i]
    return out


@njit(**_FLAGS)
def put_row(table, row, col, x):
    """Write array x's elements into table[row, col:col + x.size]."""
    for i in range(x.size):
        table[row, col + i] = x.flat[i]


@njit(**_FLAGS)
def grown(tape, need):
    size = max(2 * tape.shape[0], need, 16)
    new = np.empty(size, tape.dtype)
    for i in range(tape.shape[0]):  # an explicit copy (slice copies failed once grown in prange)
        new[i] = tape[i]
    return new


# ---- the chunked kernels' bookkeeping (kept out of their parallel functions: there Numba would
# make every array operation a parallel loop of its own)


@njit(**_FLAGS)
def chunk_sums(chunks, width):
    return np.zeros((chunks, width))


@njit(**_FLAGS)
def chunk_faults(chunks):
    return np.zeros((chunks, 2), np.int64)


@njit(**_FLAGS)
def chunk_tapes(chunks, hint):
    sizes = np.empty((chunks, hint.shape[0]), np.int64)
    for c in range(chunks):
        for k in range(hint.shape[0]):
            sizes[c, k] = hint[k]
    return sizes


@njit(**_FLAGS)
def add_rows(table):
    """The rows of a table added in order (chunk 0, then 1, ...): the same sums whatever the
    threads that filled them."""
    total = np.zeros(table.shape[1])
    for c in range(table.shape[0]):
        for k in range(table.shape[1]):
            total[k] += table[c, k]
    return total


@njit(**_FLAGS)
def max_rows(table):
    best = np.zeros(table.shape[1], np.int64)
    for c in range(table.shape[0]):
        for k in range(table.shape[1]):
            best[k] = max(best[k], table[c, k])
    return best


@njit(**_FLAGS)
def first_fault(faults):
    """(code, row) of the first chunk that reported a fault, else (0, 0)."""
    for c in range(faults.shape[0]):
        if faults[c, 0] != 0:
            return faults[c, 0], faults[c, 1]
    return faults[0, 0] * 0, faults[0, 1] * 0


# Soft relaxations (smooth stand-ins for a step, a min and a max, with a temperature t > 0).

@njit(**_FLAGS)
def smoothstep(x, t):
    """sigmoid(x / t): 0 well below 0, 1 well above, smooth across a width of about t."""
    return sigmoid(x / t)


@njit(**_FLAGS)
def softmax2(a, b, t):
    """t log(exp(a / t) + exp(b / t)), without overflow: max(a, b) as t -> 0."""
    hi = max(a, b)
    if hi == -math.inf or hi != hi:
        return hi
    return hi + t * math.log1p(math.exp(-abs(a - b) / t))


@njit(**_FLAGS)
def softmin2(a, b, t):
    return -softmax2(-a, -b, t)
