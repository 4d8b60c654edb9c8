"""Forward mode and second order (dlang/forward.py, dlang/derivatives.py): on every program in
programs/, the gradient by forward mode equals reverse mode's and central differences; the
Hessian (forward over reverse) is symmetric and equals central differences of the gradient,
through while loops with trip counts per row, nested loops, ifs in loops and 2-D @; Hessian-
vector products equal the Hessian times the direction; the Jacobian of each row's loss and
outputs agrees with the gradient and with central differences; and the commands
(`grad --mode`, `hessian`, `emit --stage jvp`, `bench`) with their error paths."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlang import derivatives as D
from dlang.data import load_data
from dlang.forward import forward_gradient_program, hvp_program, jvp_program
from dlang.frontend import compile_source

from conftest import load_program
from dlang.ir import Eqn, initial_params, walk
from dlang.irtext import parse_program, print_program
from dlang.pipeline import compile_kernels
from dlang.verify import verify

from conftest import PROGRAMS
from test_ad import assert_grads_close, richardson_fd
from test_second_order import NESTED, WHILE_PER_ROW

GALLERY = sorted(PROGRAMS.glob("*.dl"))
ROWS = 40  # of each program's data: enough for every branch, quick to compile and run


def _setup(path):
    prog = load_program(str(path))
    csv = PROGRAMS / "data" / f"{path.stem}.csv"
    data = load_data(prog, str(csv) if prog.data else None)[:ROWS]
    params = initial_params(prog, seed=3)
    return prog, compile_kernels(prog), data, params


def _direction(params, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(size=np.shape(v)) if np.ndim(v) else float(rng.normal())) for k, v in params.items()}


def _special(source, name, data):
    prog = compile_source(source, name)
    return prog, compile_kernels(prog), np.asarray(data, float), initial_params(prog, seed=3)


SPECIAL = {
    "while_per_row": lambda: _special(WHILE_PER_ROW, "while.dl",
                                      [[0.0, 1.0], [3.0, 0.5], [7.0, -1.2], [12.0, 2.0], [1.0, 0.3]]),
    "nested_loops_ifs_2d_matmul": lambda: _special(NESTED, "nested.dl", [[0.4], [-0.3], [1.2]]),
}
CASES = [(p.stem, p) for p in GALLERY] + [(name, None) for name in SPECIAL]


@pytest.fixture(scope="module", autouse=True)
def _fewer_directions_per_pass():
    """Half the directions per pass a long program gets (Numba compiles the derived kernels of
    each program here once, cold: compile time is most of this file's time). K > 1 is still
    exercised by most programs, and by test_a_pass_carries_several_directions."""
    saved = D.STATEMENTS
    D.STATEMENTS = 300
    yield
    D.STATEMENTS = saved


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    name, path = request.param
    return SPECIAL[name]() if path is None else _setup(path)


def test_derived_programs_verify_and_print_back(case):
    prog = case[0]
    for derived in (jvp_program(prog, 2), forward_gradient_program(prog, 3), hvp_program(prog, 2)):
        verify(derived)
        assert parse_program(print_program(derived)) == derived


def test_forward_mode_gradient_equals_reverse_mode_and_finite_differences(case):
    prog, kernels, data, params = case
    loss, reverse = kernels.grad(data, params)
    fwd_loss, forward = D.forward_gradient(kernels, data, params)
    assert fwd_loss == pytest.approx(loss, rel=1e-13)
    assert_grads_close(forward, reverse, rel=1e-12, what="forward vs reverse")
    fd = richardson_fd(lambda q: kernels.loss(data, q), params)
    assert_grads_close(forward, fd, rel=1e-6, what="forward mode vs finite differences")


def test_hessian_is_symmetric_and_matches_central_differences_of_the_gradient(case):
    prog, kernels, data, params = case
    loss, grads, h, names = D.hessian(kernels, data, params)
    total = D.entries(prog)
    assert h.shape == (total, total) and len(names) == total
    assert loss == pytest.approx(kernels.loss(data, params), rel=1e-12)
    assert_grads_close(grads, kernels.grad(data, params)[1], rel=1e-12, what="the Hessian's gradient")
    scale = max(1e-12, float(np.max(np.abs(h))))
    assert float(np.max(np.abs(h - h.T))) / scale <= 1e-10, "the Hessian is not symmetric"
    x = D.flatten(prog, params)
    fd = np.zeros_like(h)
    for j in range(total):
        step = 1e-5 * max(1.0, abs(x[j]))
        e = np.zeros(total)
        e[j] = step
        plus = D.flatten(prog, kernels.grad(data, D.unflatten(prog, x + e))[1])
        minus = D.flatten(prog, kernels.grad(data, D.unflatten(prog, x - e))[1])
        fd[:, j] = (plus - minus) / (2 * step)
    err = float(np.max(np.abs(h - fd))) / max(scale, float(np.max(np.abs(fd))))
    assert err <= 1e-5, f"Hessian vs central differences of the gradient: relative error {err:.2e}"
    # H v equals the Hessian times v, for two directions in one pass
    dirs = [_direction(params, 1), _direction(params, 2)]
    loss_v, grads_v, products = D.hvp(kernels, data, params, dirs)
    assert loss_v == pytest.approx(loss, rel=1e-13)
    for d, product in zip(dirs, products):
        want = h @ D.flatten(prog, d)
        got = D.flatten(prog, product)
        assert float(np.max(np.abs(got - want))) <= 1e-10 * max(1e-12, float(np.max(np.abs(want)))), (got, want)


def test_jacobian_of_each_rows_loss_and_outputs(case):
    prog, kernels, data, params = case
    jac = D.jacobian(kernels, data, params)
    n = data.shape[0]
    total = D.entries(prog)
    assert jac.d_losses.shape == (n, total) and jac.d_outputs.shape[::2] == (n, total)
    assert jac.names == D.entry_names(prog)
    grads = D.flatten(prog, kernels.grad(data, params)[1])
    np.testing.assert_allclose(jac.d_losses.mean(axis=0), grads, rtol=1e-11, atol=1e-13)
    if jac.outputs.shape[1]:  # each output column against central differences of forward_rows
        x = D.flatten(prog, params)
        for j in range(total):
            step = 1e-6 * max(1.0, abs(x[j]))
            e = np.zeros(total)
            e[j] = step
            plus = kernels.forward_rows(data, D.unflatten(prog, x + e))[1]
            minus = kernels.forward_rows(data, D.unflatten(prog, x - e))[1]
            fd = (plus - minus) / (2 * step)
            scale = max(1e-8, float(np.max(np.abs(fd))))
            err = float(np.max(np.abs(jac.d_outputs[:, :, j] - fd))) / scale
            assert err <= 1e-5, (jac.names[j], err)


def test_a_pass_carries_several_directions_and_their_tapes_pair_up():
    """Forward over reverse pushes each taped value's tangents after it, one id each, and pops
    them first: the verifier checks the pairing; a Hessian of a program with a while loop per
    row in K = 1 and K = 2 passes agrees."""
    prog = compile_source(WHILE_PER_ROW, "while.dl")
    second = hvp_program(prog, 2)
    ops = [e for e in walk(second.body) if isinstance(e, Eqn) and e.op in ("push", "pop")]
    first = hvp_program(prog, 1)
    first_ops = [e for e in walk(first.body) if isinstance(e, Eqn) and e.op in ("push", "pop")]
    assert len(ops) > len(first_ops) > 0
    kernels = compile_kernels(prog)
    data = np.array([[0.0, 1.0], [3.0, 0.5], [7.0, -1.2]])
    params = {"r": 0.9, "c": 0.3}
    dirs = [_direction(params, 4), _direction(params, 5)]
    _, _, both = D.hvp(kernels, data, params, dirs)
    for d, product in zip(dirs, both):
        _, _, (alone,) = D.hvp(kernels, data, params, [d])
        for k in params:
            assert product[k] == pytest.approx(alone[k], rel=1e-12)


def test_directions_per_pass_shrink_for_a_long_program():
    prog, kernels, data, params = _setup(PROGRAMS / "builtins_tour.dl")
    assert D.directions_for(kernels) < min(D.entries(prog), D.DIRECTIONS)
    prog, kernels, data, params = _setup(PROGRAMS / "projectile.dl")
    assert D.directions_for(kernels) == D.entries(prog) == 2


def test_entry_names_are_declaration_order_and_row_major():
    prog = load_program(str(PROGRAMS / "mlp.dl"))
    names = D.entry_names(prog)
    assert names[:4] == ["W1[0,0]", "W1[0,1]", "W1[0,2]", "W1[1,0]"] and names[-1] == "b2"
    params = initial_params(prog, seed=1)
    back = D.unflatten(prog, D.flatten(prog, params))
    for k, v in params.items():
        np.testing.assert_array_equal(back[k], v)


# ---- the commands ---------------------------------------------------------------------------------

PROJECTILE = PROGRAMS / "projectile.dl"
PROJECTILE_CSV = PROGRAMS / "data" / "projectile.csv"
MLP = PROGRAMS / "mlp.dl"
MLP_CSV = PROGRAMS / "data" / "mlp.csv"


def test_grad_mode_forward_prints_the_same_table_and_json(run_cli):
    rev = run_cli("grad", PROJECTILE, "--data", PROJECTILE_CSV, "--json")
    fwd = run_cli("grad", PROJECTILE, "--data", PROJECTILE_CSV, "--json", "--mode", "forward")
    assert rev.code == fwd.code == 0, fwd.err
    a, b = json.loads(rev.out), json.loads(fwd.out)
    assert a.keys() == b.keys() and a["grad"].keys() == b["grad"].keys()
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-13)
    for k in a["grad"]:
        assert b["grad"][k] == pytest.approx(a["grad"][k], rel=1e-12)
    table = run_cli("grad", MLP, "--data", MLP_CSV, "--mode", "forward", "--check")
    assert table.code == 0 and "gradient check passed" in table.out and "W1" in table.out


def test_grad_mode_must_be_forward_or_reverse(run_cli):
    r = run_cli("grad", PROJECTILE, "--data", PROJECTILE_CSV, "--mode", "sideways")
    assert r.code == 1 and "sideways" in r.err and "Traceback" not in r.err


def test_hessian_json_is_one_object_with_names_in_declaration_order(run_cli):
    r = run_cli("hessian", MLP, "--data", MLP_CSV, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert set(out) == {"loss", "grad", "names", "hessian"}
    prog = load_program(str(MLP))
    assert out["names"] == D.entry_names(prog)
    h = np.array(out["hessian"])
    assert h.shape == (21, 21)
    np.testing.assert_allclose(h, h.T, rtol=0, atol=1e-10 * np.max(np.abs(h)))
    g = json.loads(run_cli("grad", MLP, "--data", MLP_CSV, "--json").out)
    assert out["loss"] == pytest.approx(g["loss"], rel=1e-13)
    np.testing.assert_allclose(out["grad"]["W1"], g["grad"]["W1"], rtol=1e-12)


def test_hessian_direction_gives_the_product_and_check_compares_with_differences(run_cli, tmp_path):
    direction = tmp_path / "v.json"
    direction.write_text(json.dumps({"W1": [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], "b2": 0.5}))
    r = run_cli("hessian", MLP, "--data", MLP_CSV, "--direction", direction, "--json", "--check")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert set(out) == {"loss", "grad", "hvp", "check"} and out["check"]["passed"]
    full = json.loads(run_cli("hessian", MLP, "--data", MLP_CSV, "--json").out)
    prog = load_program(str(MLP))
    v = D.flatten(prog, {"W1": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], float),
                         "b1": np.zeros(4), "w2": np.zeros(4), "b2": 0.5})
    want = np.array(full["hessian"]) @ v
    got = D.flatten(prog, {k: np.array(val) if isinstance(val, list) else val for k, val in out["hvp"].items()})
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    table = run_cli("hessian", PROJECTILE, "--data", PROJECTILE_CSV, "--check")
    assert table.code == 0 and "Hessian check passed" in table.out and "eigenvalues" in table.out


def test_hessian_check_fails_on_a_wrong_second_derivative(run_cli, monkeypatch):
    """A JVP rule made wrong (sin's derivative as sin) is caught by --check: exit 1."""
    from dataclasses import replace

    from dlang import prims

    def wrong(b, e, tangents):
        return b.mul(tangents[0], b.op("sin", e.ins[0]))

    monkeypatch.setitem(prims.REGISTRY, "sin", replace(prims.REGISTRY["sin"], jvp=wrong))
    r = run_cli("hessian", PROJECTILE, "--data", PROJECTILE_CSV, "--check", "--const", "steps=399")
    assert r.code == 1 and "Hessian check FAILED" in r.out


def test_hessian_error_paths(run_cli, write_program, tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"W1": 3}')
    r = run_cli("hessian", MLP, "--data", MLP_CSV, "--direction", bad)
    assert r.code == 1 and "should be an array of shape [4, 3]" in r.err and "Traceback" not in r.err
    r = run_cli("hessian", MLP, "--data", MLP_CSV, "--direction", tmp_path / "missing.json")
    assert r.code == 1 and "no such file" in r.err
    no_loss = write_program("param a = 1.0\noutput y = a\n")
    r = run_cli("hessian", no_loss)
    assert r.code == 1 and "no loss statement" in r.err
    from dlang import commands

    monkeypatch.setattr(commands, "HESSIAN_MAX_ENTRIES", 10)
    r = run_cli("hessian", MLP, "--data", MLP_CSV)
    assert r.code == 1 and "21 param entries" in r.err and "--direction" in r.err


def test_emit_stage_jvp_shows_the_tangent_ir(run_cli):
    r = run_cli("emit", PROJECTILE, "--stage", "jvp")
    assert r.code == 0
    assert "param dot1_drag" in r.out and "output dot1_loss" in r.out
    assert parse_program(r.out) == jvp_program(load_program(str(PROJECTILE)), 1)


def test_bench_reports_jvp_and_hvp_times(run_cli):
    r = run_cli("bench", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--json",
                "--repeat", "1")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["jvp_ms"] > 0 and out["hvp_ms"] > 0 and out["grad_ms"] > 0
