"""Central finite differences of the compiled forward kernel, to check the adjoint kernel."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REL_TOL = 1e-5


@dataclass
class Comparison:
    fd: dict  # param -> finite-difference gradient (float or array)
    rel_error: dict  # param -> largest relative error over its elements
    passed: bool


def finite_differences(loss_fn, params: dict, step: float = 1e-6) -> dict:
    """d loss / d param by central differences, element by element; loss_fn(params) -> float."""
    out = {}
    for name, value in params.items():
        if isinstance(value, np.ndarray):
            grad = np.empty_like(value)
            for idx in np.ndindex(value.shape):
                grad[idx] = _central(loss_fn, params, name, idx, step)
            out[name] = grad
        else:
            out[name] = _central(loss_fn, params, name, None, step)
    return out


def _central(loss_fn, params, name, idx, step):
    base = params[name]
    x0 = float(base[idx]) if idx is not None else float(base)
    h = step * max(1.0, abs(x0))

    def at(x):
        p = dict(params)
        if idx is None:
            p[name] = x
        else:
            arr = base.copy()
            arr[idx] = x
            p[name] = arr
        return loss_fn(p)

    return (at(x0 + h) - at(x0 - h)) / (2.0 * h)


def compare(grads: dict, fd: dict, loss: float) -> Comparison:
    """Relative errors per param; passed when every element agrees to REL_TOL (or is ~0 in both)."""
    floor = 1e-8 * max(1.0, abs(loss))
    rel, ok = {}, True
    for name, g in grads.items():
        a, f = np.atleast_1d(np.asarray(g, float)), np.atleast_1d(np.asarray(fd[name], float))
        diff = np.abs(a - f)
        scale = np.maximum(np.maximum(np.abs(a), np.abs(f)), floor)
        err = diff / scale
        rel[name] = float(np.max(err)) if err.size else 0.0
        ok &= bool(np.all((err <= REL_TOL) | (diff <= floor)))
    return Comparison(fd, rel, ok)
