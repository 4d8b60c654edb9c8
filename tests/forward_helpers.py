"""Forward mode and forward over reverse, through the reference interpreter: for tests that
check the IR transformation itself on many programs without a Numba compile for each."""
from __future__ import annotations

import numpy as np

from dlang.forward import forward_gradient_program, hvp_program, jvp_program
from dlang.interp import run_body
from dlang.ir import Program, size


def entry_directions(prog: Program) -> list[dict]:
    """One-hot params-shaped directions, one per param entry."""
    out = []
    for p in prog.params:
        for i in range(size(p.type)):
            d = {q.name: (np.zeros(q.type.shape) if q.type.shape else 0.0) for q in prog.params}
            if p.type.shape:
                d[p.name] = np.zeros(p.type.shape)
                d[p.name].flat[i] = 1.0
            else:
                d[p.name] = 1.0
            out.append(d)
    return out


def _seed_args(derived: Program, prog: Program, directions: list[dict]) -> dict:
    names = [p.name for p in derived.params[len(prog.params):]]
    n = len(prog.params)
    return {name: directions[k][p.name] for k in range(len(directions))
            for p, name in zip(prog.params, names[k * n:(k + 1) * n])}


def forward_gradient_interpreted(prog: Program, rows: list[dict], params: dict) -> tuple[float, dict]:
    """The mean loss and its gradient by forward mode, all entries in one pass, interpreted."""
    dirs = entry_directions(prog)
    if not dirs:
        return float(np.mean([run_body(prog, r, params)[0] for r in rows])), {}
    fg = forward_gradient_program(prog, len(dirs))
    args = {**params, **_seed_args(fg, prog, dirs)}
    results = [run_body(fg, r, args) for r in rows]
    loss = float(np.mean([r[0] for r in results]))
    grads = {name: np.mean([np.asarray(r[1 + k]) for r in results], axis=0) for k, name in enumerate(fg.grads)}
    return loss, {k: (float(v) if np.ndim(v) == 0 else v) for k, v in grads.items()}


def jvp_interpreted(prog: Program, rows: list[dict], params: dict, direction: dict) -> list:
    """Per row: the results of the tangent program along one direction (loss, outputs, then
    the loss's and the outputs' tangents)."""
    jp = jvp_program(prog, 1)
    args = {**params, **_seed_args(jp, prog, [direction])}
    return [run_body(jp, r, args) for r in rows]


def hvp_interpreted(prog: Program, rows: list[dict], params: dict, direction: dict) -> tuple[float, dict, dict]:
    """(mean loss, gradient, H v) by forward over reverse, interpreted."""
    hp = hvp_program(prog, 1)
    args = {**params, **_seed_args(hp, prog, [direction])}
    results = [run_body(hp, r, args) for r in rows]
    slots = {name: np.mean([np.asarray(r[1 + k]) for r in results], axis=0) for k, name in enumerate(hp.grads)}
    n = len(prog.params)
    grads = {p.name: slots[p.name] for p in prog.params}
    hv = {p.name: slots[hp.grads[n + j]] for j, p in enumerate(prog.params)}
    return float(np.mean([r[0] for r in results])), grads, hv
