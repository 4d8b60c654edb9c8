"""Helpers the generated kernels call: elementwise math that NumPy lacks, small linear
algebra without BLAS, and the tape. Compiled by Numba, cached on disk."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_FLAGS = dict(cache=True)


# Scalar forms; the generated code uses NumPy expressions for arrays (see codegen._ARRAY_FORMS).

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
def mask_ge(a, b):
    return 1.0 if a >= b else 0.0


@njit(**_FLAGS)
def mask_gt(a, b):
    return 1.0 if a > b else 0.0


@njit(**_FLAGS)
def matvec(a, x):
    n, m = a.shape
    out = np.zeros(n)
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += a[i, j] * x[j]
        out[i] = s
    return out


@njit(**_FLAGS)
def vecmat(x, b):
    m, k = b.shape
    out = np.zeros(k)
    for i in range(m):
        xi = x[i]
        for j in range(k):
            out[j] += xi * b[i, j]
    return out


@njit(**_FLAGS)
def matmat(a, b):
    n, m = a.shape
    k = b.shape[1]
    out = np.zeros((n, k))
    for i in range(n):
        for p in range(m):
            aip = a[i, p]
            for j in range(k):
                out[i, j] += aip * b[p, j]
    return out


@njit(**_FLAGS)
def dot(x, y):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * y[i]
    return s


@njit(**_FLAGS)
def outer(x, y):
    out = np.empty((x.shape[0], y.shape[0]))
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            out[i, j] = x[i] * y[j]
    return out


@njit(**_FLAGS)
def total(a):
    s = 0.0
    for v in a.flat:
        s += v
    return s


@njit(**_FLAGS)
def _grown(tape, need):
    size = max(2 * tape.shape[0], need, 16)
    new = np.empty(size, tape.dtype)
    for i in range(tape.shape[0]):  # an explicit copy (slice copies failed once grown in prange)
        new[i] = tape[i]
    return new


@njit(**_FLAGS)
def push_f(tape, n, x):
    if n >= tape.shape[0]:
        tape = _grown(tape, n + 1)
    tape[n] = x
    return tape, n + 1


@njit(**_FLAGS)
def push_i(tape, n, x):
    if n >= tape.shape[0]:
        tape = _grown(tape, n + 1)
    tape[n] = x
    return tape, n + 1


@njit(**_FLAGS)
def push_fa(tape, n, a):
    size = a.size
    if n + size > tape.shape[0]:
        tape = _grown(tape, n + size)
    k = n
    for v in a.flat:
        tape[k] = v
        k += 1
    return tape, n + size
