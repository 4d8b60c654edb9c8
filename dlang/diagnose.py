"""Where a non-finite loss or gradient came from: the data row, and the source line whose
forward value or derivative was the first NaN or infinity."""
from __future__ import annotations

import numpy as np

from .abi import data_layout
from .errors import Diagnostic, RuntimeFault, source_text, span_at
from .interp import first_non_finite
from .ir import Eqn, Program, walk
from .prims import REGISTRY
from .reverse import reverse_ad


def non_finite_origin(kernels, data: np.ndarray, params: dict, what: str, rows=None) -> RuntimeFault | None:
    """An error naming the first non-finite value behind a non-finite loss or gradient
    (`what`, e.g. "the gradient d loss / d g is nan"), or None if no row on its own gives one.
    `rows`: the row numbers a user sees (the file's), when not 1, 2, 3 ..."""
    row = _first_bad_row(kernels, data, params)
    if row is None:
        return None
    program: Program = kernels.program
    values = {}
    for d, (col, width) in zip(program.data, data_layout(program)):
        cells = data[row, col:col + width]
        values[d.name] = cells.reshape(d.type.shape).copy() if d.type.shape else float(cells[0])
    with np.errstate(all="ignore"):  # the adjoint as reverse mode makes it, before the kernel passes
        found = first_non_finite(reverse_ad(program), values, params, kernels.max_iterations)
    label = int(rows[row]) if rows is not None and len(rows) == data.shape[0] else row + 1
    where = f"data row {label}" if program.data else "the program"
    path = program.source_path
    if not isinstance(found, tuple):  # the row alone is finite in the interpreter, or too long to trace
        reason = ("tracing it would take too long" if found == "too long"
                  else "the reference interpreter finds no non-finite value there")
        return RuntimeFault(Diagnostic(f"{what}; it first goes wrong at {where}, but {reason}", None, path))
    eqn, in_reverse, value = found
    shown = _shown(value)
    loc = eqn.loc
    line = f"line {loc[0]}" if loc else "an unknown line"
    if in_reverse:
        primal = _forward_op_at(program, loc)
        of = f" of {primal}" if primal else ""
        message = (f"{what}: the first non-finite value ({shown}) appeared in the derivative{of} at {line}, "
                   f"in the reverse pass ({where}); the forward values there were finite")
        note = ("the function is not differentiable at this point (like sqrt or log at 0, "
                "or x^y at x = 0): move the params or data away from it, or guard it")
    else:
        message = (f"{what}: the first non-finite value ({shown}) appeared at {line}, in the forward "
                   f"pass ({where}): {_spell(eqn.op)} gave {shown}")
        note = "a division by 0, a log of 0 or less, an overflow (exp of a large number), or a NaN in"\
               " a param gives this; check the values that reach this line"
    return RuntimeFault(Diagnostic(message, span_at(loc), path, note), source_text(path))


def _first_bad_row(kernels, data: np.ndarray, params: dict) -> int | None:
    """The first row whose own loss or gradient is not finite."""
    losses = kernels.forward_rows(data, params)[0]
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        return int(bad[0])

    def bad_grad(lo: int, hi: int) -> bool:
        loss, grads = kernels.grad(data[lo:hi], params)
        return not (np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values()))

    lo, hi = 0, data.shape[0]
    if hi == 0 or not bad_grad(lo, hi):
        return None
    while hi - lo > 1:  # bisect: the first half that is bad on its own
        mid = (lo + hi) // 2
        if bad_grad(lo, mid):
            hi = mid
        elif bad_grad(mid, hi):
            lo = mid
        else:  # only the sum overflows: no single row is to blame
            return None
    return lo


def _forward_op_at(program: Program, loc) -> str | None:
    """The operation the program computes at a source location (the primal of an adjoint)."""
    if loc is None:
        return None
    for s in walk(program.body):
        if isinstance(s, Eqn) and s.loc == loc:
            return _spell(s.op)
    return None


def _spell(op: str) -> str:
    prim = REGISTRY.get(op)
    return f"`{prim.spelling if prim else op}`"


def _shown(value) -> str:
    arr = np.asarray(value, dtype=float).ravel()
    v = arr[~np.isfinite(arr)][0]
    return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
