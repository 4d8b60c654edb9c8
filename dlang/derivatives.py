"""Derivatives beyond the reverse-mode gradient, as library calls on compiled kernels: the
gradient by forward mode, the Jacobian of each row's loss and outputs, Hessian-vector
products and the Hessian (forward over reverse).

Each is a kernel of a derived program (dlang.forward) that carries K directions per pass,
the directions given as params: a call with K one-hot directions gives K columns of a
Jacobian or Hessian, or K entries of a gradient. The derived kernels are compiled when first
asked for and kept with the program's kernels.

A param entry is one scalar param or one element of an array param; entries are ordered as
the params are declared, arrays row-major, and named `drag`, `W[0,1]`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import pipeline
from .ir import Program, size
from .kernels import Kernels

DIRECTIONS = 8  # the most directions one pass carries (the kernel's size grows with them)
STATEMENTS = 600  # ... and at most this many adjoint statements times directions: Numba's compile
# time grows faster than the code, and a long program's tangents are long too


def directions_for(kernels: Kernels) -> int:
    """How many directions a pass of a Jacobian, Hessian or forward-mode gradient carries: all
    the param entries when few, fewer for a long program."""
    from .ir import walk

    statements = len(kernels.adjoint.prelude) + sum(1 for _ in walk(kernels.adjoint.body))
    return max(1, min(entries(kernels.program), DIRECTIONS, STATEMENTS // max(1, statements)))


def entry_names(program: Program) -> list[str]:
    """Every param entry's name, in order: drag, W[0,0], W[0,1], ..."""
    names = []
    for p in program.params:
        if p.type.shape:
            names += [f"{p.name}[{','.join(map(str, idx))}]" for idx in np.ndindex(p.type.shape)]
        else:
            names.append(p.name)
    return names


def entries(program: Program) -> int:
    return sum(size(p.type) for p in program.params)


def flatten(program: Program, values: dict) -> np.ndarray:
    """Params-shaped values (name -> float or array) as one vector of entries."""
    return np.concatenate([np.ravel(np.asarray(values[p.name], dtype=float)) for p in program.params]) \
        if program.params else np.zeros(0)


def unflatten(program: Program, vector: np.ndarray) -> dict:
    out, k = {}, 0
    for p in program.params:
        n = size(p.type)
        out[p.name] = vector[k:k + n].reshape(p.type.shape).copy() if p.type.shape else float(vector[k])
        k += n
    return out


def derived(kernels: Kernels, mode: str, directions: int) -> Kernels:
    """The kernels of a derived program of `kernels`' program, compiled once and kept."""
    key = (mode, directions)
    if key not in kernels.derived:
        kernels.derived[key] = pipeline.compile_kernels(kernels.program, kernels.max_iterations, mode=mode,
                                                        directions=directions)
    return kernels.derived[key]


def direction_args(derived_kernels: Kernels, program: Program, vectors: list[np.ndarray]) -> dict:
    """The direction params dot1_NAME ... dotK_NAME of a derived program, from K entry vectors."""
    names = [p.name for p in derived_kernels.program.params[len(program.params):]]
    args, n = {}, len(program.params)
    for k, vector in enumerate(vectors):
        for p, name in zip(program.params, names[k * n:(k + 1) * n]):
            args[name] = unflatten(program, vector)[p.name]
    return args


def _one_hot_batches(kernels: Kernels, fwd: Kernels, k: int) -> list[tuple[list, dict]]:
    """The param entries in batches of k (the last padded with None), each with its one-hot
    direction params: made once per derived kernels."""
    key = ("one-hot", k)
    if key not in kernels.derived:
        program = kernels.program
        total = entries(program)
        batches = []
        for start in range(0, total, k):
            batch = list(range(start, min(start + k, total)))
            batch += [None] * (k - len(batch))
            batches.append((batch, direction_args(fwd, program, [_one_hot(total, i) for i in batch])))
        kernels.derived[key] = batches
    return kernels.derived[key]


def _one_hot(total: int, index: int | None) -> np.ndarray:
    v = np.zeros(total)
    if index is not None:
        v[index] = 1.0
    return v


def forward_gradient(kernels: Kernels, data: np.ndarray, params: dict, rows=None) -> tuple[float, dict]:
    """The mean loss and its gradient by forward mode: one pass per DIRECTIONS entries."""
    program = kernels.program
    total = entries(program)
    if total == 0:
        return kernels.grad(data, params, rows)
    k = directions_for(kernels)
    fwd = derived(kernels, "forward", k)
    grad = np.zeros(total)
    loss = None
    for batch, args in _one_hot_batches(kernels, fwd, k):
        result = fwd.gradient(data, {**params, **args}, rows)
        loss = result.loss if loss is None else loss
        grad += flatten(program, result.grads)
    return loss, unflatten(program, grad)


@dataclass
class Jacobian:
    """Each row's loss and outputs and their derivatives with respect to every param entry."""

    names: list[str]          # the param entries, the last axis of the derivatives
    losses: np.ndarray        # rows
    outputs: np.ndarray       # rows x output columns
    d_losses: np.ndarray      # rows x entries
    d_outputs: np.ndarray     # rows x output columns x entries


def jacobian(kernels: Kernels, data: np.ndarray, params: dict, rows=None) -> Jacobian:
    """Each row's loss and outputs and their Jacobians, by forward mode (DIRECTIONS columns a pass)."""
    program = kernels.program
    total = entries(program)
    n = data.shape[0]
    losses, outs = kernels.forward_rows(data, params, rows)
    width = outs.shape[1]
    d_losses, d_outputs = np.zeros((n, total)), np.zeros((n, width, total))
    if total == 0:
        return Jacobian([], losses, outs, d_losses, d_outputs)
    k = directions_for(kernels)
    fwd = derived(kernels, "forward", k)
    for batch, args in _one_hot_batches(kernels, fwd, k):
        _, columns = fwd.forward_rows(data, {**params, **args}, rows)
        for j, index in enumerate(batch):
            if index is None:
                continue
            block = columns[:, width + j * (1 + width): width + (j + 1) * (1 + width)]
            d_losses[:, index] = block[:, 0]
            d_outputs[:, :, index] = block[:, 1:]
    return Jacobian(entry_names(program), losses, outs, d_losses, d_outputs)


def hvp(kernels: Kernels, data: np.ndarray, params: dict, directions: list[dict], rows=None):
    """(mean loss, gradient, [H v for each direction v]): forward over reverse, all the
    directions (params-shaped dicts) in one pass."""
    program = kernels.program
    if not directions:
        loss, grads = kernels.grad(data, params, rows)
        return loss, grads, []
    second = derived(kernels, "hvp", len(directions))
    args = direction_args(second, program, [flatten(program, d) for d in directions])
    result = second.gradient(data, {**params, **args}, rows)
    grads = {p.name: result.grads[p.name] for p in program.params}
    names = list(args)
    n = len(program.params)
    products = [{p.name: result.grads[names[k * n + j]] for j, p in enumerate(program.params)}
                for k in range(len(directions))]
    return result.loss, grads, products


def hessian(kernels: Kernels, data: np.ndarray, params: dict, rows=None):
    """(mean loss, gradient, Hessian as an entries x entries matrix, entry names): forward over
    reverse with DIRECTIONS one-hot directions a pass."""
    program = kernels.program
    total = entries(program)
    if total == 0:
        loss, grads = kernels.grad(data, params, rows)
        return loss, grads, np.zeros((0, 0)), []
    k = directions_for(kernels)
    h = np.zeros((total, total))
    loss = grads = None
    second = derived(kernels, "hvp", k)
    for batch, _ in _one_hot_batches(kernels, second, k):
        loss_b, grads_b, products = hvp(kernels, data, params, [unflatten(program, _one_hot(total, i)) for i in batch],
                                        rows)
        if loss is None:
            loss, grads = loss_b, grads_b
        for index, product in zip(batch, products):
            if index is not None:
                h[:, index] = flatten(program, product)
    return loss, grads, h, entry_names(program)
