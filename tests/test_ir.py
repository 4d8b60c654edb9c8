"""The IR: every program lowers to verified IR whose text reads back equal; the interpreter's semantics."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dlang import ir
from dlang.errors import RuntimeFault
from dlang.frontend import compile_source, load_program
from dlang.interp import initial_params, program_loss, run_row
from dlang.irtext import parse_program, print_program
from dlang.verify import IRError, verify

from conftest import PROGRAMS

ALL_PROGRAMS = sorted(PROGRAMS.glob("*.dl"))


@pytest.fixture(scope="module", params=ALL_PROGRAMS, ids=lambda p: p.stem)
def program(request) -> ir.Program:
    return load_program(str(request.param))


def test_there_are_programs():
    assert len(ALL_PROGRAMS) >= 6


def test_program_verifies(program):
    verify(program)


def test_printed_ir_reads_back_equal(program):
    text = print_program(program)
    again = parse_program(text)
    assert again == program
    assert print_program(again) == text


def test_reread_ir_verifies(program):
    verify(parse_program(print_program(program)))


# ---- the verifier catches broken IR -----------------------------------------------------------

def _projectile() -> ir.Program:
    return load_program(str(PROGRAMS / "projectile.dl"))


def _replace_body(prog: ir.Program, **changes) -> ir.Program:
    return dataclasses.replace(prog, body=dataclasses.replace(prog.body, **changes))


def test_verifier_rejects_use_before_definition():
    prog = _projectile()
    eqns = prog.body.eqns
    broken = _replace_body(prog, eqns=(eqns[1], eqns[0], *eqns[2:]))
    with pytest.raises(IRError, match="used where it is not defined"):
        verify(broken)


def test_verifier_rejects_wrong_output_type():
    prog = _projectile()
    first = prog.body.eqns[0]
    bad_out = ir.Var(first.outs[0].id, ir.I64, first.outs[0].hint)
    broken = _replace_body(prog, eqns=(dataclasses.replace(first, outs=(bad_out,)), *prog.body.eqns[1:]))
    with pytest.raises(IRError, match="output is i64, but cos gives f64"):
        verify(broken)


def test_verifier_rejects_unknown_op():
    prog = _projectile()
    first = prog.body.eqns[0]
    broken = _replace_body(prog, eqns=(dataclasses.replace(first, op="frobnicate"), *prog.body.eqns[1:]))
    with pytest.raises(IRError, match="no op frobnicate"):
        verify(broken)


def test_verifier_rejects_mismatched_loop_results():
    prog = _projectile()
    k, loop = next((k, s) for k, s in enumerate(prog.body.eqns) if isinstance(s, ir.ForLoop))
    body = dataclasses.replace(loop.body, results=loop.body.results[:-1])
    eqns = list(prog.body.eqns)
    eqns[k] = dataclasses.replace(loop, body=body)
    with pytest.raises(IRError, match="the body yields"):
        verify(_replace_body(prog, eqns=tuple(eqns)))


def test_verifier_rejects_double_definition():
    prog = _projectile()
    first, second = prog.body.eqns[0], prog.body.eqns[1]
    clash = dataclasses.replace(second, outs=(ir.Var(first.outs[0].id, ir.F64, "x"),))
    with pytest.raises(IRError, match="defined twice"):
        verify(_replace_body(prog, eqns=(first, clash, *prog.body.eqns[2:])))


# ---- semantics through the interpreter ----------------------------------------------------------

def loss_of(source: str, **consts) -> float:
    prog = compile_source(source, "t.dl", {k: str(v) for k, v in consts.items()})
    verify(prog)
    assert parse_program(print_program(prog)) == prog
    return program_loss(prog, None)


@pytest.mark.parametrize("expr, expected", [
    ("-2.0^2", -4.0),
    ("2.0^-2", 0.25),
    ("2.0^3^2", 512.0),
    ("(-2.0)^2", 4.0),
    ("7 / 2", 3.5),
    ("7 - 2 * 3", 1.0),
    ("(7 - 2) * 3", 15.0),
    ("2 * 3 + 4 * 5", 26.0),
    ("10 - 4 - 3", 3.0),
    ("2.0 / 4.0 / 2.0", 0.25),
    ("--3.0", 3.0),
    ("1e-3 + .5 + 2.5E+4 + 3. ", 25003.501),
    ("sigmoid(0.0)", 0.5),
    ("softplus(0.0)", math.log(2.0)),
    ("relu(-1.5) + relu(2.0)", 2.0),
    ("round(2.5) + round(3.5) + round(-0.5)", 6.0),
    ("sign(-3.0) + sign(0.0) + sign(2.0)", 0.0),
    ("clamp(5.0, 0.0, 1.0) + clamp(-5.0, 0.0, 1.0) + clamp(0.25, 0.0, 1.0)", 1.25),
    ("min(2.0, 3.0) * max(2.0, 3.0)", 6.0),
    ("atan2(1.0, 1.0)", math.pi / 4),
    ("pow(2.0, 10.0)", 1024.0),
    ("floor(-1.5) + ceil(-1.5)", -3.0),
])
def test_expression_values(expr, expected):
    assert loss_of(f"loss {expr}\n") == pytest.approx(expected, rel=1e-15)


def test_int_arithmetic_stays_int_and_promotes():
    src = "n = 7\nn = n * 3 - 1\nx = 0.5\nx += n\nloss x\n"
    assert loss_of(src) == 20.5


def test_and_or_short_circuit_guards_an_index():
    src = """
v = zeros(3)
v[2] = 5.0
s = 0.0
for i in 0..5 {
    if i < 3 and v[i] > 1.0 {
        s += v[i]
    }
    if i >= 3 or v[i] > 1.0 {
        s += 100.0
    }
}
loss s
"""
    assert loss_of(src) == 5.0 + 100.0 * 3


def test_index_out_of_range_at_run_time_is_an_error_naming_the_line():
    src = "v = zeros(3)\ns = 0.0\nfor i in 0..4 {\n    s += v[i]\n}\nloss s\n"
    prog = compile_source(src, "t.dl")
    with pytest.raises(RuntimeFault) as err:
        program_loss(prog, None)
    assert "t.dl:4:10" in str(err.value)
    assert "index [3] is out of range for an array of shape [3]" in str(err.value)


def test_while_loop_with_data_dependent_trip_count():
    src = "data h\nparam g = 9.81\nt = 0.0\nn = 0\nwhile h - 0.5 * g * t^2 > 0.0 {\n t += 0.01\n n += 1\n}\noutput steps = n\nloss t\n"
    prog = compile_source(src, "t.dl")
    for h in (1.0, 5.0, 20.0):
        loss, outs = run_row(prog, {"h": h}, {"g": 9.81})
        t, n = 0.0, 0
        while h - 0.5 * 9.81 * t**2 > 0.0:
            t += 0.01
            n += 1
        assert loss == t and outs["steps"] == n


def test_arrays_have_value_semantics():
    src = "v = zeros(2)\nw = v\nv[0] = 3.0\nloss w[0] + 10.0 * v[0]\n"
    assert loss_of(src) == 30.0


def test_matmul_shapes_and_values():
    src = """
param A[2, 3] = 0.5
x = zeros(3)
x[0] = 1.0; x[1] = 2.0; x[2] = 3.0
y = A @ x
B = zeros(3, 2)
B[0, 1] = 1.0
C = A @ B
z = x @ B
loss sum(y) + sum(C) + sum(z) + x @ x
"""
    prog = compile_source(src, "t.dl")
    A = np.full((2, 3), 0.5)
    x = np.array([1.0, 2.0, 3.0])
    B = np.zeros((3, 2))
    B[0, 1] = 1.0
    expected = (A @ x).sum() + (A @ B).sum() + (x @ B).sum() + x @ x
    assert program_loss(prog, None) == pytest.approx(expected, rel=1e-15)


def test_partial_index_reads_and_writes_rows():
    src = "W = zeros(2, 3)\nr = zeros(3)\nr[1] = 2.0\nW[1] = r\nq = W[1]\nloss q[1] + W[1, 1] + sum(W[0])\n"
    assert loss_of(src) == 4.0


def test_functions_are_inlined_with_array_arguments():
    src = "fn sq(v) {\n  return v * v\n}\nfn total(v) {\n  return sum(sq(v)) + sq(2.0)\n}\nx = zeros(2) + 3.0\nloss total(x)\n"
    prog = compile_source(src, "t.dl")
    assert not any(s.op == "call" for s in ir.walk(prog.body) if isinstance(s, ir.Eqn))
    assert program_loss(prog, None) == 22.0


def test_const_override_changes_the_program():
    src = "const n = 3\nconst step = 0.5\ns = 0.0\nfor i in 0..n {\n s += step\n}\nloss s\n"
    assert loss_of(src) == 1.5
    assert loss_of(src, n=10) == 5.0
    assert loss_of(src, step=2) == 6.0


def test_random_param_init_is_seeded_and_independent_of_other_params():
    one = compile_source("param v[4] ~ normal(1.0, 0.5)\nloss sum(v)\n", "t.dl")
    two = compile_source("param a = 0.0\nparam v[4] ~ normal(1.0, 0.5)\nparam u[3] ~ uniform(-1.0, 1.0)\nloss sum(v)\n", "t.dl")
    v1, v2 = initial_params(one)["v"], initial_params(two)["v"]
    assert np.array_equal(v1, v2)
    assert not np.array_equal(v1, initial_params(one, seed=1)["v"])
    u = initial_params(two)["u"]
    assert u.shape == (3,) and np.all((u >= -1.0) & (u <= 1.0))


def test_loss_accumulates_over_statements_loops_and_branches():
    src = "data x\nloss x\nfor i in 0..3 {\n  loss 1.0\n  if i == 1 {\n    loss 10.0\n  }\n}\n"
    prog = compile_source(src, "t.dl")
    assert run_row(prog, {"x": 0.5}, {})[0] == 0.5 + 3.0 + 10.0
    assert program_loss(prog, [{"x": 1.0}, {"x": 3.0}]) == 13.0 + 2.0


def test_dead_code_is_removed_from_the_adjoint_program():
    from dlang.passes import eliminate_dead_code
    from dlang.reverse import reverse_ad

    src = "param a = 1.0\nunused = sin(a) * 3.0\nshown = cos(a)\noutput shown = shown\nloss a * a\n"
    adjoint = eliminate_dead_code(reverse_ad(compile_source(src, "dead.dl")))
    verify(adjoint)
    ops = [s.op for s in ir.walk(adjoint.body) if isinstance(s, ir.Eqn)]
    assert "sin" not in ops and "cos" not in ops  # neither reaches the loss or the gradient
    assert parse_program(print_program(adjoint)) == adjoint
