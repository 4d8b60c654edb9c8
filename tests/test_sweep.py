"""Where the reverse sweep starts is part of the IR (a `sweep` statement), not a count of the
primal's equations: with an `output` (whose equations dead-code elimination drops from the
adjoint) the tape is still checked before the reverse sweep reads it, its size is measured,
the `# grad of:` comments are there, and a non-finite derivative is reported as one."""
from __future__ import annotations

import re

import numpy as np
import pytest

from dlang.frontend import compile_source
from dlang.ir import Eqn, walk
from dlang.pipeline import compile_kernels, kernel_ir, kernel_source
from dlang.reverse import reverse_ad

from test_ad import assert_grads_close, richardson_fd

GROWING = """
data n, x
param r = 0.999
param c = 0.001
shown = x * r + 3.0 * c           # only an output reads these
shown2 = sin(shown) * cos(shown)
v = x
k = 0.0
while k < n {
    v = v * r + c * sin(v)
    k += 1.0
}
output seen = shown2
loss v^2
"""

ROWS = np.array([[0.0, 1.0], [10.0, 0.5], [3000.0, -1.2], [2.0, 0.3], [9000.0, 2.0], [7.0, -0.4]])


def test_the_adjoint_has_one_sweep_at_the_top_level_after_dead_code_is_gone():
    prog = compile_source(GROWING, "grow.dl")
    adjoint = kernel_ir(prog).adjoint
    top = [k for k, s in enumerate(adjoint.body.eqns) if isinstance(s, Eqn) and s.op == "sweep"]
    nested = [s for s in walk(adjoint.body) if isinstance(s, Eqn) and s.op == "sweep"]
    assert len(top) == 1 and len(nested) == 1
    assert not any(s.loc and s.loc[0] in (5, 6) for s in walk(adjoint.body))  # the output's work is gone
    pushes = [k for k, s in enumerate(adjoint.body.eqns) if any(
        isinstance(e, Eqn) and e.op == "push" for e in walk(type(adjoint.body)((), (s,), ())))]
    assert pushes and max(pushes) < top[0]  # every push is before the sweep, every pop after


def test_a_growing_tape_with_an_output_gives_the_right_gradient():
    """The rows' tapes outgrow each other: the row is run again with a larger tape before its
    reverse sweep (with an output, the check was placed after the sweep, on a bad tape)."""
    kernels = compile_kernels(compile_source(GROWING, "grow.dl"))
    params = {"r": 0.999, "c": 0.001}
    loss, grads = kernels.grad(ROWS, params)
    assert loss == pytest.approx(kernels.loss(ROWS, params), rel=1e-13)
    assert_grads_close(grads, richardson_fd(lambda q: kernels.loss(ROWS, q), params, step=1e-6),
                       rel=1e-6, what="growing tape with an output")


def test_tape_bytes_are_measured_with_an_output():
    with_output = compile_kernels(compile_source(GROWING, "grow.dl"))
    without = compile_kernels(compile_source(GROWING.replace("output seen = shown2\n", ""), "grow.dl"))
    params = {"r": 0.999, "c": 0.001}
    a = with_output.gradient(ROWS, params).tape_bytes_per_row
    b = without.gradient(ROWS, params).tape_bytes_per_row
    assert a == b > 0  # the same tape; 0 bytes were reported with the output
    # two floats (v and sin's input are recomputed or taped) per trip: at least 8 bytes a trip
    assert a >= 8 * ROWS[:, 0].sum() / len(ROWS)


def test_grad_of_comments_are_there_with_an_output():
    source = kernel_source(compile_source(GROWING, "grow.dl"))
    grad = source[source.index("def dl_grad("):]
    assert grad.index("# ---- reverse sweep") < grad.index("# grad of:")
    assert re.search(r"# grad of: .*\(line 10\)", grad)


def test_a_non_finite_derivative_is_reported_as_one_with_an_output(run_cli, tmp_path):
    prog = tmp_path / "sqrt0.dl"
    prog.write_text("data x\nparam a = 0.0\nparam b = 1.0\nr = sqrt(a * a * x)\n"  # an output of several
                    "output o = 2.0 * r + 3.0 * r * r + sin(r) * cos(r) + exp(r)\n"  # equations: was "`/` gave inf"
                    "loss (r - 1.0)^2 + b * b\n")
    csv = tmp_path / "d.csv"
    csv.write_text("x\n1\n2\n")
    r = run_cli("grad", prog, "--data", csv)
    assert r.code == 1
    assert "appeared in the derivative of `sqrt` at line 4, in the reverse pass (data row 1)" in r.err, r.err
    assert "forward pass" not in r.err


def test_bench_reports_the_tape_of_a_program_with_an_output(run_cli, tmp_path):
    import json

    prog = tmp_path / "grow.dl"
    prog.write_text(GROWING)
    csv = tmp_path / "d.csv"
    csv.write_text("n,x\n" + "\n".join(f"{n:g},{x:g}" for n, x in ROWS) + "\n")
    r = run_cli("bench", prog, "--data", csv, "--repeat", "1", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["tape_bytes_per_row"] > 8 * 1000
