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
def grown(tape, need):
    size = max(2 * tape.shape[0], need, 16)
    new = np.empty(size, tape.dtype)
    for i in range(tape.shape[0]):  # an explicit copy (slice copies failed once grown in prange)
        new[i] = tape[i]
    return new


# ---- elementwise ops on arrays: one small cached function each, so kernels stay quick to compile.
# The kernel allocates the result (or reuses a buffer) and calls e.g. ew_sin_into(out, x) for an
# array x, ew_mul_as_into(out, a, s) for array * scalar. Scalar helpers for domain edges first.


@njit(**_FLAGS)
def _asin(v):
    return math.asin(v) if -1.0 <= v <= 1.0 else math.nan


@njit(**_FLAGS)
def _acos(v):
    return math.acos(v) if -1.0 <= v <= 1.0 else math.nan


@njit(**_FLAGS)
def _log(v):
    if v > 0.0:
        return math.log(v)
    return -math.inf if v == 0.0 else math.nan


@njit(**_FLAGS)
def _log1p(v):
    if v > -1.0:
        return math.log1p(v)
    return -math.inf if v == -1.0 else math.nan


@njit(**_FLAGS)
def _sqrt(v):
    return math.sqrt(v) if v >= 0.0 else math.nan


# ---- the elementwise ops: `out` may be one of the inputs (each element is read, then written).


@njit(**_FLAGS)
def ew_neg_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = -v


@njit(**_FLAGS)
def ew_sin_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.sin(v)


@njit(**_FLAGS)
def ew_cos_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.cos(v)


@njit(**_FLAGS)
def ew_tan_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.tan(v)


@njit(**_FLAGS)
def ew_asin_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = _asin(v)


@njit(**_FLAGS)
def ew_acos_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = _acos(v)


@njit(**_FLAGS)
def ew_atan_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.atan(v)


@njit(**_FLAGS)
def ew_exp_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.exp(v)


@njit(**_FLAGS)
def ew_log_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = _log(v)


@njit(**_FLAGS)
def ew_log1p_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = _log1p(v)


@njit(**_FLAGS)
def ew_sqrt_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = _sqrt(v)


@njit(**_FLAGS)
def ew_tanh_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.tanh(v)


@njit(**_FLAGS)
def ew_sinh_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.sinh(v)


@njit(**_FLAGS)
def ew_cosh_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.cosh(v)


@njit(**_FLAGS)
def ew_sigmoid_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = sigmoid(v)


@njit(**_FLAGS)
def ew_relu_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = relu(v)


@njit(**_FLAGS)
def ew_softplus_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = softplus(v)


@njit(**_FLAGS)
def ew_abs_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = abs(v)


@njit(**_FLAGS)
def ew_sign_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = sign(v)


@njit(**_FLAGS)
def ew_floor_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.floor(v)


@njit(**_FLAGS)
def ew_ceil_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = math.ceil(v)


@njit(**_FLAGS)
def ew_round_into(out, x):
    src = x.ravel()
    dst = out.ravel()
    for i in range(src.size):
        v = src[i]
        dst[i] = np.rint(v)


@njit(**_FLAGS)
def ew_add_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = a + b


@njit(**_FLAGS)
def ew_add_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = a + b


@njit(**_FLAGS)
def ew_add_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = a + b


@njit(**_FLAGS)
def ew_sub_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = a - b


@njit(**_FLAGS)
def ew_sub_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = a - b


@njit(**_FLAGS)
def ew_sub_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = a - b


@njit(**_FLAGS)
def ew_mul_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = a * b


@njit(**_FLAGS)
def ew_mul_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = a * b


@njit(**_FLAGS)
def ew_mul_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = a * b


@njit(**_FLAGS)
def ew_div_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = a / b


@njit(**_FLAGS)
def ew_div_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = a / b


@njit(**_FLAGS)
def ew_div_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = a / b


@njit(**_FLAGS)
def ew_pow_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = a ** b


@njit(**_FLAGS)
def ew_pow_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = a ** b


@njit(**_FLAGS)
def ew_pow_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = a ** b


@njit(**_FLAGS)
def ew_atan2_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = math.atan2(a, b)


@njit(**_FLAGS)
def ew_atan2_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = math.atan2(a, b)


@njit(**_FLAGS)
def ew_atan2_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = math.atan2(a, b)


@njit(**_FLAGS)
def ew_min_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = fmin(a, b)


@njit(**_FLAGS)
def ew_min_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = fmin(a, b)


@njit(**_FLAGS)
def ew_min_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = fmin(a, b)


@njit(**_FLAGS)
def ew_max_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = fmax(a, b)


@njit(**_FLAGS)
def ew_max_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = fmax(a, b)


@njit(**_FLAGS)
def ew_max_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = fmax(a, b)


@njit(**_FLAGS)
def ew_mask_ge_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = mask_ge(a, b)


@njit(**_FLAGS)
def ew_mask_ge_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = mask_ge(a, b)


@njit(**_FLAGS)
def ew_mask_ge_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = mask_ge(a, b)


@njit(**_FLAGS)
def ew_mask_gt_aa_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = ya[i]
        dst[i] = mask_gt(a, b)


@njit(**_FLAGS)
def ew_mask_gt_as_into(out, x, y):
    dst = out.ravel()
    xa = x.ravel()
    for i in range(dst.size):
        a = xa[i]
        b = y
        dst[i] = mask_gt(a, b)


@njit(**_FLAGS)
def ew_mask_gt_sa_into(out, x, y):
    dst = out.ravel()
    ya = y.ravel()
    for i in range(dst.size):
        a = x
        b = ya[i]
        dst[i] = mask_gt(a, b)


@njit(**_FLAGS)
def matvec_into(out, a, x):
    n, m = a.shape
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += a[i, j] * x[j]
        out[i] = s


@njit(**_FLAGS)
def vecmat_into(out, x, b):
    m, k = b.shape
    for j in range(k):
        out[j] = 0.0
    for i in range(m):
        xi = x[i]
        for j in range(k):
            out[j] += xi * b[i, j]


@njit(**_FLAGS)
def matmat_into(out, a, b):
    n, m = a.shape
    k = b.shape[1]
    for i in range(n):
        for j in range(k):
            out[i, j] = 0.0
        for p in range(m):
            aip = a[i, p]
            for j in range(k):
                out[i, j] += aip * b[p, j]


@njit(**_FLAGS)
def outer_into(out, x, y):
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            out[i, j] = x[i] * y[j]


@njit(**_FLAGS)
def fill_into(out, value):
    dst = out.ravel()
    for i in range(dst.size):
        dst[i] = value
