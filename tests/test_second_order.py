"""A transformed program can be transformed again: the gradient program of a program,
differentiated by reverse mode once more, gives the Hessian times a direction. Checked against
central differences of the gradient kernel, through while loops whose trip count differs from
row to row, nested loops, ifs in loops and 2-D @ (the tape's pushes and pops have derivative
rules; each level has tapes of its own)."""
from __future__ import annotations

import numpy as np
import pytest

from dlang.frontend import compile_source

from conftest import load_program
from dlang.interp import grad_row
from dlang.data import read_rows
from dlang.ir import Eqn, initial_params, walk
from dlang.data import load_data
from dlang.irtext import parse_program, print_program
from dlang.pipeline import compile_kernels
from dlang.reverse import gradient_dot_program, reverse_ad
from dlang.verify import verify

from conftest import PROGRAMS

WHILE_PER_ROW = """
data n, x
param r = 0.9
param c = 0.3
v = x
k = 0.0
while k < n {          # a different trip count on every row
    v = v * r + c * sin(v)
    k += 1.0
}
loss (v - 0.5)^2 + r * c
"""

NESTED = """
data x
param W[2, 2] = 0.3
param b[2] = 0.1
param a = 0.7
h = zeros(2)
h[0] = x; h[1] = 1.0 - x
for i in 0..3 {
    for j in 0..2 {
        if h[j] > 0.0 {
            h[j] = h[j] * a + 0.1
        } else {
            h[j] = tanh(h[j])
        }
    }
    h = tanh(W @ h + b)
    M = W @ W          # 2-D @ in a loop
    h = M @ h * 0.5
}
loss sum(h * h) + a * a
"""


def _hvp_vs_finite_differences(prog, data, params, direction, rel=1e-5):
    """H v by reverse over reverse (compiled, and interpreted), against central differences of
    the compiled gradient along v."""
    kernels = compile_kernels(prog)
    objective = gradient_dot_program(prog)
    verify(objective)
    second = reverse_ad(objective)
    verify(second)
    assert parse_program(print_program(second)) == second
    tapes = {dict(e.params)["tape"] for e in walk(second.body) if isinstance(e, Eqn) and e.op in ("push", "pop")}
    assert len(tapes) >= 2 or not any(True for _ in tapes), tapes  # each level has its own tape
    dirs = {f"dir_{k}": v for k, v in direction.items()}
    hv_kernel = compile_kernels(objective).grad(data, {**params, **dirs})[1]

    def grad_at(t):
        moved = {k: params[k] + t * direction[k] for k in params}
        return kernels.grad(data, moved)[1]

    h = 1e-5
    plus, minus = grad_at(h), grad_at(-h)
    for k in params:
        fd = (np.asarray(plus[k]) - np.asarray(minus[k])) / (2 * h)
        got = np.asarray(hv_kernel[k])
        scale = max(1e-6, float(np.max(np.abs(fd))))
        assert float(np.max(np.abs(got - fd))) / scale < rel, (k, got, fd)
        # the gradient with respect to the directions is the gradient itself
    g = kernels.grad(data, params)[1]
    for k in params:
        np.testing.assert_allclose(hv_kernel[f"dir_{k}"], g[k], rtol=1e-10, atol=1e-12)
    return second, hv_kernel


def _direction(params, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(size=np.shape(v)) if np.ndim(v) else float(rng.normal())) for k, v in params.items()}


def test_hessian_vector_product_through_a_while_loop_with_trip_counts_per_row():
    prog = compile_source(WHILE_PER_ROW, "while.dl")
    data = np.array([[0.0, 1.0], [3.0, 0.5], [7.0, -1.2], [12.0, 2.0], [1.0, 0.3]])
    params = {"r": 0.9, "c": 0.3}
    second, hv = _hvp_vs_finite_differences(prog, data, params, {"r": 0.7, "c": -1.1})
    # and the interpreted second-order program agrees with the kernel
    rows = [{"n": n, "x": x} for n, x in data]
    full = {**params, "dir_r": 0.7, "dir_c": -1.1}
    interpreted = np.mean([grad_row(second, row, full)[1]["r"] for row in rows])
    assert interpreted == pytest.approx(hv["r"], rel=1e-10)


def test_hessian_vector_product_through_nested_loops_ifs_in_loops_and_matrix_products():
    prog = compile_source(NESTED, "nested.dl")
    data = np.array([[0.4], [-0.3], [1.2]])
    params = initial_params(prog)
    _hvp_vs_finite_differences(prog, data, params, _direction(params))


@pytest.mark.parametrize("name", ["bouncing_ball", "oscillator", "mlp", "projectile"])
def test_hessian_vector_product_on_gallery_programs(name):
    prog = load_program(str(PROGRAMS / f"{name}.dl"))
    csv = PROGRAMS / "data" / f"{name}.csv"
    data = load_data(prog, str(csv))[:12]
    params = initial_params(prog)
    _hvp_vs_finite_differences(prog, data, params, _direction(params, 1), rel=1e-4)


def test_a_program_differentiated_twice_has_paired_tapes_the_verifier_checks():
    """Every pop names its push; pairing a pop with the wrong push is an IR error."""
    import dataclasses

    from dlang.verify import IRError

    prog = compile_source(WHILE_PER_ROW, "while.dl")
    second = reverse_ad(gradient_dot_program(prog))
    pops = [e for e in walk(second.body) if isinstance(e, Eqn) and e.op == "pop"]
    assert pops and all(dict(e.params).keys() == {"tape", "id"} for e in pops)
    victim = pops[0]
    wrong = dataclasses.replace(victim, params=(("id", 999), ("tape", dict(victim.params)["tape"])))

    def swap(block):
        from dlang.ir import Block, with_blocks

        return Block(block.params, tuple(wrong if s is victim else with_blocks(s, swap) for s in block.eqns),
                     block.results)

    broken = dataclasses.replace(second, body=swap(second.body))
    with pytest.raises(IRError, match="has no push|has no pop"):
        verify(broken)


def test_reverse_of_the_adjoint_program_itself_matches_central_differences():
    """The adjoint program, its loss replaced by d loss / d r, differentiated again and run by
    the reference interpreter (only reverse_ad and the IR: this failed before pops were paired
    with their pushes and had derivative rules: 234.4 where central differences give 59.92)."""
    from dataclasses import replace

    from dlang.ir import Block, renumber

    prog = compile_source(WHILE_PER_ROW, "while.dl")
    adjoint = reverse_ad(prog)
    objective = renumber(replace(adjoint, body=Block(adjoint.body.params, adjoint.body.eqns,
                                                     (adjoint.body.results[1],)), grads=()))
    second = reverse_ad(objective)
    rows = [{"n": n, "x": x} for n, x in [[0.0, 1.0], [3.0, 0.5], [7.0, -1.2], [12.0, 2.0], [1.0, 0.3]]]

    def mean_grad(params, program, name):
        return np.mean([grad_row(program, row, params)[1][name] for row in rows])

    h = 1e-5
    for name in ("r", "c"):
        got = mean_grad({"r": 0.9, "c": 0.3}, second, name)
        shifted = [{"r": 0.9, "c": 0.3, name: {"r": 0.9, "c": 0.3}[name] + s} for s in (h, -h)]
        fd = (mean_grad(shifted[0], adjoint, "r") - mean_grad(shifted[1], adjoint, "r")) / (2 * h)
        assert got == pytest.approx(fd, rel=1e-6), (name, got, fd)
